// Upload an image from this computer into the pool: the file is sent as the raw body of
// PUT /api/v1/pools/{pool}/volumes/{name} (the browser streams it from disk), with a
// progress bar and a Cancel button that aborts the request; virtdeck then removes the
// partial volume.
const form = document.getElementById('upload-form');
// On a host that cannot take uploads the page says why and the form stays disabled.
if (form && !form.dataset.unavailable) {
  const progress = document.getElementById('upload-progress');
  const status = document.getElementById('upload-status');
  const start = document.getElementById('upload-start');
  const cancel = document.getElementById('upload-cancel');
  const fieldErrors = {
    file: document.getElementById('upload-file-error'),
    name: document.getElementById('upload-name-error'),
  };
  const fileInput = form.querySelector('input[name="file"]');
  const nameInput = form.querySelector('input[name="name"]');
  const csrf = form.querySelector('input[name="csrf"]').value;
  const pool = form.dataset.pool;
  const maxBytes = Number(form.dataset.maxBytes || 0);
  let xhr = null;

  const showError = (field, message) => {
    const el = fieldErrors[field] || null;
    if (el) {
      el.textContent = message;
      el.hidden = false;
    } else {
      status.textContent = message;
      status.classList.add('error');
      status.setAttribute('role', 'alert');
    }
  };
  const clearErrors = () => {
    for (const el of Object.values(fieldErrors)) {
      el.hidden = true;
      el.textContent = '';
    }
    status.textContent = '';
    status.classList.remove('error');
    status.setAttribute('role', 'status');
  };
  const idle = () => {
    xhr = null;
    start.disabled = false;
    cancel.hidden = true;
  };
  const mib = (b) => (b / (1024 * 1024)).toFixed(1) + ' MiB';

  fileInput.addEventListener('change', () => {
    const f = fileInput.files[0];
    if (f && !nameInput.value) nameInput.placeholder = f.name;
  });

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    clearErrors();
    const file = fileInput.files[0];
    if (!file) return showError('file', 'Choose a file to upload.');
    if (maxBytes && file.size > maxBytes) {
      return showError('file', `The file is ${mib(file.size)}; at most ${mib(maxBytes)} may be uploaded.`);
    }
    const name = nameInput.value.trim() || file.name;
    const url = `/api/v1/pools/${encodeURIComponent(pool)}/volumes/${encodeURIComponent(name)}`
      + `?source=${encodeURIComponent(file.name)}`;
    xhr = new XMLHttpRequest();
    xhr.open('PUT', url);
    xhr.setRequestHeader('X-CSRF-Token', csrf);
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    xhr.upload.addEventListener('progress', (e) => {
      if (!e.lengthComputable) return;
      progress.max = e.total;
      progress.value = e.loaded;
      status.textContent = `${mib(e.loaded)} of ${mib(e.total)} sent`;
    });
    xhr.addEventListener('load', () => {
      const ok = xhr.status >= 200 && xhr.status < 300;
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (_) { body = null; }
      idle();
      if (ok) {
        // The pool page shows the server's one-time notice of the upload.
        window.location.assign(`/host/storage/${encodeURIComponent(pool)}`);
        return;
      }
      progress.hidden = true;
      const err = body && body.error ? body.error : { message: `The upload failed (HTTP ${xhr.status}).` };
      showError(err.field || '', err.message);
    });
    xhr.addEventListener('error', () => {
      idle();
      progress.hidden = true;
      showError('', 'The connection was lost; nothing was stored. Try again.');
    });
    xhr.addEventListener('abort', () => {
      idle();
      progress.hidden = true;
      status.textContent = 'Upload cancelled; nothing was stored.';
    });
    progress.value = 0;
    progress.max = file.size || 1;
    progress.hidden = false;
    start.disabled = true;
    cancel.hidden = false;
    status.textContent = 'Uploading…';
    xhr.send(file);
  });

  cancel.addEventListener('click', () => {
    if (xhr) xhr.abort();
  });
}
