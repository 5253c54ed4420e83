// The pending host change page: counts down to the rollback deadline, then reloads to
// show how the change ended. Confirm stays a plain form post.
const box = document.getElementById('pending');
const out = document.getElementById('countdown');
if (box && out) {
  const deadline = Number(box.dataset.deadline) * 1000;
  const tick = () => {
    const left = Math.max(0, Math.round((deadline - Date.now()) / 1000));
    out.textContent = String(left);
    if (left <= 0) setTimeout(() => location.reload(), 1500);
    else setTimeout(tick, 1000);
  };
  tick();
}
