//! Consoles against hostile or careless use, over real HTTP and websockets on a real tiny
//! guest (qemu:///system, TCG): an Origin with the wrong scheme, one user minting
//! tickets without end, viewers holding every place, viewers' dropped input keeping a
//! console open, consoles outliving the credential that opened them (user deleted,
//! signed out, token revoked, role lowered), a browser that stops reading a flooding
//! serial console, and thumbnails asked for VMs that do not exist.
//!
//! `make test` installs libvirt and QEMU, starts the daemons and builds the tiny guest;
//! these tests fail (they do not skip) when any of that is missing.

use crate::common;
use crate::console_support;

use console_support::*;
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode as Http;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::Message;

/// The tests here share the real host's CPU; one guest at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The close frame's code and reason, skipping other messages, within `within`.
async fn close_frame(ws: &mut Ws, within: Duration) -> Option<(u16, String)> {
    tokio::time::timeout(within, async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Close(Some(c))) => {
                    return Some((u16::from(c.code), c.reason.to_string()))
                }
                Ok(Message::Close(None)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

fn as_user(app: &App, user: &User) -> Upgrade<'static> {
    Upgrade {
        cookie: Some(user.cookie(app)),
        bearer: None,
        origin: Some(app.origin()),
    }
}

/// Opens a console websocket that must be accepted.
async fn open(app: &App, user: &User, vm: &str, kind: &str) -> Ws {
    let path = app.ticket(user, vm, kind).await;
    connect(&app.ws_url(&path), as_user(app, user))
        .await
        .unwrap_or_else(|s| panic!("{kind} websocket refused: {s}"))
}

/// The `console.close` audit rows about `vm`.
fn close_rows(app: &App, vm: &str) -> Vec<virtdeck::store::AuditEntry> {
    app.state
        .store
        .audit_for_target(vm, 500)
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "console.close")
        .collect()
}

/// Waits until the app has no console session open.
async fn no_sessions_within(app: &App, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if app.state.consoles.sessions.is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The RFB client handshake (3.8, no security, shared) as a browser sends it.
fn rfb_client_hello() -> Vec<u8> {
    let mut v = b"RFB 003.008\n".to_vec();
    v.push(1);
    v.push(1);
    v
}

#[tokio::test]
async fn origins_tickets_and_places_cannot_be_abused() {
    let _gate = crate::gate::enter(module_path!());
    let _one = ONE_AT_A_TIME.lock().await;
    let guest = Guest::new(true);
    let app = spawn_app(|c| {
        c.console.max_sessions_per_vm = 2;
        c.console.viewers_may_watch = true;
    })
    .await;
    let admin = app.setup_admin().await;
    let olga = app.add_user(&admin, "olga", "operator").await;
    let oscar = app.add_user(&admin, "oscar", "operator").await;
    let vera = app.add_user(&admin, "vera", "viewer").await;
    let vic = app.add_user(&admin, "vic", "viewer").await;
    guest.wait_ready().await;
    let vm = guest.name.as_str();

    // ---- the Origin's scheme counts: http://HOST is not https://HOST ----
    let path = app.ticket(&olga, vm, "vnc").await;
    let wrong_scheme = app.origin().replacen("http://", "https://", 1);
    let refused = connect(
        &app.ws_url(&path),
        Upgrade {
            origin: Some(wrong_scheme.clone()),
            ..as_user(&app, &olga)
        },
    )
    .await;
    assert_eq!(
        refused.err(),
        Some(StatusCode::FORBIDDEN),
        "{wrong_scheme} is another origin than {}",
        app.origin()
    );
    // A forwarded scheme from a client that is no trusted proxy changes nothing.
    let path = app.ticket(&olga, vm, "vnc").await;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        app.ws_url(&path),
    )
    .unwrap();
    let h = req.headers_mut();
    h.insert("sec-websocket-protocol", "binary".parse().unwrap());
    h.insert("cookie", olga.cookie(&app).parse().unwrap());
    h.insert("origin", wrong_scheme.parse().unwrap());
    h.insert("x-forwarded-proto", "https".parse().unwrap());
    h.insert("forwarded", "proto=https".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), StatusCode::FORBIDDEN)
        }
        other => panic!(
            "an untrusted X-Forwarded-Proto was believed: {:?}",
            other.map(|_| ())
        ),
    }
    // The right origin still works.
    let path = app.ticket(&olga, vm, "vnc").await;
    drop(
        connect(&app.ws_url(&path), as_user(&app, &olga))
            .await
            .expect("same scheme, host and port"),
    );
    assert!(no_sessions_within(&app, Duration::from_secs(10)).await);

    // ---- one user cannot fill the ticket table ----
    for n in 0..20 {
        let (s, v) = app.mint(&oscar, vm, "vnc", false).await;
        assert_eq!(s, Http::OK, "ticket {n}: {v}");
    }
    let (s, v) = app.mint(&oscar, vm, "vnc", false).await;
    assert_eq!(s, Http::TOO_MANY_REQUESTS, "the 21st pending ticket: {v}");
    let message = v.to_string();
    assert!(
        message.contains("20 console tickets waiting") && message.contains("try again"),
        "{message}"
    );
    let (s, v) = app.mint(&olga, vm, "vnc", false).await;
    assert_eq!(s, Http::OK, "another user still gets a ticket: {v}");

    // ---- viewers holding places never keep an operator out ----
    let mut watchers = Vec::new();
    for viewer in [&vera, &vic] {
        let (s, v) = app.mint(viewer, vm, "vnc", false).await;
        assert_eq!(s, Http::OK, "{v}");
        assert_eq!(v["view_only"], true);
        let ws = connect(
            &app.ws_url(v["websocket"].as_str().unwrap()),
            as_user(&app, viewer),
        )
        .await
        .expect("a viewer watches");
        watchers.push(ws);
    }
    assert_eq!(app.state.consoles.sessions.len(), 2);
    let mut operator = open(&app, &olga, vm, "vnc").await;
    let (s, v) = app.mint(&admin, vm, "serial", false).await;
    assert_eq!(s, Http::OK, "a second operator too (2 places): {v}");
    drop(v);
    let greeting = tokio::time::timeout(Duration::from_secs(10), operator.next())
        .await
        .expect("the VNC server greets the operator");
    assert!(
        matches!(&greeting, Some(Ok(Message::Binary(b))) if b.starts_with(b"RFB 003.")),
        "{greeting:?}"
    );
    drop(operator);
    drop(watchers);
    assert!(no_sessions_within(&app, Duration::from_secs(10)).await);
}

