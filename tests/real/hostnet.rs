//! Host network changes on a real kernel: each test makes its own network namespace with
//! veth pairs, points virtdeck at it (`host.netns`) and at a temp host root, and drives
//! plan → apply → confirm / roll back over HTTP. Needs root (`ip netns add`).

use crate::common;

use common::api::Api;
use common::{spawn_app_with, TestApp, ADMIN_PASSWORD};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const CONFIRM_SECONDS: u64 = 6;

/// A network namespace for one test, removed (with everything in it) on drop.
struct Netns {
    name: String,
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Netns {
    /// vd0 carries 192.0.2.10/24 and the default route via 192.0.2.1; vd1 is idle. Their
    /// veth peers (vd0p, vd1p) are up so the ports have carrier. IPv6 is off so the
    /// kernel adds no link-local addresses of its own.
    fn new() -> Netns {
        let name = format!("vd-hn-{}-{}", std::process::id(), rand_suffix());
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
        for (a, b) in [("vd0", "vd0p"), ("vd1", "vd1p")] {
            ip(&[
                "-n", &ns.name, "link", "add", a, "type", "veth", "peer", "name", b,
            ]);
            ip(&["-n", &ns.name, "link", "set", a, "up"]);
            ip(&["-n", &ns.name, "link", "set", b, "up"]);
        }
        ip(&["-n", &ns.name, "addr", "add", "192.0.2.10/24", "dev", "vd0"]);
        ip(&[
            "-n",
            &ns.name,
            "route",
            "add",
            "default",
            "via",
            "192.0.2.1",
        ]);
        ns
    }

    fn exec(&self, cmd: &[&str]) -> String {
        let mut args = vec!["netns", "exec", self.name.as_str()];
        args.extend_from_slice(cmd);
        ip(&args)
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["-n", self.name.as_str(), "-j"];
        a.extend_from_slice(args);
        serde_json::from_str(&ip(&a)).expect("ip -j prints JSON")
    }

    /// Links (name, kind, master, MTU, flags), addresses and routes: what a rollback
    /// must put back exactly.
    fn state(&self) -> Value {
        let links: Vec<Value> = self
            .json(&["-d", "link", "show"])
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                json!({
                    "ifname": l["ifname"], "master": l["master"], "mtu": l["mtu"],
                    "flags": l["flags"], "kind": l["linkinfo"]["info_kind"],
                    "stp": l["linkinfo"]["info_data"]["stp_state"],
                    "forward_delay": l["linkinfo"]["info_data"]["forward_delay"],
                })
            })
            .collect();
        let addrs: Vec<Value> = self
            .json(&["addr", "show"])
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                let a: Vec<Value> = l["addr_info"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| json!([a["local"], a["prefixlen"]]))
                    .collect();
                json!([l["ifname"], a])
            })
            .collect();
        json!({ "links": links, "addrs": addrs, "routes": self.json(&["route", "show"]) })
    }

    fn has_link(&self, name: &str) -> bool {
        self.state()["links"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["ifname"] == name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn rand_suffix() -> String {
    use std::time::SystemTime;
    let n = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{n:x}")
}

/// Every file under the host root with its content.
fn files(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, root, out);
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read_to_string(&p).unwrap(),
                );
            }
        }
    }
    walk(root, root, &mut out);
    out
}

struct Host {
    app: TestApp,
    api: Api,
    ns: Netns,
    root: tempfile::TempDir,
}

async fn host() -> Host {
    let ns = Netns::new();
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc/systemd/network")).unwrap();
    let (r, n) = (root.path().to_path_buf(), ns.name.clone());
    let app = spawn_app_with(move |c| {
        c.host.root = r;
        c.host.netns = Some(n);
        c.host.confirm_seconds = CONFIRM_SECONDS;
    })
    .await;
    let api = Api::new(&app).await;
    Host { app, api, ns, root }
}

fn bridge_br0(address: &str, ports: &str) -> Value {
    json!({
        "kind": "bridge", "name": "br0", "ports": ports, "forward_delay_s": "0",
        "ipv4": "static", "ipv4_address": address, "ipv4_gateway": "192.0.2.1",
    })
}

impl Host {
    async fn plan(&self, body: Value) -> (StatusCode, Value) {
        self.api.post("/api/v1/host/network/plan", body).await
    }

