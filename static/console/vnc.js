// The graphical console: noVNC over virtdeck's websocket.
import RFB from '/static/vendor/novnc/core/rfb.js';
import { cfg, keepConnected, setStatus } from './common.js';

const screen = document.getElementById('console-screen');
const scaleBox = document.getElementById('vnc-scale');
let rfb = null;

// X11 keysyms.
const XK = {
  Control_L: 0xffe3, Alt_L: 0xffe9, Delete: 0xffff, Print: 0xff61,
  F: (n) => 0xffbe + n - 1,
};

function connect(url) {
  return new Promise((resolve) => {
    screen.replaceChildren();
    // Our own socket, so that virtdeck's close code and reason can be shown.
    const sock = new WebSocket(url, ['binary']);
    sock.binaryType = 'arraybuffer';
    let lastClose = null;
    sock.addEventListener('close', (e) => { lastClose = { code: e.code, reason: e.reason }; });
    rfb = new RFB(screen, sock, { shared: true });
    rfb.viewOnly = cfg.viewOnly;
    rfb.scaleViewport = scaleBox.checked;
    rfb.resizeSession = false;
    rfb.background = '#111';
    rfb.addEventListener('connect', () => {
      setStatus('connected', cfg.viewOnly ? 'Connected (view only)' : 'Connected');
      rfb.focus();
    });
    rfb.addEventListener('disconnect', () => {
      rfb = null;
      resolve(lastClose || { code: 1006, reason: 'The connection was lost.' });
    });
    rfb.addEventListener('securityfailure', (e) => setStatus('error', `VNC security failure: ${e.detail.reason || e.detail.status}`));
  });
}

scaleBox.addEventListener('change', () => { if (rfb) rfb.scaleViewport = scaleBox.checked; });

function combo(keys) {
  if (!rfb) return;
  for (const k of keys) rfb.sendKey(k, null, true);
  for (const k of [...keys].reverse()) rfb.sendKey(k, null, false);
}

const sendKey = document.getElementById('vnc-sendkey');
if (sendKey) {
  sendKey.addEventListener('change', () => {
    const v = sendKey.value;
    sendKey.value = '';
    if (!rfb || !v) return;
    if (v === 'ctrl-alt-del') rfb.sendCtrlAltDel();
    else if (v === 'print') combo([XK.Print]);
    else combo([XK.Control_L, XK.Alt_L, XK.F(Number(v.replace('ctrl-alt-f', '')))]);
    rfb.focus();
  });
}

// Paste: type the local clipboard into the guest as keystrokes.
const pasteBtn = document.getElementById('vnc-paste');
const pasteBox = document.getElementById('paste-box');
const pasteText = document.getElementById('paste-text');
// Characters typed with Shift on a US keyboard.
const SHIFTED = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ~!@#$%^&*()_+{}|:"<>?';
function typeText(text) {
  if (!rfb) return;
  for (const ch of text.replace(/\r\n/g, '\n')) {
    const cp = ch.codePointAt(0);
    let keysym;
    if (ch === '\n') keysym = 0xff0d; // Return
    else if (ch === '\t') keysym = 0xff09; // Tab
    else if (cp >= 0x20 && cp <= 0x7e) keysym = cp; // Latin-1 keysyms equal their code points
    else if (cp >= 0xa0 && cp <= 0xff) keysym = cp;
    else keysym = 0x01000000 + cp; // Unicode keysym
    // The VNC server maps keysyms to keys of a US keyboard and does not add Shift by
    // itself: hold it for the characters that need it there, as a typist would.
    const shifted = SHIFTED.includes(ch);
    if (shifted) rfb.sendKey(0xffe1, null, true); // Shift_L
    rfb.sendKey(keysym, null, true);
    rfb.sendKey(keysym, null, false);
    if (shifted) rfb.sendKey(0xffe1, null, false);
  }
  rfb.focus();
}
if (pasteBtn) {
  pasteBtn.addEventListener('click', async () => {
    try {
      const text = await navigator.clipboard.readText();
      if (text) { typeText(text); return; }
    } catch (_) { /* no permission: fall back to a text box */ }
    pasteBox.hidden = false;
    pasteText.focus();
  });
  document.getElementById('paste-send').addEventListener('click', () => {
    typeText(pasteText.value);
    pasteText.value = '';
    pasteBox.hidden = true;
  });
  document.getElementById('paste-cancel').addEventListener('click', () => { pasteBox.hidden = true; });
}

const session = keepConnected(connect);
window.addEventListener('virtdeck:popped-out', () => {
  session.stop();
  if (rfb) rfb.disconnect();
  setStatus('taken', 'Opened in its own window.');
});
