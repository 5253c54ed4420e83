// New VM form: says live, as the admin types, what the size gives and what the VM is
// charged (and which resource decides it). The sentence comes from the server
// (GET /vms/new/charge), the same rule create applies; only the size fields are sent.
const form = document.querySelector('form.vmform');
const out = document.getElementById('units-charge');
const FIELDS = ['size_mode', 'flavor', 'units', 'vcpus', 'memory_mib', 'disk_mode', 'pool', 'size_gib'];

if (form && out) {
  let timer = null;
  let latest = 0;

  const update = async () => {
    const asked = ++latest;
    const data = new FormData(form);
    const query = new URLSearchParams();
    for (const name of FIELDS) {
      const value = data.get(name);
      if (value !== null) query.set(name, value);
    }
    let text;
    try {
      const r = await fetch(`/vms/new/charge?${query}`, { credentials: 'same-origin' });
      if (!r.ok) return;
      text = await r.text();
    } catch (_) {
      return; // Offline for a moment: the server still explains on submit.
    }
    if (asked !== latest) return; // A newer answer is on its way.
    out.textContent = text;
    out.hidden = text === '';
  };

  const soon = (e) => {
    if (!FIELDS.includes(e.target.name)) return;
    clearTimeout(timer);
    timer = setTimeout(update, 150);
  };
  form.addEventListener('input', soon);
  form.addEventListener('change', soon);
}
