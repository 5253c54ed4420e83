//! The host's start order on libvirt's test driver: VMs put in order through the API and
//! the VM page (libvirt's autostart turned off for them), refused at the field when out
//! of range, started first place first when the host boots (a restart of virtdeck whose
//! run directory was emptied), and not again when virtdeck merely restarts.

use crate::common;

use common::api::Api;
use common::{csrf_in, spawn_app, spawn_app_on};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn shut_off(api: &Api) -> Vec<String> {
    let (_, list) = api.get("/api/v1/vms").await;
    list["vms"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["state"] == "shut_off")
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect()
}

fn autostart(list: &Value, vm: &str) -> Value {
    list["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == vm)
        .map(|v| v["autostart"].clone())
        .unwrap()
}

#[tokio::test]
async fn vms_start_in_order_once_per_boot_of_the_host() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    // The demo host's shut-off VM first; a running one second.
    let first = shut_off(&api).await[0].clone();
    let second = "web01".to_string();
    let (s, o) = api
        .put(
            &format!("/api/v1/vms/{second}/start-order"),
            json!({"position": 2}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{o}");
    let (s, o) = api
        .put(
            &format!("/api/v1/vms/{first}/start-order"),
            json!({"position": 1, "delay_seconds": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{o}");
    assert_eq!(o, json!({"vm": first, "position": 1, "delay_seconds": 1}));
    let (_, vm) = api.get(&format!("/api/v1/vms/{first}")).await;
    assert_eq!(vm["start_order"]["position"], 1, "{vm}");
    let (_, list) = api.get("/api/v1/vms").await;
    assert_eq!(
        autostart(&list, &first),
        false,
        "virtdeck starts it, not libvirt"
    );

    for (body, field) in [
        (json!({"position": 0}), "position"),
        (json!({"position": 1000}), "position"),
        (
            json!({"position": 3, "delay_seconds": 601}),
            "delay_seconds",
        ),
    ] {
        let (s, e) = api
            .put(&format!("/api/v1/vms/{first}/start-order"), body.clone())
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {e}");
        assert_eq!(e["error"]["field"], field);
    }

    // The page says it, and its form refuses a place that is not a number at the field.
    let session = app.login("admin", common::ADMIN_PASSWORD).await.0;
    let page = app.get_text(&session, &format!("/vms/{first}")).await;
    assert!(
        page.contains("in place 1 of the start order, then waits 1 s"),
        "{page}"
    );
    assert!(page.contains("Turn autostart off"), "{page}");
    let csrf = csrf_in(&page);
    let r = session
        .post(app.url(&format!("/vms/{first}/start-order")))
        .form(&[
            ("csrf", csrf.as_str()),
            ("position", "first"),
            ("delay_seconds", "1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains(r#"data-field="position""#));

    // The host boots: its run directory is empty again, and virtdeck starts.
    let token = api.token.clone();
    app.handle.stop(false).await;
    let run = app.data_dir.path().join("run");
    std::fs::remove_dir_all(&run).unwrap();
    let (base, _, handle) = spawn_app_on(app.data_dir.path(), |_| {}, None).await;
    let booted = Api {
        c: reqwest::Client::new(),
        base,
        token,
    };
    // Each audited as virtdeck's as it happens; the running one is left as it is, and the
    // log says why.
    let store = virtdeck::store::Store::open(&app.data_dir.path().join("virtdeck.db")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let rows = loop {
        let (rows, _) = store.audit_page(0, 50).unwrap();
        let by_order = |vm: &str, result: &str| {
            rows.iter().any(|r| {
                r.target == vm
                    && r.actor == "virtdeck"
                    && r.result == result
                    && r.detail.contains("start order")
            })
        };
        if by_order(&first, "ok") && by_order(&second, "failed") {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "the start order never ran: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        rows.iter()
            .any(|r| r.target == second && r.detail.contains("it runs already")),
        "{rows:?}"
    );
    let (_, vm) = booted.get(&format!("/api/v1/vms/{first}")).await;
    assert_eq!(vm["state"], "running", "{vm}");
    handle.stop(false).await;

    // virtdeck restarts on the same boot: the order does not run again.
    let hv = virtdeck::adapters::libvirt::Libvirt::open(
        &format!(
            "test://{}",
            std::fs::canonicalize("demo/demo-host.xml")
                .unwrap()
                .display()
        ),
        virtdeck::domain::host::KvmStatus::NotApplicable,
    )
    .unwrap();
    let ran =
        virtdeck::lifecycle::start_order::start_in_order(&hv, &store, &run, &|_| {}, &|_, _| {})
            .unwrap();
    assert_eq!(ran, None);
    // A boot with both off: both start, first place first, with its wait after it.
    std::fs::remove_dir_all(&run).unwrap();
    use virtdeck::hypervisor::Hypervisor;
    hv.act(&second, virtdeck::domain::vm::VmAction::ForceOff)
        .unwrap();
    let waited = std::sync::Mutex::new(Vec::new());
    let ran = virtdeck::lifecycle::start_order::start_in_order(
        &hv,
        &store,
        &run,
        &|d| waited.lock().unwrap().push(d),
        &|_, _| {},
    )
    .unwrap()
    .expect("ran at this boot");
    assert_eq!(ran.started, [first.clone(), second.clone()]);
    assert!(ran.skipped.is_empty(), "{ran:?}");
    assert_eq!(*waited.lock().unwrap(), [Duration::from_secs(1)]);
}

async fn put_in_order(api: &Api, vm: &str) {
    let (s, o) = api
        .put(
            &format!("/api/v1/vms/{vm}/start-order"),
            json!({"position": 5}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{o}");
}

#[tokio::test]
async fn turning_autostart_off_takes_a_vm_out_of_the_order() {
    let app = spawn_app().await;
    let api = Api::new(&app).await;
    let vm = shut_off(&api).await[0].clone();
    put_in_order(&api, &vm).await;
    let session = app.login("admin", common::ADMIN_PASSWORD).await.0;
    let csrf = app.csrf(&session, &format!("/vms/{vm}")).await;
    let r = session
        .post(app.url(&format!("/vms/{vm}/autostart")))
        .form(&[("csrf", csrf.as_str()), ("on", "0")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (_, v) = api.get(&format!("/api/v1/vms/{vm}")).await;
    assert_eq!(v["start_order"], Value::Null, "{v}");
    assert_eq!(v["autostart"], false);
    // Out of the order through the API: back to libvirt's autostart.
    put_in_order(&api, &vm).await;
    let (s, o) = api
        .put(
            &format!("/api/v1/vms/{vm}/start-order"),
            json!({"position": null}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{o}");
    let (_, v) = api.get(&format!("/api/v1/vms/{vm}")).await;
    assert_eq!(
        (v["start_order"].clone(), v["autostart"].clone()),
        (Value::Null, json!(true)),
        "{v}"
    );
}
