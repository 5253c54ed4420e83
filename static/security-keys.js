// Security keys (WebAuthn): adding one on the account page, and signing in with one on
// the second-step page. The server sends the options as JSON; the browser's own
// parse*FromJSON / toJSON carry them to and from navigator.credentials.

const say = (el, text) => {
  if (el) {
    el.textContent = text;
    el.hidden = !text;
  }
};

const supported = () =>
  window.isSecureContext &&
  window.PublicKeyCredential &&
  typeof PublicKeyCredential.parseCreationOptionsFromJSON === "function";

async function post(url, body, headers = {}) {
  const r = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
  const answer = await r.json().catch(() => ({ error: `The server answered ${r.status}.` }));
  if (!r.ok || answer.error) throw new Error(answer.error || `The server answered ${r.status}.`);
  return answer;
}

const notUsable =
  "This browser cannot use security keys here: open virtdeck by its host name over HTTPS " +
  "with a certificate the browser trusts (or at http://localhost).";

// Account page: <form id="add-key"> with name, optional code, a status element.
const addForm = document.getElementById("add-key");
if (addForm) {
  const status = document.getElementById("add-key-status");
  addForm.hidden = false;
  addForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!supported()) return say(status, notUsable);
    const csrf = { "X-CSRF-Token": addForm.elements.csrf.value };
    const name = addForm.elements.key_name.value;
    const code = addForm.elements.code ? addForm.elements.code.value : null;
    try {
      say(status, "Touch your security key…");
      const options = await post("/account/two-factor/keys/begin", { name, code }, csrf);
      const made = await navigator.credentials.create({
        publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(options.publicKey),
      });
      const done = await post(
        "/account/two-factor/keys/finish",
        { name, credential: made.toJSON() },
        csrf,
      );
      window.location.assign(done.redirect);
    } catch (e) {
      say(status, e.message || String(e));
    }
  });
}

// Second step of sign-in: <button id="use-key"> beside the code form.
const useKey = document.getElementById("use-key");
if (useKey) {
  const status = document.getElementById("use-key-status");
  const csrf = document.querySelector("input[name=csrf]").value;
  useKey.hidden = false;
  useKey.addEventListener("click", async () => {
    if (!supported()) return say(status, notUsable);
    try {
      say(status, "Touch your security key…");
      const options = await post("/login/second-factor/key/begin", { csrf });
      const signed = await navigator.credentials.get({
        publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(options.publicKey),
      });
      const done = await post("/login/second-factor/key/finish", {
        csrf,
        credential: signed.toJSON(),
      });
      window.location.assign(done.redirect);
    } catch (e) {
      say(status, e.message || String(e));
    }
  });
}
