// The VM list: small pictures of running VMs' screens, refreshed every 10 s. The server
// answers from a cache (never waiting for libvirt); a VM without a picture shows none.
const REFRESH_MS = 10000;
const thumbs = [...document.querySelectorAll('img.thumb[data-src]')];
for (const img of thumbs) {
  img.addEventListener('load', () => { img.hidden = false; });
  img.addEventListener('error', () => { img.hidden = true; });
}
function refresh() {
  if (document.hidden) return;
  for (const img of thumbs) img.src = `${img.dataset.src}?t=${Date.now()}`;
}
refresh();
// The first request starts a screenshot in the background: ask again soon.
setTimeout(refresh, 1500);
setInterval(refresh, REFRESH_MS);
