// The Jobs page reloads itself every few seconds while a job is running, so progress
// and outcomes appear without a manual reload.
const list = document.getElementById('job-list');
const seconds = Number(list?.dataset.refresh || 0);
if (seconds > 0) {
  setTimeout(() => window.location.reload(), seconds * 1000);
}
