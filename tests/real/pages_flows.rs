//! Pages as an admin uses them: sign-in comes back to the page asked for, forms answer
//! with a redirect and a one-time notice, and the forms say plainly what will happen.

use crate::common;

use common::*;
use reqwest::StatusCode;

/// How often `needle` occurs in `page`.
fn count(page: &str, needle: &str) -> usize {
    page.matches(needle).count()
}

#[tokio::test]
async fn sign_in_comes_back_to_the_page_asked_for() {
    let _gate = crate::gate::enter(module_path!());
    let app = spawn_app().await;
    let _admin = app.setup_admin("admin").await;
    let c = client();
    let r = c.get(app.url("/vms?state=running")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = location(&r);
    assert_eq!(to, "/login?next=%2Fvms%3Fstate%3Drunning");

    // The login page keeps next in its form; signing in with it lands there.
    let page = app.get_text(&c, &to).await;
    assert!(
        page.contains("name=\"next\" value=\"/vms?state=running\""),
        "{page}"
    );
    let csrf = csrf_in(&page);
    let r = c
        .post(app.url("/login"))
        .form(&[
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
            ("csrf", csrf.as_str()),
            ("next", "/vms?state=running"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/vms?state=running");

    // A form's action is not a page to come back to; the API answers 401 as before.
    let r = client()
        .post(app.url("/tokens"))
        .form(&[("username", "admin")])
        .send()
        .await
        .unwrap();
    assert_eq!(location(&r), "/login");
    let r = client().get(app.url("/api/v1/vms")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn token_form_defaults_to_the_signed_in_user_and_the_token_shows_once() {
    let _gate = crate::gate::enter(module_path!());
    let app = spawn_app().await;
    let admin = app.setup_admin("zed").await;
    app.add_user(&admin, "alice", "viewer", "alice-password-1")
        .await;
    let page = app.get_text(&admin, "/users").await;
    assert!(page.contains("<option selected>zed</option>"), "{page}");
    assert!(page.contains("<option>alice</option>"), "{page}");

    let csrf = app.csrf(&admin, "/users").await;
    let r = admin
        .post(app.url("/tokens"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("username", "zed"),
            ("label", "ci"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = location(&r);
    assert_eq!(to, "/users", "never the secret in the URL");
    let set_cookies: Vec<_> = r.headers().get_all("set-cookie").iter().collect();
    assert!(
        set_cookies.is_empty(),
        "no secret in a cookie: {set_cookies:?}"
    );

    let page = app.get_text(&admin, &to).await;
    assert_eq!(count(&page, "id=\"new-token\""), 1, "{page}");
    assert!(page.contains("API token for zed created"), "{page}");
    assert!(page.contains("data-copy=\"new-token\""), "a Copy button");
    assert!(page.contains("src=\"/static/copy.js\""));
    let js = admin.get(app.url("/static/copy.js")).send().await.unwrap();
    assert_eq!(js.status(), StatusCode::OK);
    assert!(js.text().await.unwrap().contains("clipboard.writeText"));

    let again = app.get_text(&admin, "/users").await;
    assert!(!again.contains("id=\"new-token\""), "shown once");
    assert!(!again.contains("API token for zed created"), "notice once");
}

/// POSTs a form and checks the answer is a 303 to `page`; then the page shows
/// `notice` once.
async fn posts_and_notices_once(
    app: &TestApp,
    c: &reqwest::Client,
    action: &str,
    form: &[(&str, &str)],
    page: &str,
    notice: &str,
) {
    let r = c.post(app.url(action)).form(form).send().await.unwrap();
    let status = r.status();
    let to = location(&r);
    let body = r.text().await.unwrap();
    assert_eq!(status, StatusCode::SEE_OTHER, "{action}: {body}");
    assert_eq!(to, page, "{action}");
    let first = app.get_text(c, &to).await;
    assert_eq!(count(&first, notice), 1, "{action}: {notice} in {first}");
    let second = app.get_text(c, &to).await;
    assert_eq!(count(&second, notice), 0, "{action}: shown once");
}

#[tokio::test]
async fn admin_forms_redirect_with_a_one_time_notice() {
    let _gate = crate::gate::enter(module_path!());
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    let csrf = app.csrf(&admin, "/users").await;
    let c = csrf.as_str();
    posts_and_notices_once(
        &app,
        &admin,
        "/users",
        &[
            ("csrf", c),
            ("username", "bob"),
            ("role", "operator"),
            ("password", "bob-password-1"),
            ("password_confirm", "bob-password-1"),
        ],
        "/users",
        "Created bob (operator).",
    )
    .await;
    posts_and_notices_once(
        &app,
        &admin,
        "/users/bob/delete",
        &[("csrf", c)],
        "/users",
        "Deleted bob;",
    )
    .await;
    posts_and_notices_once(
        &app,
        &admin,
        "/flavors",
        &[("csrf", c), ("name", "xl"), ("units", "3")],
        "/flavors",
        "Saved size xl: 3 units.",
    )
    .await;
    posts_and_notices_once(
        &app,
        &admin,
        "/flavors/xl/delete",
        &[("csrf", c)],
        "/flavors",
        "Deleted size xl.",
    )
    .await;
}

#[tokio::test]
async fn snapshot_forms_redirect_with_a_one_time_notice() {
    let _gate = crate::gate::enter(module_path!());
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    let csrf = app.csrf(&admin, "/vms/db01").await;
    let c = csrf.as_str();
    posts_and_notices_once(
        &app,
        &admin,
        "/vms/db01/snapshots",
        &[
            ("csrf", c),
            ("snapshot_name", "before"),
            ("description", ""),
        ],
        "/vms/db01",
        "Snapshot before taken.",
    )
    .await;
    posts_and_notices_once(
        &app,
        &admin,
        "/vms/db01/snapshots/before/revert",
        &[("csrf", c)],
        "/vms/db01",
        "db01 is back at snapshot before.",
    )
    .await;
    posts_and_notices_once(
        &app,
        &admin,
        "/vms/db01/snapshots/before/delete",
        &[("csrf", c)],
        "/vms/db01",
        "Snapshot before deleted.",
    )
    .await;
}

/// The row of the pool page for volume `name`.
fn volume_row(page: &str, name: &str) -> String {
    let start = page
        .find(&format!("data-volume=\"{name}\""))
        .unwrap_or_else(|| panic!("no row for {name}"));
    page[start..start + page[start..].find("</tr>").unwrap()].to_string()
}

#[tokio::test]
async fn the_demo_pool_says_before_an_upload_that_it_cannot_take_one() {
    let _gate = crate::gate::enter(module_path!());
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    let page = app.get_text(&admin, "/host/storage/default").await;
    let at = page.find("id=\"upload-unavailable\"").expect("said before");
    let said = &page[page[..at].rfind('<').unwrap()..at + 400];
    assert!(said.contains("class=\"error\""), "{said}");
    assert!(said.contains("not available on the demo host"), "{said}");
    assert!(
        page.contains("id=\"upload-start\" disabled"),
        "no upload offered"
    );
    assert!(!page.contains("virStorageVolUpload"));
}

#[tokio::test]
async fn isos_offer_no_resize_and_thin_overcommit_is_warned() {
    let _gate = crate::gate::enter(module_path!());
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    let page = app.get_text(&admin, "/host/storage/default").await;
    let iso = "debian-12.8.0-amd64-netinst.iso";
    assert!(
        !volume_row(&page, iso).contains("/resize\""),
        "no Resize for an ISO"
    );
    assert!(volume_row(&page, "web01.qcow2").contains("/resize\""));
    let csrf = csrf_in(&page);
    let r = admin
        .post(app.url(&format!("/host/storage/default/volumes/{iso}/resize")))
        .form(&[("csrf", csrf.as_str()), ("size_gib", "50")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("cannot be resized"));

    // A thin volume far larger than the free space is made, with a warning.
    let r = admin
        .post(app.url("/host/storage/default/volumes"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "huge.qcow2"),
            ("size_gib", "5000"),
            ("format", "qcow2"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = app.get_text(&admin, &location(&r)).await;
    assert!(page.contains("Volume huge.qcow2 created"), "{page}");
    assert!(
        page.contains("may grow to 5000 GiB but the pool has only"),
        "{page}"
    );
    // One that fits says nothing of the kind.
    let r = admin
        .post(app.url("/host/storage/default/volumes"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "small.qcow2"),
            ("size_gib", "1"),
            ("format", "qcow2"),
        ])
        .send()
        .await
        .unwrap();
    let page = app.get_text(&admin, &location(&r)).await;
    assert!(page.contains("Volume small.qcow2 created"), "{page}");
    assert!(!page.contains("may grow to"), "{page}");
}

#[tokio::test]
async fn demo_usage_charts_say_why_they_stay_empty_and_never_show_minus_zero() {
    let _gate = crate::gate::enter(module_path!());
    let app = spawn_app_with(|c| c.usage.interval_seconds = 1).await;
    let admin = app.setup_admin("admin").await;
    // Let the sampler run a few times.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    for path in ["/vms/web01", "/host"] {
        let page = app.get_text(&admin, path).await;
        let at = page
            .find("id=\"usage-note\"")
            .unwrap_or_else(|| panic!("{path}: no note"));
        assert!(
            page[at..at + 300].contains("no CPU, disk or network counters"),
            "{path}"
        );
        assert!(
            !page.contains("-0 B/s") && !page.contains("-0.0"),
            "{path}: {page}"
        );
    }
}

const ISO: &str = "/var/lib/libvirt/images/debian-12.8.0-amd64-netinst.iso";

/// The New VM form as typed; `extra` replaces or adds fields.
fn vm_form(csrf: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut f: Vec<(String, String)> = [
        ("csrf", csrf),
        ("name", "pf01"),
        ("size_mode", "flavor"),
        ("flavor", "small"),
        ("disk_mode", "new"),
        ("pool", "default"),
        ("size_gib", ""),
        ("format", ""),
        ("install", "cdrom"),
        ("iso", ISO),
        ("nic_mode", "network"),
        ("network", "default"),
        ("nic_model", "virtio"),
        ("mac", ""),
        ("clock", "utc"),
        ("then", "define"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        f.retain(|(key, _)| key != k);
        f.push((k.to_string(), v.to_string()));
    }
    f
}

/// The text of the field error shown at `field`, if any.
fn field_error<'a>(page: &'a str, field: &str) -> Option<&'a str> {
    let marker = format!("data-field=\"{field}\">");
    let at = page.find(&marker)? + marker.len();
    Some(&page[at..at + page[at..].find('<').unwrap()])
}

#[tokio::test]
async fn the_new_vm_form_shows_every_error_in_one_round_at_its_field() {
    let _gate = crate::gate::enter(module_path!());
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    let page = app.get_text(&admin, "/vms/new").await;
    let csrf = csrf_in(&page);
    // Too many units (5 of 12 are free on the demo host), a bad name and a bad MAC at
    // once: all three at their fields.
    let r = admin
        .post(app.url("/vms"))
        .form(&vm_form(
            &csrf,
            &[
                ("name", "bad name!"),
                ("size_mode", "units"),
                ("units", "6"),
                ("mac", "not-a-mac"),
            ],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = r.text().await.unwrap();
    assert!(field_error(&body, "name").is_some(), "name: {body}");
    assert!(field_error(&body, "mac").is_some(), "mac: {body}");
    let units = field_error(&body, "units").expect("units error at the size");
    assert!(
        units.contains("needs 6 units but only 5 of 12 are free"),
        "{units}"
    );
    assert!(
        !body.contains(&format!("id=\"form-error\">{units}")),
        "not at the top"
    );

    // A number that cannot be read and a taken name, together.
    let r = admin
        .post(app.url("/vms"))
        .form(&vm_form(
            &csrf,
            &[
                ("name", "web01"),
                ("size_mode", "custom"),
                ("vcpus", "two"),
                ("memory_mib", "1024"),
            ],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = r.text().await.unwrap();
    assert!(field_error(&body, "vcpus").is_some(), "{body}");
    assert!(field_error(&body, "name")
        .unwrap()
        .contains("exists already"));
}

#[tokio::test]
async fn the_new_vm_form_offers_only_usable_volumes_and_notices_create_and_delete() {
    let _gate = crate::gate::enter(module_path!());
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    let page = app.get_text(&admin, "/vms/new").await;
    let at = page.find("<select name=\"volume\">").expect("volume list");
    let volumes = &page[at..at + page[at..].find("</select>").unwrap()];
    assert!(
        !volumes.contains("web01.qcow2"),
        "in use by web01: {volumes}"
    );
    assert!(!volumes.contains(".iso"), "{volumes}");
    let csrf = csrf_in(&page);

    let r = admin
        .post(app.url("/vms"))
        .form(&vm_form(&csrf, &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/vms/pf01");
    let detail = app.get_text(&admin, "/vms/pf01").await;
    assert_eq!(count(&detail, "Created VM pf01:"), 1, "{detail}");
    let detail = app.get_text(&admin, "/vms/pf01").await;
    assert_eq!(count(&detail, "Created VM pf01:"), 0, "once");

    let r = admin
        .post(app.url("/vms/pf01/delete"))
        .form(&[("csrf", csrf.as_str()), ("delete_volumes", "on")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/vms");
    let list = app.get_text(&admin, "/vms").await;
    assert_eq!(count(&list, "Deleted VM pf01;"), 1, "{list}");
    let list = app.get_text(&admin, "/vms").await;
    assert_eq!(count(&list, "Deleted VM pf01;"), 0, "once");
}

#[tokio::test]
async fn the_new_vm_form_says_what_the_units_give_and_what_is_charged() {
    let _gate = crate::gate::enter(module_path!());
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    let page = app.get_text(&admin, "/vms/new").await;
    let at = page.find("id=\"units-charge\"").expect("a charge hint");
    let hint = &page[at..at + page[at..].find("</p>").unwrap()];
    assert!(hint.contains("1 unit: 5 vCPUs"), "{hint}");
    assert!(hint.contains("The VM is charged 1 unit."), "{hint}");
    // A disk bigger than the units' share decides the charge; the form says so.
    let csrf = csrf_in(&page);
    let r = admin
        .post(app.url("/vms"))
        .form(&vm_form(
            &csrf,
            &[("name", "bad name!"), ("size_gib", "1000")],
        ))
        .send()
        .await
        .unwrap();
    let body = r.text().await.unwrap();
    let at = body.find("id=\"units-charge\"").expect("a charge hint");
    let hint = &body[at..at + body[at..].find("</p>").unwrap()];
    assert!(hint.contains("the 1000 GiB disk needs"), "{hint}");
    assert!(hint.contains("so the VM is charged"), "{hint}");
}

#[tokio::test]
async fn the_demo_host_says_before_apply_that_it_will_be_refused() {
    let _gate = crate::gate::enter(module_path!());
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_path_buf();
    let app = spawn_app_with(move |c| {
        c.host.root = r;
        c.host.netns = None;
    })
    .await;
    let admin = app.setup_admin("admin").await;
    let csrf = app.csrf(&admin, "/host/sysctl").await;
    let r = admin
        .post(app.url("/host/sysctl/plan"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("action", "set"),
            ("key", "net.ipv4.ip_forward"),
            ("value", "1"),
        ])
        .send()
        .await
        .unwrap();
    let status = r.status();
    let page = r.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Plan:"), "a plan page: {page}");
    let at = page
        .find("id=\"apply-refused\"")
        .expect("said before Apply");
    assert!(page[at..at + 300].contains("demo host"), "{page}");
    assert!(!page.contains("id=\"apply-form\""), "no live Apply button");
}

/// A host running more vCPUs than it has CPUs: the Host page says what that means
/// instead of a bare "18 of 16 CPUs".
#[tokio::test]
async fn the_host_page_explains_cpu_overcommit() {
    let _gate = crate::gate::enter(module_path!());
    let app = spawn_app().await;
    let api = common::api::Api::new(&app).await;
    let (admin, _) = app.login("admin", ADMIN_PASSWORD).await;
    let host_page = || async {
        admin
            .get(app.url("/host"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let page = host_page().await;
    assert!(page.contains("13 vCPUs on 16 CPUs"), "{page}");
    assert!(!page.contains("id=\"cpu-overcommit\""), "no overcommit yet");
    let (s, created) = api
        .post(
            "/api/v1/vms",
            serde_json::json!({
                "name": "app01", "flavor": "small",
                "disk": {"type": "new", "pool": "default", "size_gib": 2},
                "install": {"type": "cdrom", "volume": "/var/lib/libvirt/images/debian-12.8.0-amd64-netinst.iso"},
                "nic": {"bridge": "br0"}, "start": true
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let page = host_page().await;
    assert!(page.contains("18 vCPUs on 16 CPUs"), "{page}");
    assert!(
        page.contains("id=\"cpu-overcommit\"") && page.contains("cpu_allocation_ratio"),
        "{page}"
    );
}
