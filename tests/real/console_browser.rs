//! The consoles in a real headless Chromium on a real tiny guest: sign in, open the VNC
//! console from the VM page (the canvas shows the guest's boot text), open the serial
//! console, type a command and see its output. Screenshots land in target/test-artifacts/
//! (console-vnc.png, console-serial.png).

use crate::common;
use crate::console_support;

use common::webdriver::Browser;
use console_support::*;
use serde_json::json;
use std::time::Duration;

const CANVAS_HAS_TEXT: &str = r#"
const c = document.querySelector('#console-screen canvas');
if (!c || !c.width || !c.height) return false;
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let lit = 0;
for (let i = 0; i < d.length; i += 4) if (d[i] > 64 || d[i + 1] > 64 || d[i + 2] > 64) lit++;
return lit > 200;
"#;

const STATUS_CONNECTED: &str =
    "return document.getElementById('console-status').dataset.state === 'connected';";

#[tokio::test]
async fn vnc_and_serial_consoles_work_in_chromium() {
    let _gate = crate::gate::enter(module_path!());
    let guest = Guest::new(true);
    let app = spawn_app(|_| {}).await;
    let b = Browser::start().await;

    // Create the first admin through the setup link; lands on /host signed in.
    b.set_up_first_admin(
        &app.setup_url.clone().expect("setup link"),
        "admin",
        ADMIN_PASSWORD,
    )
    .await;
    guest.wait_ready().await;

    // The VM page offers the console; it opens noVNC, which shows the boot text.
    b.goto(&app.url(&format!("/vms/{}", guest.name))).await;
    let open = b.find("#open-console").await;
    b.click(&open).await;
    b.wait_for_path(&format!("/vms/{}/console/vnc", guest.name))
        .await;
    b.wait_until(
        STATUS_CONNECTED,
        Duration::from_secs(30),
        "the VNC console to connect",
    )
    .await;
    b.wait_until(
        CANVAS_HAS_TEXT,
        Duration::from_secs(60),
        "the guest's boot text on the noVNC canvas",
    )
    .await;
    b.screenshot("console-vnc").await;

    // Paste as keystrokes: headless Chromium gives no clipboard permission, so the page
    // falls back to a text box; what is typed there reaches the guest's shell on the VNC
    // screen (tty1), which writes it to the serial port, where the guest's log shows it
    // (only the command's output goes there, not the command line typed on tty1; the
    // shifted characters `>` and `S` prove Shift is sent where a US keyboard needs it).
    let pasted = unique("pasted-");
    let paste = b.find("#vnc-paste").await;
    b.click(&paste).await;
    b.wait_until(
        "return !document.getElementById('paste-box').hidden;",
        Duration::from_secs(10),
        "the paste box",
    )
    .await;
    b.type_into(
        "#paste-text",
        &format!("echo {pasted} > /dev/ttyS0\u{E007}"),
    )
    .await;
    let send = b.find("#paste-send").await;
    b.click(&send).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&guest.serial_log)
        .unwrap_or_default()
        .contains(&pasted)
    {
        if std::time::Instant::now() > deadline {
            b.screenshot("console-paste").await;
            panic!("the pasted command never ran in the guest");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Pop out: the console moves to a window of its own; this page lets go of it.
    let handles = b.get("/window/handles").await;
    let popout = b.find("#console-popout").await;
    b.click(&popout).await;
    b.wait_until(
        "return document.getElementById('console-status').dataset.state === 'taken';",
        Duration::from_secs(10),
        "this page to say the console opened in its own window",
    )
    .await;
    let after = b.get("/window/handles").await;
    assert_eq!(
        after.as_array().map(Vec::len),
        handles.as_array().map(|h| h.len() + 1),
        "a new window: {after}"
    );

    // The serial console: type a command into xterm.js, read its output.
    let open = b.find("#console-other").await;
    b.click(&open).await;
    b.wait_for_path(&format!("/vms/{}/console/serial", guest.name))
        .await;
    b.wait_until(
        STATUS_CONNECTED,
        Duration::from_secs(30),
        "the serial console to connect",
    )
    .await;
    let marker = unique("browser-");
    let input = b.find(".xterm-helper-textarea").await;
    let has_marker = format!(
        r#"const buf = window.virtdeckTerminal.buffer.active;
        for (let i = 0; i < buf.length; i++) {{
          const line = buf.getLine(i);
          if (line && line.translateToString(true).trim() === '{marker}') return true;
        }}
        return false;"#
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        b.send_keys(&input, &format!("echo {marker}\u{E007}")).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        if b.execute(&has_marker, json!([])).await == json!(true) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the command's output never appeared in the terminal"
        );
    }
    let shown = b.text_of(".xterm-rows").await;
    assert!(shown.contains(&marker), "the output is on screen: {shown}");
    b.screenshot("console-serial").await;
    b.quit().await;
}
