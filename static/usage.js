// Live usage charts: every few seconds, fetch this page's charts as JSON (server-rendered
// SVG keyed by name) and put each into its [data-usage] element. No charting library.
const root = document.querySelector('[data-usage-src]');

async function refresh() {
  if (document.hidden) return;
  try {
    const res = await fetch(root.dataset.usageSrc, {
      credentials: 'same-origin',
      headers: { accept: 'application/json' },
    });
    if (!res.ok) return;
    const parts = await res.json();
    for (const el of document.querySelectorAll('[data-usage]')) {
      const svg = parts[el.dataset.usage];
      if (typeof svg === 'string') el.innerHTML = svg;
    }
    document.body.dataset.usageRefreshed = String(Date.now());
  } catch (_) {
    // Offline for a moment: the next tick tries again.
  }
}

if (root) {
  const every = Math.max(1, Number(root.dataset.usageEvery) || 5) * 1000;
  setInterval(refresh, every);
  document.addEventListener('visibilitychange', refresh);
}
