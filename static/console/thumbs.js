// The VM list: small pictures of running VMs' screens, for the rows on screen only,
// refreshed every 10 s while visible. The server answers from a cache (never waiting for
// libvirt): the first request for a VM starts a screenshot, so a VM without a picture
// yet is asked again once, 1.5 s later. Rows replaced by live updates get theirs too.
const REFRESH_MS = 10000;
const RETRY_MS = 1500;
const visible = new Set();

function load(img) {
  img.src = `${img.dataset.src}?t=${Date.now()}`;
}

const imgOf = new WeakMap();

const seen = new IntersectionObserver((entries) => {
  for (const e of entries) {
    const img = imgOf.get(e.target);
    if (!img) continue;
    if (!e.isIntersecting) { visible.delete(img); continue; }
    visible.add(img);
    if (img.dataset.asked) continue;
    img.dataset.asked = '1';
    load(img);
    setTimeout(() => { if (img.hidden && img.isConnected) load(img); }, RETRY_MS);
  }
});

function bind(img) {
  if (img.dataset.bound) return;
  img.dataset.bound = '1';
  img.addEventListener('load', () => { img.hidden = false; });
  img.addEventListener('error', () => { img.hidden = true; });
  // A hidden image has no box: watch its cell.
  const cell = img.closest('td') || img.parentElement;
  imgOf.set(cell, img);
  seen.observe(cell);
}

const thumbs = () => document.querySelectorAll('img.thumb[data-src]');
const bindAll = () => { for (const img of thumbs()) bind(img); };

new MutationObserver(bindAll).observe(document.body, { childList: true, subtree: true });
bindAll();
setInterval(() => {
  if (document.hidden) return;
  for (const img of visible) if (img.isConnected) load(img); else visible.delete(img);
}, REFRESH_MS);
