//! Usage on the real path: a running TCG guest on `qemu:///system` uses CPU, and that
//! shows in `/metrics`, on the VM page's chart and in the VM list's sparkline.
//!
//! Fails (does not skip) when libvirtd or the tiny guest is missing: `make test` sets
//! both up.

use crate::common;

use common::api::Api;
use common::pages::{json, text};
use common::prom::{parse, Scrape};
use common::real::{guest_dir, qemu_readable_dir, require_libvirtd, virsh, URI};
use common::spawn_app_with;
use common::webdriver::Browser;
use std::time::{Duration, Instant};

/// A transient guest, destroyed (and so gone) when the test ends, pass or fail.
struct Guest {
    name: String,
    _dir: tempfile::TempDir,
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = virsh(&["destroy", &self.name]);
    }
}

fn start_guest() -> Guest {
    require_libvirtd();
    let dir = qemu_readable_dir("vdmetrics-guest-");
    for f in ["vmlinuz", "initrd.img"] {
        std::fs::copy(guest_dir().join(f), dir.path().join(f)).unwrap();
    }
    let name = format!("vdmetrics-{}", std::process::id());
    let xml = include_str!("../fixtures/tiny-guest-domain.xml")
        .replace("@NAME@", &name)
        .replace("@GUEST_DIR@", &dir.path().display().to_string())
        .replace(
            "@SERIAL_LOG@",
            &dir.path().join("serial.log").display().to_string(),
        );
    let path = dir.path().join("domain.xml");
    std::fs::write(&path, xml).unwrap();
    let out = virsh(&["create", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "virsh create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Guest { name, _dir: dir }
}

/// One scrape, on a fresh connection (a pooled one may have been closed while idle).
async fn metrics_text(app: &common::TestApp, token: &str) -> String {
    let c = common::real::bearer_client(token);
    text(&c, &app.url("/metrics")).await
}

/// The "max …" figure of a chart's title, e.g. `CPU of x, last 1 hour: now 3.0 %, min 0.0 %, max 9.5 %`.
fn max_in_title(svg: &str) -> f64 {
    let title = svg
        .split("<title>")
        .nth(1)
        .and_then(|t| t.split("</title>").next())
        .unwrap_or_else(|| panic!("no title in {svg}"));
    let max = title
        .rsplit("max ")
        .next()
        .and_then(|m| m.split(' ').next())
        .unwrap_or_else(|| panic!("no max in {title}"));
    max.parse()
        .unwrap_or_else(|_| panic!("max {max:?} in {title}"))
}

#[tokio::test]
async fn a_running_guests_cpu_shows_in_metrics_charts_and_sparklines() {
    let _gate = crate::gate::enter(module_path!());
    let guest = start_guest();
    let app = spawn_app_with(|c| {
        c.demo = false;
        c.libvirt_uri = URI.into();
        c.usage.interval_seconds = 1;
    })
    .await;
    let api = Api::new(&app).await;
    let name = guest.name.clone();
    let vm = name.as_str();

    // Counters from the bulk call, and a CPU share computed between two samples.
    let deadline = Instant::now() + Duration::from_secs(60);
    let s: Scrape = loop {
        let body = metrics_text(&app, &api.token).await;
        let s = parse(&body);
        let busy = s.value("virtdeck_vm_cpu_usage_ratio", &[("vm", vm)]);
        if busy.is_some_and(|r| r > 0.0) {
            break s;
        }
        assert!(Instant::now() < deadline, "no CPU usage for {vm}:\n{body}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        s.value("virtdeck_vm_cpu_seconds_total", &[("vm", vm)])
            .unwrap()
            > 0.0
    );
    assert_eq!(
        s.value("virtdeck_vm_state", &[("vm", vm), ("state", "running")]),
        Some(1.0)
    );
    assert_eq!(s.value("virtdeck_vm_vcpus", &[("vm", vm)]), Some(1.0));
    assert_eq!(
        s.value("virtdeck_vm_memory_max_bytes", &[("vm", vm)]),
        Some(256.0 * 1024.0 * 1024.0)
    );
    let used = s
        .value("virtdeck_vm_memory_used_bytes", &[("vm", vm)])
        .unwrap();
    assert!(used > 1024.0 * 1024.0, "QEMU holds some memory: {used}");
    // No disk or NIC on the tiny guest: its I/O counters exist and are zero.
    assert_eq!(
        s.value("virtdeck_vm_disk_read_bytes_total", &[("vm", vm)]),
        Some(0.0)
    );
    // The real host: memory in use and a CPU share between 0 and 1.
    let host_used = s.value("virtdeck_host_memory_used_bytes", &[]).unwrap();
    let host_total = s.value("virtdeck_host_memory_bytes", &[]).unwrap();
    assert!(
        host_used > 0.0 && host_used < host_total,
        "{host_used} of {host_total}"
    );
    let host_cpu = s.value("virtdeck_host_cpu_usage_ratio", &[]).unwrap();
    assert!((0.0..=1.0).contains(&host_cpu), "{host_cpu}");
    assert!(
        s.value("virtdeck_host_cpu_busy_seconds_total", &[])
            .unwrap()
            > 0.0
    );

    // The VM page's CPU chart draws the same usage, live and on the page itself.
    let admin = app.login("admin", common::ADMIN_PASSWORD).await.0;
    let parts = json(&admin, &app.url(&format!("/vms/{vm}/usage"))).await;
    let cpu = parts["recent:cpu"].as_str().unwrap();
    assert!(cpu.contains("<path class=\"line s0\""), "{cpu}");
    assert!(max_in_title(cpu) > 0.0, "{cpu}");
    let page = text(&admin, &app.url(&format!("/vms/{vm}"))).await;
    let chart = page
        .split("<div data-usage=\"recent:cpu\">")
        .nth(1)
        .expect("CPU chart on the VM page");
    assert!(max_in_title(chart) > 0.0);
    let memory = parts["recent:memory"].as_str().unwrap();
    assert!(max_in_title(memory) > 1.0, "{memory}");

    // The VM list's sparkline for the guest has a line.
    let list = text(&admin, &app.url("/vms")).await;
    let cell = list
        .split(&format!("data-usage=\"spark:{vm}\">"))
        .nth(1)
        .expect("sparkline cell");
    let svg = &cell[..cell.find("</svg>").expect("svg")];
    assert!(svg.contains("<path class=\"line s0\""), "{svg}");
    assert!(max_in_title(svg) > 0.0);

    // In Chromium the VM page's charts update on their own: the CPU chart is swapped
    // for a newer one (its time window moves) without a reload.
    let b = Browser::start().await;
    b.goto(&app.url("/login")).await;
    b.type_into("input[name=username]", "admin").await;
    b.type_into("input[name=password]", common::ADMIN_PASSWORD)
        .await;
    let submit = b.find("form button[type=submit]").await;
    b.click(&submit).await;
    b.wait_for_path("/host").await;
    b.goto(&app.url(&format!("/vms/{vm}"))).await;
    let first = b
        .execute(
            "window.__loaded = true; \
             return document.querySelector('[data-usage=\"recent:cpu\"]').innerHTML;",
            serde_json::json!([]),
        )
        .await;
    let first = first.as_str().expect("CPU chart on the page").to_string();
    b.wait_until(
        "return window.__loaded === true && !!document.body.dataset.usageRefreshed",
        Duration::from_secs(20),
        "usage.js to refresh the charts",
    )
    .await;
    b.wait_until(
        &format!(
            "return document.querySelector('[data-usage=\"recent:cpu\"]').innerHTML !== {};",
            serde_json::Value::String(first.clone())
        ),
        Duration::from_secs(20),
        "a newer CPU chart",
    )
    .await;
    let now = b
        .execute(
            "return document.querySelector('[data-usage=\"recent:cpu\"] svg title').textContent;",
            serde_json::json!([]),
        )
        .await;
    let title = now.as_str().unwrap().to_string();
    assert!(title.starts_with(&format!("CPU of {vm} (")), "{title}");
    assert!(
        max_in_title(&format!("<title>{title}</title>")) > 0.0,
        "{title}"
    );
    b.execute(
        "document.getElementById('usage').scrollIntoView();",
        serde_json::json!([]),
    )
    .await;
    b.screenshot("usage-vm-page").await;
    b.quit().await;

    // Once the guest is gone, the next samples drop it.
    drop(guest);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = metrics_text(&app, &api.token).await;
        if parse(&body)
            .value("virtdeck_vm_state", &[("vm", vm)])
            .is_none()
        {
            break;
        }
        assert!(Instant::now() < deadline, "{vm} still listed:\n{body}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        json(&admin, &app.url(&format!("/vms/{vm}/usage"))).await["recent:cpu"]
            .as_str()
            .unwrap()
            .contains("no data yet")
    );
}
