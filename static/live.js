// Live pages: when libvirt reports a VM change (from virtdeck or from virsh), fetch the
// page again and swap in its parts marked data-live. Forms outside those parts keep
// what the admin is typing.
const scope = document.querySelector('[data-live-vm]')?.dataset.liveVm;
let pending;

async function refresh() {
  const res = await fetch(location.href, { credentials: 'same-origin', headers: { accept: 'text/html' } });
  if (!res.ok) return;
  const doc = new DOMParser().parseFromString(await res.text(), 'text/html');
  for (const el of document.querySelectorAll('[data-live][id]')) {
    const fresh = doc.getElementById(el.id);
    if (!fresh) continue;
    // Rows ticked for a bulk action stay ticked.
    const kept = new Set([...el.querySelectorAll('input[data-keep]:checked')].map((i) => i.value));
    const node = document.importNode(fresh, true);
    for (const i of node.querySelectorAll('input[data-keep]')) i.checked = kept.has(i.value);
    el.replaceWith(node);
  }
  document.body.dataset.liveRefreshed = String(Date.now());
  timers();
}

function schedule() {
  clearTimeout(pending);
  pending = setTimeout(refresh, 250);
}

// Parts that appear or disappear at a given time (e.g. the force-off offer).
function timers() {
  const now = Date.now() / 1000;
  for (const el of document.querySelectorAll('[data-reveal-at]')) {
    const wait = Number(el.dataset.revealAt) - now;
    if (wait <= 0) el.hidden = false;
    else setTimeout(() => { el.hidden = false; }, wait * 1000);
  }
  for (const el of document.querySelectorAll('[data-hide-at]')) {
    const wait = Number(el.dataset.hideAt) - now;
    if (wait <= 0) el.hidden = true;
    else setTimeout(() => { el.hidden = true; }, wait * 1000);
  }
}

const events = new EventSource('/events');
events.addEventListener('open', () => { document.body.dataset.live = 'on'; });
events.addEventListener('vm', (ev) => {
  const e = JSON.parse(ev.data);
  if (scope && e.vm !== scope) return;
  schedule();
});
events.addEventListener('resync', schedule);
timers();
