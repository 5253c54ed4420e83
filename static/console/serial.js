// The serial console: xterm.js over virtdeck's websocket (libvirt console stream).
import { cfg, keepConnected, setStatus } from './common.js';

// xterm.js sizes and colours its rows with <style> elements; the page's CSP admits
// them only with this response's nonce.
const createElement = document.createElement.bind(document);
document.createElement = function (tag, options) {
  const el = createElement(tag, options);
  if (String(tag).toLowerCase() === 'style') el.nonce = cfg.styleNonce;
  return el;
};
const { Terminal } = await import('/static/vendor/xterm/xterm.mjs');
const { FitAddon } = await import('/static/vendor/xterm/addon-fit.mjs');

const screen = document.getElementById('console-screen');
const term = new Terminal({ scrollback: 10000, convertEol: false, cursorBlink: true, fontSize: 14 });
const fit = new FitAddon();
term.loadAddon(fit);
term.open(screen);
fit.fit();
new ResizeObserver(() => { try { fit.fit(); } catch (_) { /* hidden */ } }).observe(screen);
window.virtdeckTerminal = term; // for tests and the curious

const encoder = new TextEncoder();
let ws = null;
term.onData((data) => { if (ws && ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(data)); });

function connect(url) {
  return new Promise((resolve) => {
    ws = new WebSocket(url, ['binary']);
    ws.binaryType = 'arraybuffer';
    ws.addEventListener('open', () => {
      setStatus('connected', 'Connected');
      term.focus();
      term.write('\x1b[2m[connected to the serial console of ' + cfg.vm + ': press Enter for a prompt]\x1b[0m\r\n');
    });
    ws.addEventListener('message', (e) => {
      term.write(typeof e.data === 'string' ? e.data : new Uint8Array(e.data));
    });
    ws.addEventListener('close', (e) => {
      ws = null;
      term.write('\r\n\x1b[33m[' + (e.reason || 'disconnected') + ']\x1b[0m\r\n');
      resolve({ code: e.code, reason: e.reason });
    });
  });
}

const takeover = document.getElementById('serial-takeover');
const session = keepConnected(connect, { onBusy: (busy) => { takeover.hidden = !busy; } });
takeover.addEventListener('click', () => session.takeOver());
window.addEventListener('virtdeck:popped-out', () => {
  session.stop();
  if (ws) ws.close();
  setStatus('taken', 'Opened in its own window.');
});