    async fn apply(&self, plan: &Value) -> (StatusCode, Value) {
        let id = plan["plan"]["id"].as_str().expect("plan id");
        self.api
            .post(&format!("/api/v1/host/changes/{id}/apply"), json!({}))
            .await
    }

    async fn wait_until_not_pending(&self) -> Value {
        let start = Instant::now();
        loop {
            let (_, b) = self.api.get("/api/v1/host/changes/pending").await;
            if b["pending"].is_null() {
                return b;
            }
            assert!(
                start.elapsed() < Duration::from_secs(CONFIRM_SECONDS + 10),
                "still pending: {b}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[tokio::test]
async fn bridge_is_created_confirmed_and_an_unconfirmed_edit_is_rolled_back() {
    let _gate = crate::gate::enter(module_path!());
    let h = host().await;
    let fresh = h.ns.state();

    // Plan: the host's address moves from vd0 to the new bridge.
    let (s, plan) = h.plan(bridge_br0("192.0.2.10/24", "vd0 vd1")).await;
    assert_eq!(s, StatusCode::OK, "{plan}");
    let steps: Vec<&str> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for want in [
        "create bridge br0 (STP off, forward delay 0 s, ageing 300 s)",
        "remove address 192.0.2.10/24 from vd0",
        "add vd0 to br0",
        "add vd1 to br0",
        "add address 192.0.2.10/24 to br0",
        "add default route via 192.0.2.1 on br0",
    ] {
        assert!(steps.contains(&want), "{want} not in {steps:?}");
    }
    let diffs: Vec<&str> = plan["plan"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["diff"].as_str().unwrap())
        .collect();
    assert!(
        diffs.iter().any(
            |d| d.contains("+++ b/etc/systemd/network/10-virtdeck-br0.network")
                && d.contains("+Address=192.0.2.10/24")
        ),
        "{diffs:?}"
    );
    assert_eq!(h.ns.state(), fresh, "a plan changes nothing");
    assert!(files(h.root.path()).is_empty());

    // Apply: live and files change, and the change waits for confirmation.
    let (s, applied) = h.apply(&plan).await;
    assert_eq!(s, StatusCode::OK, "{applied}");
    assert!(applied["pending"]["seconds_left"].as_i64().unwrap() > 0);
    let live = h.ns.state();
    assert!(h.ns.has_link("br0"));
    let vd0 = live["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["ifname"] == "vd0")
        .unwrap();
    assert_eq!(vd0["master"], "br0");
    assert!(live["addrs"]
        .to_string()
        .contains(r#"["br0",[["192.0.2.10",24]]]"#));
    assert!(live["routes"].to_string().contains(r#""dev":"br0""#));
    let written = files(h.root.path());
    assert_eq!(
        written[Path::new("etc/systemd/network/10-virtdeck-br0.netdev")],
        "# Managed by virtdeck: the next host network change from virtdeck replaces this file.\n\n[NetDev]\nName=br0\nKind=bridge\n\n[Bridge]\nSTP=no\nForwardDelaySec=0\nAgeingTimeSec=300\n"
    );
    assert!(written.contains_key(Path::new("etc/systemd/network/10-virtdeck-vd0.network")));

    // One change at a time: another plan cannot be applied meanwhile.
    let (s, other) = h
        .plan(json!({"kind": "vlan", "name": "vd1.7", "parent": "vd1", "vlan_id": "7"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{other}");
    let (s, refused) = h.apply(&other).await;
    assert_eq!(s, StatusCode::CONFLICT, "{refused}");
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap()
        .contains("waiting for confirmation"));

    // Another sign-in of an admin cannot confirm it by accident: only the sign-in whose
    // network path the change must keep may, unless the admin says so explicitly.
    let (other, _) = h.app.login("admin", common::ADMIN_PASSWORD).await;
    let csrf = h.app.csrf(&other, "/host/changes/pending").await;
    let pending_page = other
        .get(h.app.url("/host/changes/pending"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        pending_page.contains("applied from another sign-in"),
        "{pending_page}"
    );
    let r = other
        .post(h.app.url("/host/changes/confirm"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(r.text().await.unwrap().contains("from another sign-in"));
    let (_, still) = h.api.get("/api/v1/host/changes/pending").await;
    assert!(!still["pending"].is_null(), "still waiting: {still}");

    let (s, confirmed) = h.api.post("/api/v1/host/changes/confirm", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{confirmed}");
    // Past the deadline the confirmed change stays.
    tokio::time::sleep(Duration::from_secs(CONFIRM_SECONDS + 1)).await;
    assert_eq!(h.ns.state(), live, "a confirmed change stays");
    assert_eq!(files(h.root.path()), written);
    let (_, net) = h.api.get("/api/v1/host/network").await;
    assert_eq!(net["managed"]["bridges"][0]["name"], "br0");

    // A second change (new address, one port less) applied and never confirmed.
    let (s, plan2) = h.plan(bridge_br0("192.0.2.20/24", "vd0")).await;
    assert_eq!(s, StatusCode::OK, "{plan2}");
    let (s, applied) = h.apply(&plan2).await;
    assert_eq!(s, StatusCode::OK, "{applied}");
    let changed = h.ns.state();
    assert!(changed["addrs"].to_string().contains("192.0.2.20"));
    assert_ne!(files(h.root.path()), written);
    let after = h.wait_until_not_pending().await;
    assert_eq!(after["last"]["result"], "rolled back", "{after}");
    assert!(after["last"]["detail"]
        .as_str()
        .unwrap()
        .contains(&format!("not confirmed within {CONFIRM_SECONDS} s")));
    assert_eq!(h.ns.state(), live, "links, addresses and routes are back");
    assert_eq!(files(h.root.path()), written, "files are back");

    // Confirming now is refused: there is nothing left to confirm.
    let (s, late) = h.api.post("/api/v1/host/changes/confirm", json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{late}");
    assert!(late["error"]["message"]
        .as_str()
        .unwrap()
        .contains("rolled back"));

    // A plan made before the host changed is refused, and changes nothing.
    let (_, stale) = h.plan(bridge_br0("192.0.2.30/24", "vd0 vd1")).await;
    ip(&[
        "-n",
        &h.ns.name,
        "addr",
        "add",
        "198.51.100.7/24",
        "dev",
        "vd1p",
    ]);
    let before_stale = h.ns.state();
    let (s, refused) = h.apply(&stale).await;
    assert_eq!(s, StatusCode::CONFLICT, "{refused}");
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap()
        .contains("changed since"));
    assert_eq!(h.ns.state(), before_stale);
    assert_eq!(files(h.root.path()), written);

    let admin = h.app.login("admin", ADMIN_PASSWORD).await.0;
    let audit = h.app.audit_text(&admin).await;
    for action in [
        "host.network.plan",
        "host.change.apply",
        "host.change.confirm",
        "host.network.rollback",
    ] {
        assert!(audit.contains(action), "{action} not audited");
    }
    assert!(audit.contains("not confirmed within"));
}

#[tokio::test]
async fn a_bond_without_the_bonding_driver_fails_and_leaves_nothing_behind() {
    let _gate = crate::gate::enter(module_path!());
    let h = host().await;
    let before = h.ns.state();
    let (s, plan) = h
        .plan(json!({
            "kind": "recipe", "members": "vd0 vd1", "bond_name": "bond0", "mode": "active-backup",
            "miimon_ms": "100", "primary": "vd0", "name": "br0", "forward_delay_s": "0",
            "ipv4": "static", "ipv4_address": "192.0.2.10/24", "ipv4_gateway": "192.0.2.1",
        }))
        .await;
    assert_eq!(s, StatusCode::OK, "{plan}");
    let (s, failed) = h.apply(&plan).await;
    if s == StatusCode::OK {
        // A kernel with bonding: the change works; roll it back and stop here.
        h.api.post("/api/v1/host/changes/rollback", json!({})).await;
        assert_eq!(h.ns.state(), before);
        return;
    }
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{failed}");
    let msg = failed["error"]["message"].as_str().unwrap();
    assert!(msg.contains("create bond bond0"), "{msg}");
    assert!(msg.contains("bonding"), "{msg}");
    assert!(msg.contains("undone"), "{msg}");
    assert_eq!(h.ns.state(), before, "live state untouched");
    assert!(files(h.root.path()).is_empty(), "no files left");
    let (_, p) = h.api.get("/api/v1/host/changes/pending").await;
    assert!(p["pending"].is_null());
    assert_eq!(p["last"]["result"], "failed");
    let (_, net) = h.api.get("/api/v1/host/network").await;
    assert_eq!(net["managed"]["bonds"], json!([]));
}

#[tokio::test]
async fn kernel_setting_in_the_namespace_is_applied_and_rolled_back() {
    let _gate = crate::gate::enter(module_path!());
    let h = host().await;
    let host_value = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let ns_value = || h.ns.exec(&["cat", "/proc/sys/net/ipv4/ip_forward"]);
    assert_eq!(ns_value().trim(), "0");

    let (s, bad) = h
        .api
        .post(
            "/api/v1/host/sysctl/plan",
            json!({"key": "net.ipv4.no_such_thing", "value": "1"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad["error"]["field"], "key");
    assert!(bad["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no setting"));
    let (s, ro) = h
        .api
        .post(
            "/api/v1/host/sysctl/plan",
            json!({"key": "kernel.version", "value": "1"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(ro["error"]["message"]
        .as_str()
        .unwrap()
        .contains("read-only"));

    let (s, plan) = h
        .api
        .post(
            "/api/v1/host/sysctl/plan",
            json!({"key": "net.ipv4.ip_forward", "value": "1"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{plan}");
    assert_eq!(plan["steps"][0], "set net.ipv4.ip_forward = 1 (now 0)");
    let (s, applied) = h.apply(&plan).await;
    assert_eq!(s, StatusCode::OK, "{applied}");
    assert_eq!(ns_value().trim(), "1");
    let conf = h.root.path().join("etc/sysctl.d/90-virtdeck.conf");
    assert!(std::fs::read_to_string(&conf)
        .unwrap()
        .contains("net.ipv4.ip_forward = 1\n"));
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host_value,
        "the host's own setting is untouched"
    );

    let (s, rb) = h.api.post("/api/v1/host/changes/rollback", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{rb}");
    assert_eq!(ns_value().trim(), "0");
    assert!(!conf.exists());
    let admin = h.app.login("admin", ADMIN_PASSWORD).await.0;
    let audit = h.app.audit_text(&admin).await;
    assert!(audit.contains("host.sysctl.plan"));
    assert!(audit.contains("host.change.rollback"));
}

#[tokio::test]
async fn only_admins_see_or_change_host_settings() {
    let _gate = crate::gate::enter(module_path!());
    let h = host().await;
    let admin = h.app.login("admin", ADMIN_PASSWORD).await.0;
    h.app
        .add_user(&admin, "olga", "operator", "operator-pass-1")
        .await;
    h.app
        .add_user(&admin, "vera", "viewer", "viewer-pass-11")
        .await;
    for (user, pw) in [("olga", "operator-pass-1"), ("vera", "viewer-pass-11")] {
        let (c, _) = h.app.login(user, pw).await;
        let host_page = c
            .get(h.app.url("/host"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            !host_page.contains("/host/network"),
            "no nav entry for {user}"
        );
        for path in [
            "/host/network",
            "/host/sysctl",
            "/host/changes/pending",
            "/host/export.sh",
        ] {
            let r = c.get(h.app.url(path)).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{user} GET {path}");
        }
        let csrf = h.app.csrf(&c, "/vms").await;
        let r = c
            .post(h.app.url("/host/network/plan"))
            .form(&[("csrf", csrf.as_str()), ("kind", "bridge"), ("name", "br9")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{user} plans");
    }
    // Without the CSRF token even an admin's form is refused.
    let r = admin
        .post(h.app.url("/host/network/plan"))
        .form(&[("kind", "bridge"), ("name", "br9")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let audit = h.app.audit_text(&admin).await;
    assert!(audit.contains("denied"));
    assert!(audit.contains("host.network.plan"));
    assert!(h.ns.has_link("vd0"));
}

#[tokio::test]
async fn pages_show_state_field_errors_plan_and_countdown() {
    let _gate = crate::gate::enter(module_path!());
    let h = host().await;
    let c = h.app.login("admin", ADMIN_PASSWORD).await.0;
    let page = c
        .get(h.app.url("/host/network"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(r#"data-link="vd0""#), "live links shown");
    assert!(page.contains("192.0.2.10/24"));
    // The recipe form is prefilled from the host: its cards, address and gateway.
    assert!(page.contains(r#"name="members" value="vd0 "#), "{page}");
    assert!(page.contains(r#"name="ipv4_gateway" value="192.0.2.1""#));

    let csrf = common::csrf_in(&page);
    let r = c
        .post(h.app.url("/host/network/plan"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("kind", "bridge"),
            ("name", "br-with-a-far-too-long-name"),
            ("ports", "vd0 nosuch0"),
            ("ipv4", "static"),
            ("ipv4_address", "192.0.2.10"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = r.text().await.unwrap();
    assert!(
        body.contains(r#"data-form="bridge" data-field="name""#),
        "{body}"
    );
    assert!(body.contains(r#"data-form="bridge" data-field="ipv4_address""#));
    assert!(
        body.contains(r#"value="br-with-a-far-too-long-name""#),
        "typed value kept"
    );

    let r = c
        .post(h.app.url("/host/network/plan"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("kind", "bridge"),
            ("name", "br0"),
            ("ports", "vd1"),
            ("forward_delay_s", "0"),
            ("ipv4", "off"),
            ("ipv6", "off"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let plan = r.text().await.unwrap();
    assert!(plan.contains("+Kind=bridge"), "diff shown");
    assert!(plan.contains("add vd1 to br0"), "live steps shown");
    let marker = r#"name="plan_id" value=""#;
    let start = plan.find(marker).unwrap() + marker.len();
    let plan_id = &plan[start..start + plan[start..].find('"').unwrap()];
    let r = c
        .post(h.app.url("/host/changes/apply"))
        .form(&[("csrf", csrf.as_str()), ("plan_id", plan_id)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let pending = c
        .get(h.app.url("/host/changes/pending"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(pending.contains(r#"id="countdown""#));
    assert!(pending.contains("/static/hostnet.js"));
    let r = c
        .post(h.app.url("/host/changes/confirm"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(h.ns.has_link("br0"));

    let script = c.get(h.app.url("/host/export.sh")).send().await.unwrap();
    assert_eq!(script.status(), StatusCode::OK);
    let script = script.text().await.unwrap();
    assert!(script.starts_with("#!/bin/sh\n"));
    assert!(script.contains("cat > '/etc/systemd/network/10-virtdeck-br0.netdev'"));
}

#[tokio::test]
async fn the_demo_host_shows_plans_but_never_applies_them_to_this_machine() {
    let _gate = crate::gate::enter(module_path!());
    // `--demo` as a new admin tries it: no network namespace configured.
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_path_buf();
    let app = spawn_app_with(move |c| {
        c.host.root = r;
        c.host.netns = None;
    })
    .await;
    let api = Api::new(&app).await;
    let forward_before = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let (s, plan) = api
        .post(
            "/api/v1/host/sysctl/plan",
            json!({"key": "net.ipv4.ip_forward", "value": if forward_before.trim() == "1" { "0" } else { "1" }}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{plan}");
    assert!(plan["plan"]["id"].is_string(), "the plan is shown: {plan}");
    let id = plan["plan"]["id"].as_str().unwrap();
    let (s, refused) = api
        .post(&format!("/api/v1/host/changes/{id}/apply"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{refused}");
    let m = refused["error"]["message"].as_str().unwrap();
    assert!(m.contains("demo host") && m.contains("not applied"), "{m}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        forward_before,
        "this machine's setting is untouched"
    );
    assert!(files(root.path()).is_empty(), "no file written");
    let (_, pending) = api.get("/api/v1/host/changes/pending").await;
    assert!(pending["pending"].is_null(), "{pending}");
}

/// The recipe form's IPv6 fields on the network page: (mode, address, gateway).
fn recipe_ipv6(page: &str) -> (String, String, String) {
    let start = page.find(r#"id="form-recipe""#).expect("recipe form");
    let form = &page[start..start + page[start..].find("</form>").unwrap()];
    let select = &form[form.find(r#"name="ipv6">"#).unwrap()..];
    let select = &select[..select.find("</select>").unwrap()];
    let mode = select
        .split("<option")
        .find(|o| o.starts_with(" selected>"))
        .map(|o| {
            o.trim_start_matches(" selected>")
                .trim_end_matches("</option>")
        })
        .unwrap_or("")
        .to_string();
    let value = |name: &str| {
        let marker = format!(r#"name="{name}" value=""#);
        let at = form.find(&marker).unwrap() + marker.len();
        form[at..at + form[at..].find('"').unwrap()].to_string()
    };
    (mode, value("ipv6_address"), value("ipv6_gateway"))
}

#[tokio::test]
async fn recipe_carries_the_hosts_ipv6_and_the_plan_warns_before_losing_it() {
    let _gate = crate::gate::enter(module_path!());
    let h = host().await;
    // vd0 is dual-stack: an address set by hand and the IPv6 default route (inside the
    // test's namespace, so this machine's own addresses play no part).
    let ns = h.ns.name.as_str();
    h.ns.exec(&["sysctl", "-qw", "net.ipv6.conf.vd0.disable_ipv6=0"]);
    ip(&[
        "-n",
        ns,
        "addr",
        "add",
        "2001:db8::10/64",
        "dev",
        "vd0",
        "nodad",
    ]);
    ip(&[
        "-n",
        ns,
        "-6",
        "route",
        "add",
        "default",
        "via",
        "2001:db8::1",
        "dev",
        "vd0",
    ]);
    let c = h.app.login("admin", ADMIN_PASSWORD).await.0;
    let network = || async {
        c.get(h.app.url("/host/network"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let page = network().await;
    assert_eq!(
        recipe_ipv6(&page),
        (
            "static".to_string(),
            "2001:db8::10/64".to_string(),
            "2001:db8::1".to_string()
        ),
        "the recipe carries the host's IPv6 over to the bridge"
    );

    // The recipe as offered keeps IPv6: no warning.
    let recipe = |ipv6: &str| {
        json!({
            "kind": "recipe", "members": "vd0", "name": "br0", "forward_delay_s": "0",
            "ipv4": "static", "ipv4_address": "192.0.2.10/24", "ipv4_gateway": "192.0.2.1",
            "ipv6": ipv6, "ipv6_address": "2001:db8::10/64", "ipv6_gateway": "2001:db8::1",
        })
    };
    let (s, plan) = h.plan(recipe("static")).await;
    assert_eq!(s, StatusCode::OK, "{plan}");
    assert_eq!(plan["plan"]["warnings"], json!([]), "{plan}");
    // IPv6 off: the plan names what is lost, in the API and above Apply on the page.
    let (s, plan) = h.plan(recipe("off")).await;
    assert_eq!(s, StatusCode::OK, "{plan}");
    let warnings: Vec<&str> = plan["plan"]["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w.as_str())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("IPv6 address 2001:db8::10/64 on vd0 will be lost")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("IPv6 default route via 2001:db8::1 on vd0 will be lost")),
        "{warnings:?}"
    );
    let csrf = common::csrf_in(&page);
    let r = c
        .post(h.app.url("/host/network/plan"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("kind", "recipe"),
            ("members", "vd0"),
            ("name", "br0"),
            ("forward_delay_s", "0"),
            ("ipv4", "static"),
            ("ipv4_address", "192.0.2.10/24"),
            ("ipv4_gateway", "192.0.2.1"),
            ("ipv6", "off"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let shown = r.text().await.unwrap();
    let warned = shown.find(r#"id="plan-warnings""#).expect("warnings shown");
    let apply = shown.find(r#"id="apply-form""#).expect("apply form");
    assert!(warned < apply, "the warning comes before Apply");
    assert!(shown[warned..apply].contains("IPv6 address 2001:db8::10/64 on vd0 will be lost"));
    assert!(shown.contains(r#"<section class="warning" role="alert" id="plan-warnings">"#));

    // An address from router advertisements (a lifetime, no `permanent` flag): auto.
    ip(&[
        "-n",
        ns,
        "-6",
        "route",
        "del",
        "default",
        "via",
        "2001:db8::1",
        "dev",
        "vd0",
    ]);
    ip(&["-n", ns, "addr", "del", "2001:db8::10/64", "dev", "vd0"]);
    ip(&[
        "-n",
        ns,
        "addr",
        "add",
        "2001:db8::5054:ff:fe00:1/64",
        "dev",
        "vd0",
        "nodad",
        "valid_lft",
        "3600",
        "preferred_lft",
        "1800",
    ]);
    let (mode, address, _) = recipe_ipv6(&network().await);
    assert_eq!((mode.as_str(), address.as_str()), ("auto", ""));
}
