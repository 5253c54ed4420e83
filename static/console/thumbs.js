// The VM list: small pictures of running VMs' screens, refreshed every 10 s. The server
// answers from a cache (never waiting for libvirt); a VM without a picture shows none.
// Rows replaced by live updates get their pictures too.
const REFRESH_MS = 10000;

function load(img) {
  img.src = `${img.dataset.src}?t=${Date.now()}`;
}

function bind(img) {
  if (img.dataset.bound) return false;
  img.dataset.bound = '1';
  img.addEventListener('load', () => { img.hidden = false; });
  img.addEventListener('error', () => { img.hidden = true; });
  load(img);
  return true;
}

const thumbs = () => document.querySelectorAll('img.thumb[data-src]');

function refresh() {
  if (document.hidden) return;
  for (const img of thumbs()) if (!bind(img)) load(img);
}

new MutationObserver(() => { for (const img of thumbs()) bind(img); })
  .observe(document.body, { childList: true, subtree: true });
refresh();
// The first request starts a screenshot in the background: ask again soon.
setTimeout(refresh, 1500);
setInterval(refresh, REFRESH_MS);
