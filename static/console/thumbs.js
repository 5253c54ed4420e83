// The VM list: small pictures of running VMs' screens, refreshed every 10 s. The server
// answers from a cache (never waiting for libvirt); a VM without a picture shows none.
// Rows replaced by live updates (live.js) get their pictures on the next refresh.
const REFRESH_MS = 10000;
function wire(img) {
  if (img.dataset.wired) return;
  img.dataset.wired = '1';
  img.addEventListener('load', () => { img.hidden = false; });
  img.addEventListener('error', () => { img.hidden = true; });
}
function refresh() {
  if (document.hidden) return;
  for (const img of document.querySelectorAll('img.thumb[data-src]')) {
    wire(img);
    img.src = `${img.dataset.src}?t=${Date.now()}`;
  }
}
refresh();
// The first request starts a screenshot in the background: ask again soon.
setTimeout(refresh, 1500);
setInterval(refresh, REFRESH_MS);
document.addEventListener('virtdeck:live', refresh);
