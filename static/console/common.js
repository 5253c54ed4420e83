// Shared by the VNC and serial console pages: tickets, status, full screen, pop-out,
// reconnecting after a VM restart. Plain ES module, no build step.

export const root = document.getElementById('console');
export const cfg = {
  kind: root.dataset.kind,
  vm: root.dataset.vm,
  ticketUrl: root.dataset.ticketUrl,
  csrf: root.dataset.csrf,
  viewOnly: root.dataset.viewOnly === 'true',
  styleNonce: root.dataset.styleNonce,
};
const statusEl = document.getElementById('console-status');
const reconnectBtn = document.getElementById('console-reconnect');

// Close codes from virtdeck's proxy (src/console/proxy.rs).
export const CLOSE = { VM_GONE: 4001, TAKEN_OVER: 4002, IDLE: 4003, REFUSED: 4004 };

export function setStatus(state, text) {
  statusEl.dataset.state = state;
  statusEl.textContent = text;
  reconnectBtn.hidden = !(state === 'error' || state === 'taken' || state === 'idle');
}

/** Mints a ticket (POST with the CSRF token); returns {ok, status, body}. */
export async function mintTicket(force = false) {
  const r = await fetch(cfg.ticketUrl, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'X-CSRF-Token': cfg.csrf, 'Content-Type': 'application/json' },
    body: JSON.stringify({ force }),
  });
  let body = {};
  try { body = await r.json(); } catch (_) { /* not JSON */ }
  return { ok: r.ok, status: r.status, body };
}

/** The absolute ws:// or wss:// URL for a path on this origin. */
export function wsUrl(path) {
  const u = new URL(path, window.location.href);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  return u.toString();
}

/**
 * Keeps a console connected: mints a ticket, calls connect(url) which must return a
 * promise resolving to the close event, and retries while the VM is off or restarting.
 */
export function keepConnected(connect, { onBusy } = {}) {
  let stopped = false;
  let force = false;
  let timer = null;
  async function attempt() {
    if (stopped) return;
    clearTimeout(timer);
    setStatus('connecting', 'Connecting…');
    let t;
    try {
      t = await mintTicket(force);
    } catch (e) {
      setStatus('error', 'virtdeck cannot be reached; retrying…');
      timer = setTimeout(attempt, 3000);
      return;
    }
    force = false;
    if (!t.ok) {
      const msg = (t.body.error && t.body.error.message) || `Refused (${t.status}).`;
      if (t.status === 401) { setStatus('error', 'Your session has ended: sign in again.'); return; }
      if (t.status === 409 && t.body.error && t.body.error.field === 'force') {
        setStatus('taken', msg);
        if (onBusy) onBusy(true);
        return;
      }
      if (t.status === 409 || t.status === 502 || t.status === 503) {
        // Off, restarting, or full: show why and try again shortly.
        setStatus(/is (shut off|crashed|suspended|shutting down)|not running/.test(msg) ? 'off' : 'error', msg + ' Retrying…');
        timer = setTimeout(attempt, 3000);
        return;
      }
      setStatus('error', msg);
      return;
    }
    if (onBusy) onBusy(false);
    const ev = await connect(wsUrl(t.body.websocket), t.body);
    if (stopped) return;
    if (ev.code === CLOSE.TAKEN_OVER) {
      setStatus('taken', ev.reason || 'Someone else took this console over.');
      if (onBusy) onBusy(true);
      return;
    }
    if (ev.code === CLOSE.IDLE) { setStatus('idle', ev.reason); return; }
    if (ev.code === CLOSE.REFUSED) { setStatus('error', ev.reason); return; }
    // The VM went away (reboot, shutdown) or the connection dropped: try again.
    setStatus('off', (ev.reason || 'Disconnected.') + ' Reconnecting…');
    timer = setTimeout(attempt, 1500);
  }
  reconnectBtn.addEventListener('click', () => attempt());
  attempt();
  return {
    takeOver() { force = true; attempt(); },
    stop() { stopped = true; clearTimeout(timer); },
  };
}

// Full screen and pop-out.
document.getElementById('console-fullscreen').addEventListener('click', () => {
  if (document.fullscreenElement) document.exitFullscreen();
  else root.requestFullscreen().catch(() => setStatus('error', 'The browser refused full screen.'));
});
const params = new URLSearchParams(window.location.search);
if (params.get('popout') === '1') document.body.classList.add('popout');
document.getElementById('console-popout').addEventListener('click', () => {
  const u = new URL(window.location.href);
  u.searchParams.set('popout', '1');
  // Let go of the console here first, so the new window finds it free.
  window.dispatchEvent(new Event('virtdeck:popped-out'));
  window.open(u.toString(), `virtdeck-${cfg.kind}-${cfg.vm}`, 'popup,width=1060,height=820');
});
