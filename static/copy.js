// Copy buttons: <button data-copy="ID"> copies the text of element ID. Uses the
// clipboard when the browser allows it, else selects the text for Ctrl+C.

function selectText(el) {
  const range = document.createRange();
  range.selectNodeContents(el);
  const sel = window.getSelection();
  sel.removeAllRanges();
  sel.addRange(range);
}

for (const button of document.querySelectorAll("button[data-copy]")) {
  const target = document.getElementById(button.dataset.copy);
  if (!target) continue;
  const status = document.getElementById(button.id + "-status");
  const say = (text) => {
    if (status) status.textContent = text;
  };
  button.hidden = false;
  button.addEventListener("click", async () => {
    const text = target.textContent.trim();
    try {
      if (!navigator.clipboard || !window.isSecureContext) throw new Error("no clipboard");
      await navigator.clipboard.writeText(text);
      say("Copied.");
    } catch {
      selectText(target);
      say("Selected: press Ctrl+C (⌘C) to copy.");
    }
  });
}