#[tokio::test]
async fn a_viewers_dropped_input_does_not_keep_the_console_open() {
    let _gate = crate::gate::enter(module_path!());
    let _one = ONE_AT_A_TIME.lock().await;
    let guest = Guest::new(true);
    let app = spawn_app(|c| {
        c.console.viewers_may_watch = true;
        c.console.idle_timeout_seconds = 3;
    })
    .await;
    let admin = app.setup_admin().await;
    let vera = app.add_user(&admin, "vera", "viewer").await;
    guest.wait_ready().await;
    let vm = guest.name.as_str();

    let mut ws = open(&app, &vera, vm, "vnc").await;
    ws.send(Message::Binary(rfb_client_hello().into()))
        .await
        .unwrap();
    // Key presses every half second: all dropped by virtdeck (view only).
    let (mut sink, mut stream) = ws.split();
    let typing = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let key = vec![4u8, 1, 0, 0, 0, 0, 0xff, 0x0d];
            if sink.send(Message::Binary(key.into())).await.is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(m) = stream.next().await {
            if let Ok(Message::Close(Some(c))) = m {
                return Some((u16::from(c.code), c.reason.to_string()));
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    typing.abort();
    let closed = closed.expect("the viewer's console closes for inactivity");
    assert_eq!(closed.0, 4003, "{closed:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn consoles_close_when_the_access_that_opened_them_ends() {
    let _gate = crate::gate::enter(module_path!());
    let _one = ONE_AT_A_TIME.lock().await;
    let guest = Guest::new(true);
    let app = spawn_app(|c| {
        c.console.max_sessions_per_vm = 8;
        c.console.credential_check_seconds = 1;
    })
    .await;
    let admin = app.setup_admin().await;
    let carol = app.add_user(&admin, "carol", "operator").await;
    let dave = app.add_user(&admin, "dave", "operator").await;
    let erin = app.add_user(&admin, "erin", "operator").await;
    let token = app.admin_token(&admin).await;
    guest.wait_ready().await;
    let vm = guest.name.as_str();

    // ---- the admin deletes a user: their console closes, with the reason ----
    let mut ws = open(&app, &carol, vm, "vnc").await;
    let r = admin
        .http
        .post(app.url("/users/carol/delete"))
        .form(&[("csrf", admin.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), Http::SEE_OTHER);
    let closed = close_frame(&mut ws, Duration::from_secs(10))
        .await
        .expect("carol's console is closed");
    assert_eq!(closed.0, 4004, "{closed:?}");
    assert!(closed.1.contains("account was deleted"), "{closed:?}");

    // ---- a user signs out: the consoles of that sign-in close ----
    let mut ws = open(&app, &dave, vm, "serial").await;
    let r = dave
        .http
        .post(app.url("/logout"))
        .form(&[("csrf", dave.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), Http::SEE_OTHER);
    let closed = close_frame(&mut ws, Duration::from_secs(10))
        .await
        .expect("dave's console is closed");
    assert!(closed.1.contains("signed out"), "{closed:?}");

    // ---- an API token is revoked: consoles opened with it close ----
    let api = common::real::bearer_client(&token);
    let t: serde_json::Value = api
        .post(app.url(&format!("/api/v1/vms/{vm}/console/vnc")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut ws = connect(
        &app.ws_url(t["websocket"].as_str().expect("a ticket")),
        Upgrade {
            cookie: None,
            bearer: Some(&token),
            origin: None,
        },
    )
    .await
    .expect("a console opened with the API token");
    let mut by_session = open(&app, &admin, vm, "vnc").await;
    let id = app.state.store.list_api_tokens().unwrap()[0].id;
    let r = admin
        .http
        .post(app.url(&format!("/tokens/{id}/delete")))
        .form(&[("csrf", admin.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), Http::SEE_OTHER);
    let closed = close_frame(&mut ws, Duration::from_secs(10))
        .await
        .expect("the token's console is closed");
    assert!(closed.1.contains("API token"), "{closed:?}");
    // The admin's own sign-in session is not that token: its console stays.
    let still = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match by_session.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return false,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(still.is_err(), "the admin's session console was closed too");
    drop(by_session);

    // ---- a role is lowered (here in the database, as a shell tool would) ----
    let mut ws = open(&app, &erin, vm, "vnc").await;
    let db = rusqlite::Connection::open(app.state.cfg.database_path()).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.execute(
        "UPDATE users SET role = 'viewer' WHERE username = 'erin'",
        [],
    )
    .unwrap();
    let closed = close_frame(&mut ws, Duration::from_secs(10))
        .await
        .expect("erin's console is closed within the re-check period");
    assert!(closed.1.contains("role is now viewer"), "{closed:?}");

    // ---- each forced close is in the audit log once, with why ----
    assert!(no_sessions_within(&app, Duration::from_secs(10)).await);
    let rows = close_rows(&app, vm);
    let details: Vec<_> = rows
        .iter()
        .map(|e| format!("{} {}", e.actor, e.detail))
        .collect();
    assert_eq!(rows.len(), 4, "{details:#?}");
    for (who, why) in [
        ("admin", "carol closed: Your account was deleted by admin"),
        ("dave", "dave closed: You signed out"),
        ("admin", "admin closed: The API token"),
        ("virtdeck", "erin closed: Your role is now viewer"),
    ] {
        assert!(
            rows.iter()
                .any(|e| e.actor == who && e.detail.contains(why)),
            "no console.close row by {who} with {why:?}: {details:#?}"
        );
    }
}

/// This process's resident memory (the app runs in it).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS in kB");
    kib * 1024
}

#[tokio::test]
async fn a_browser_that_stops_reading_a_flooding_serial_console_is_closed() {
    let _gate = crate::gate::enter(module_path!());
    let _one = ONE_AT_A_TIME.lock().await;
    let guest = Guest::new(true);
    let app = spawn_app(|c| {
        c.console.idle_timeout_seconds = 8;
        c.console.stalled_seconds = 60;
    })
    .await;
    let admin = app.setup_admin().await;
    guest.wait_ready().await;
    let vm = guest.name.as_str();

    // The shell answers first.
    let mut ws = open(&app, &admin, vm, "serial").await;
    let marker = unique("ready-");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        ws.send(Message::Binary(
            format!("echo {marker}\r").into_bytes().into(),
        ))
        .await
        .unwrap();
        let seen = read_serial_until(&mut ws, Duration::from_secs(5), |t| {
            has_output_line(t, &marker)
        })
        .await;
        if has_output_line(&seen, &marker) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the guest's shell never answered"
        );
    }

    // The guest floods its console; the browser stops reading (but its connection
    // stays open) and types nothing more.
    let before = rss_bytes();
    ws.send(Message::Binary(
        b"timeout 12 yes virtdeck-flood-line\r".to_vec().into(),
    ))
    .await
    .unwrap();
    let started = Instant::now();
    let mut peak = before;
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(40) {
        peak = peak.max(rss_bytes());
        if app.state.consoles.sessions.is_empty() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        closed,
        "the idle timeout (8 s) never closed the console while its browser did not read"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "closed only after {:?}",
        started.elapsed()
    );
    let growth = peak.saturating_sub(before);
    assert!(
        growth < 64 * 1024 * 1024,
        "virtdeck's memory grew by {} MiB while the browser did not read",
        growth / (1024 * 1024)
    );
    let ended = app
        .state
        .store
        .audit_for_target(vm, 50)
        .unwrap()
        .into_iter()
        .find(|e| e.action == "console.serial" && e.result == "closed")
        .expect("the session's end is audited");
    assert!(ended.detail.contains("without input"), "{}", ended.detail);
    drop(ws);

    // The console is usable again, while the flood goes on and after it.
    let mut ws = open(&app, &admin, vm, "serial").await;
    let marker = unique("again-");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        ws.send(Message::Binary(
            format!("echo {marker}\r").into_bytes().into(),
        ))
        .await
        .unwrap();
        let seen = read_serial_until(&mut ws, Duration::from_secs(5), |t| {
            has_output_line(t, &marker)
        })
        .await;
        if has_output_line(&seen, &marker) {
            break;
        }
        assert!(Instant::now() < deadline, "the console did not come back");
    }
}

#[tokio::test]
async fn a_serial_console_read_slowly_pauses_the_guest_and_resumes() {
    let _gate = crate::gate::enter(module_path!());
    let _one = ONE_AT_A_TIME.lock().await;
    let guest = Guest::new(true);
    let app = spawn_app(|_| {}).await;
    let admin = app.setup_admin().await;
    guest.wait_ready().await;
    let vm = guest.name.as_str();
    let mut ws = open(&app, &admin, vm, "serial").await;
    ws.send(Message::Binary(
        b"timeout 20 yes virtdeck-flood-line\r".to_vec().into(),
    ))
    .await
    .unwrap();
    // Not reading for a while fills every buffer on the way; the guest waits.
    tokio::time::sleep(Duration::from_secs(8)).await;
    // Reading again: output flows again (a reader left paused would show nothing more).
    // About 50 KiB/s come out of the guest's serial port: 40,000 lines (800 KB) are far
    // more than it printed while nobody read.
    let text = read_serial_until(&mut ws, Duration::from_secs(40), |t| {
        t.matches("virtdeck-flood-line").count() > 40_000
    })
    .await;
    assert!(
        text.matches("virtdeck-flood-line").count() > 40_000,
        "output did not resume: {} bytes",
        text.len()
    );
}

#[tokio::test]
async fn thumbnails_of_vms_that_do_not_exist_are_not_kept() {
    let _gate = crate::gate::enter(module_path!());
    let _one = ONE_AT_A_TIME.lock().await;
    let app = spawn_app(|c| c.libvirt_uri = "test:///default".into()).await;
    let admin = app.setup_admin().await;
    for n in 0..40 {
        let r = admin
            .http
            .get(app.url(&format!("/vms/no-such-vm-{n}/screenshot")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), Http::NO_CONTENT);
    }
    // The demo host's VM exists: it may be kept (without a picture).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = admin
            .http
            .get(app.url("/vms/test/screenshot"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), Http::NO_CONTENT, "no picture on the demo host");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let kept = app.state.consoles.thumbs.len();
        if kept == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{kept} thumbnail entries for 1 existing VM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
