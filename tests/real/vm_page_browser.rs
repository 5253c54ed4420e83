//! The VM page and the VM list as a new admin uses them, in a real headless Chromium on
//! the demo host, at 1400 and 1920 px (and a look at 400 px): every snapshot button can
//! be clicked where it is drawn, the tab title is plain text, Force off, Revert and
//! Delete snapshot each ask first (cancelling changes nothing, confirming does it), a
//! template's page offers no Start, and the list shows no broken images, keeps its rows
//! compact and starts a VM from its row. Screenshots land in `target/test-artifacts/`.

use crate::common;

use common::api::Api;
use common::webdriver::{Browser, WAIT};
use common::{spawn_app, ADMIN_PASSWORD};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Every visible button, link and disclosure in `sel`, scrolled into view one by one:
/// those that are not the topmost element at their centre (something lies over them).
const COVERED: &str = r#"
const root = document.querySelector(arguments[0]);
if (!root) return ['no ' + arguments[0]];
const bad = [];
for (const el of root.querySelectorAll('button, a, summary')) {
  if (!el.checkVisibility()) continue;
  el.scrollIntoView({ block: 'center', inline: 'center' });
  const r = el.getBoundingClientRect();
  if (r.width === 0 || r.height === 0) continue;
  const top = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
  if (!top || !(top === el || el.contains(top))) {
    bad.push(`${el.textContent.trim()} is under ${top ? (top.closest('[id]') || top).id || top.tagName : 'nothing'}`);
  }
}
return bad;
"#;

/// Tables wider than the card they are in (and not inside a scrolling box of the card).
const OVERFLOWING: &str = r#"
const bad = [];
for (const t of document.querySelectorAll('.card table')) {
  const box = t.closest('.table-scroll') || t.closest('.card');
  const b = box.getBoundingClientRect(), r = t.getBoundingClientRect();
  if (box.classList.contains('table-scroll')) {
    const card = box.closest('.card').getBoundingClientRect();
    if (b.right > card.right + 1) bad.push((box.closest('[id]') || {}).id || 'a table box');
  } else if (r.right > b.right + 1) {
    bad.push((box.closest('[id]') || box).id || 'a table');
  }
}
return bad;
"#;

/// Visible images that did not load (the broken-image icon), and the tallest list row.
const LIST_LOOK: &str = r#"
const broken = [];
for (const img of document.querySelectorAll('img')) {
  if (!img.checkVisibility()) continue;
  if (!(img.complete && img.naturalWidth > 0)) broken.push(img.alt || img.src);
}
let tallest = 0;
for (const tr of document.querySelectorAll('#vm-list tbody tr')) {
  tallest = Math.max(tallest, tr.getBoundingClientRect().height);
}
return { broken, tallest, asked: document.querySelectorAll('img.thumb[data-asked]').length };
"#;

async fn set_width(b: &Browser, width: u32) {
    b.post("/window/rect", json!({"width": width, "height": 900}))
        .await;
}

async fn vm_state(api: &Api, vm: &str) -> String {
    let (s, v) = api.get(&format!("/api/v1/vms/{vm}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["state"].as_str().unwrap_or_default().to_string()
}

async fn snapshot_names(api: &Api, vm: &str) -> Vec<String> {
    let (s, v) = api.get(&format!("/api/v1/vms/{vm}/snapshots")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until the element at `css` (on a page loaded after a form) says `want`.
async fn wait_for_text(b: &Browser, css: &str, want: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = b
            .execute(
                "const e = document.querySelector(arguments[0]); \
                 return document.readyState === 'complete' && e ? e.textContent.trim() : null;",
                json!([css]),
            )
            .await;
        if got == want {
            return;
        }
        if Instant::now() > deadline {
            b.screenshot("vm-page-stuck").await;
            panic!("{css} never said {want:?}: {got}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the confirmation box in `details` is shown.
async fn box_shown(b: &Browser, details: &str) -> Value {
    b.execute(
        "const d = document.querySelector(arguments[0]); \
         const btn = d && d.querySelector('button[type=submit]'); \
         return !!(d && d.open && btn && btn.checkVisibility());",
        json!([details]),
    )
    .await
}

/// Opens a confirmation with a real click, checks its button shows, closes it again.
async fn open_and_cancel(b: &Browser, details: &str) {
    assert_eq!(
        box_shown(b, details).await,
        false,
        "{details} starts closed"
    );
    let summary = b.find(&format!("{details} > summary")).await;
    b.click(&summary).await;
    assert_eq!(box_shown(b, details).await, true, "{details} asks first");
    b.click(&summary).await;
    assert_eq!(box_shown(b, details).await, false, "{details} closed again");
}

/// Opens a confirmation and presses its real button.
async fn confirm(b: &Browser, details: &str) {
    let summary = b.find(&format!("{details} > summary")).await;
    b.click(&summary).await;
    assert_eq!(
        box_shown(b, details).await,
        true,
        "{details} opened to confirm"
    );
    let button = b.find(&format!("{details} button[type=submit]")).await;
    b.click(&button).await;
}

#[tokio::test]
async fn the_vm_page_and_list_are_usable_and_ask_before_harm_in_chromium() {
    let _gate = crate::gate::enter(module_path!());
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    for (name, description) in [
        (
            "before-upgrade",
            "taken while db01 runs, before its upgrade to the next release",
        ),
        ("second", "another one"),
    ] {
        let (s, v) = api
            .post(
                "/api/v1/vms/db01/snapshots",
                json!({"name": name, "description": description}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }

    let b = Browser::start().await;
    b.goto(&app.url("/login")).await;
    b.type_into("input[name=username]", "admin").await;
    b.type_into("input[name=password]", ADMIN_PASSWORD).await;
    let submit = b.find("form button[type=submit]").await;
    b.click(&submit).await;
    b.wait_for_path("/host").await;

    // 1. The VM page at two widths: the title is text, the snapshot buttons are on top.
    for width in [1400, 1920] {
        set_width(&b, width).await;
        b.goto(&app.url("/vms/db01")).await;
        let title = b.execute("return document.title", json!([])).await;
        let title = title.as_str().unwrap_or_default().to_string();
        assert!(
            title.starts_with("db01") && !title.contains('<'),
            "plain tab title: {title:?}"
        );
        let scripts = b
            .execute(
                "return document.querySelectorAll('script[src=\"/static/live.js\"]').length",
                json!([]),
            )
            .await;
        assert_eq!(scripts, 1, "live.js is loaded once");
        let covered = b.execute(COVERED, json!(["#snapshots"])).await;
        assert_eq!(covered, json!([]), "snapshot buttons at {width} px");
        let covered = b.execute(COVERED, json!(["#vm-actions"])).await;
        assert_eq!(covered, json!([]), "action buttons at {width} px");
        let overflowing = b.execute(OVERFLOWING, json!([])).await;
        assert_eq!(
            overflowing,
            json!([]),
            "tables inside their cards at {width} px"
        );
        b.execute("window.scrollTo(0, 0)", json!([])).await;
        b.screenshot(&format!("vm-page-{width}")).await;
    }

    // 2. Force off asks first: cancelling leaves db01 running, confirming stops it.
    set_width(&b, 1400).await;
    b.goto(&app.url("/vms/db01")).await;
    assert!(
        b.find_by(
            "xpath",
            "//*[@id='vm-actions']//button[normalize-space()='Force off']"
        )
        .await
        .is_none(),
        "no one-click Force off"
    );
    open_and_cancel(&b, "#force-off-confirm").await;
    b.screenshot("vm-page-force-off-closed").await;
    assert_eq!(vm_state(&api, "db01").await, "running");
    let summary = b.find("#force-off-confirm > summary").await;
    b.click(&summary).await;
    b.screenshot("vm-page-force-off-asks").await;
    b.click(&summary).await;
    confirm(&b, "#force-off-confirm").await;
    wait_for_text(&b, "#vm-message", "Force off: done.").await;
    assert_eq!(vm_state(&api, "db01").await, "shut_off");

    // 3. Revert asks first: cancelling keeps db01 off, confirming brings it back running.
    let revert = "tr[data-snapshot='before-upgrade'] details[data-confirm='revert']";
    open_and_cancel(&b, revert).await;
    assert_eq!(vm_state(&api, "db01").await, "shut_off");
    confirm(&b, revert).await;
    wait_for_text(
        &b,
        "#vm-message",
        "db01 is back at snapshot before-upgrade.",
    )
    .await;
    assert_eq!(vm_state(&api, "db01").await, "running");

    // 4. Delete snapshot asks first: cancelling keeps it, confirming deletes it.
    let delete = "tr[data-snapshot='second'] details[data-confirm='delete']";
    open_and_cancel(&b, delete).await;
    assert_eq!(
        snapshot_names(&api, "db01").await,
        ["before-upgrade", "second"]
    );
    confirm(&b, delete).await;
    wait_for_text(&b, "#vm-message", "Snapshot second deleted.").await;
    assert_eq!(snapshot_names(&api, "db01").await, ["before-upgrade"]);

    // 5. A template's page offers no Start and no autostart, and says what to do instead.
    let (s, v) = api.post("/api/v1/vms/win2019-ad/template", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    b.goto(&app.url("/vms/win2019-ad")).await;
    let actions = b.text_of("#vm-actions").await;
    assert!(
        !actions.contains("Start"),
        "no Start on a template: {actions}"
    );
    assert!(
        !actions.contains("autostart"),
        "no autostart toggle: {actions}"
    );
    assert!(
        b.text_of("#template-note")
            .await
            .contains("make a new VM from it"),
        "the page says how to run it"
    );
    let sizes = b
        .execute(
            "return [getComputedStyle(document.getElementById('vm-state')).fontSize, \
             getComputedStyle(document.getElementById('vm-template')).fontSize]",
            json!([]),
        )
        .await;
    assert_eq!(
        sizes[0], sizes[1],
        "the template tag is as big as the state tag"
    );
    b.screenshot("vm-page-template").await;

    // 6. The VM list: no broken images once the thumbnails were asked for, compact rows.
    b.goto(&app.url("/vms")).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let look = b.execute(LIST_LOOK, json!([])).await;
        if look["asked"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "thumbnails never asked for: {look}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Past the list's one retry (1.5 s) for VMs without a picture.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let look = b.execute(LIST_LOOK, json!([])).await;
    assert_eq!(look["broken"], json!([]), "no broken images: {look}");
    let tallest = look["tallest"].as_f64().unwrap();
    assert!(tallest < 60.0, "compact rows, tallest {tallest} px");
    b.screenshot("vm-list-1400").await;

    // 7. Start from the list's row: back on the list, which says so; the VM runs.
    let (s, v) = api.post("/api/v1/vms/db01/force-off", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    b.goto(&app.url("/vms")).await;
    let start = b
        .find("tr[data-vm='db01'] button[data-row-action='start']")
        .await;
    b.click(&start).await;
    wait_for_text(&b, "#vms-message", "Start: done for db01.").await;
    assert_eq!(b.path().await, "/vms", "back on the list");
    assert_eq!(vm_state(&api, "db01").await, "running");

    // 8. A narrow window, for a look.
    set_width(&b, 400).await;
    b.goto(&app.url("/vms/db01")).await;
    b.screenshot("vm-page-400").await;
    b.goto(&app.url("/vms")).await;
    b.screenshot("vm-list-400").await;

    b.quit().await;
}

/// The New VM form says, as the admin types and before anything is sent, what the size
/// gives and what the VM is charged, and that a large disk is what decides the charge.
#[tokio::test]
async fn the_new_vm_form_explains_the_charge_live_as_the_admin_types() {
    let _gate = crate::gate::enter(module_path!());
    let app = spawn_app().await;
    let _api = Api::new(&app).await;
    let b = Browser::start().await;
    b.goto(&app.url("/login")).await;
    b.type_into("input[name=username]", "admin").await;
    b.type_into("input[name=password]", ADMIN_PASSWORD).await;
    let submit = b.find("form button[type=submit]").await;
    b.click(&submit).await;
    b.wait_for_path("/host").await;

    b.goto(&app.url("/vms/new")).await;
    let charge = |want: &'static str| {
        format!(
            "const p = document.getElementById('units-charge'); \
             return !!p && !p.hidden && p.textContent.includes({want:?});"
        )
    };
    // The default named size is explained from the start.
    b.wait_until(&charge("VM is charged"), WAIT, "a first explanation")
        .await;
    let units_radio = b.find("input[name=size_mode][value=units]").await;
    b.click(&units_radio).await;
    b.type_into("input[name=units]", "1").await;
    b.type_into("input[name=size_gib]", "99999").await;
    b.wait_until(
        &charge("the 99999 GiB disk needs"),
        WAIT,
        "the disk named as what decides the charge",
    )
    .await;
    b.type_into("input[name=units]", "2").await;
    b.type_into("input[name=size_gib]", "1").await;
    b.wait_until(&charge("2 units: "), WAIT, "two units and what they give")
        .await;
    b.wait_until(&charge("disk fits in them"), WAIT, "a small disk fits")
        .await;
    // Nothing was created by typing.
    assert_eq!(b.path().await, "/vms/new");
    b.screenshot("vm-new-live-charge").await;
    b.quit().await;
}

#[tokio::test]
async fn a_disk_is_added_to_a_running_vm_from_its_page_in_chromium() {
    let _gate = crate::gate::enter(module_path!());
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    assert_eq!(vm_state(&api, "web01").await, "running");
    let (_, before) = api.get("/api/v1/vms/web01").await;
    let disks_before = before["devices"]["disks"].as_array().unwrap().len();

    let b = Browser::start().await;
    b.goto(&app.url("/login")).await;
    b.type_into("input[name=username]", "admin").await;
    b.type_into("input[name=password]", ADMIN_PASSWORD).await;
    let submit = b.find("form button[type=submit]").await;
    b.click(&submit).await;
    b.wait_for_path("/host").await;
    set_width(&b, 1400).await;
    b.goto(&app.url("/vms/web01")).await;
    let covered = b.execute(COVERED, json!(["#devices"])).await;
    assert_eq!(covered, json!([]), "the Devices card's buttons are on top");

    // First without a size: said at the field, the page keeps the choices.
    let option = b
        .find("#add-disk-form select[name=pool] option[value=default]")
        .await;
    b.click(&option).await;
    let add = b.find("#add-disk-form button[type=submit]").await;
    b.click(&add).await;
    wait_for_text(
        &b,
        "#add-disk-form [data-field=size_gib]",
        "Give the new disk's size, at least 1 GiB.",
    )
    .await;

    // Then 1 GiB on virtio with no host cache.
    b.type_into("#add-disk-form input[name=size_gib]", "1")
        .await;
    let cache = b
        .find("#add-disk-form select[name=cache] option[value=none]")
        .await;
    b.click(&cache).await;
    let add = b.find("#add-disk-form button[type=submit]").await;
    b.click(&add).await;
    let deadline = Instant::now() + WAIT;
    let message = loop {
        let got = b
            .execute(
                "const e = document.querySelector('#vm-message'); \
                 return document.readyState === 'complete' && e ? e.textContent.trim() : null;",
                json!([]),
            )
            .await;
        if let Some(m) = got.as_str() {
            break m.to_string();
        }
        if Instant::now() > deadline {
            b.screenshot("add-disk-stuck").await;
            panic!("no notice after adding a disk");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        message.starts_with("Disk vd") && message.contains("(1 GiB) is plugged in"),
        "{message}"
    );
    let target = message.split_whitespace().nth(1).unwrap().to_string();
    let row = b
        .execute(
            "return !!document.querySelector(`#device-list tr[data-disk='${arguments[0]}'] details[data-confirm=detach]`)",
            json!([target]),
        )
        .await;
    assert_eq!(row, true, "the new disk's row offers Take out");
    b.execute(
        "document.querySelector('#devices').scrollIntoView()",
        json!([]),
    )
    .await;
    b.screenshot("vm-page-disk-added").await;
    let (_, after) = api.get("/api/v1/vms/web01").await;
    assert_eq!(
        after["devices"]["disks"].as_array().unwrap().len(),
        disks_before + 1,
        "{after}"
    );
    assert!(after["xml"].as_str().unwrap().contains("cache='none'"));
    b.quit().await;
}
