//! Consoles through virtdeck's own port, on a real tiny guest (qemu:///system, TCG):
//! a VNC client completes the RFB handshake through the websocket and receives the
//! guest's screen; a serial session runs a command; and every way of reaching a console
//! without the right ticket, session, origin, role or VM state is refused before a
//! single byte reaches the VM.
//!
//! `make test` installs libvirt and QEMU, starts the daemons and builds the tiny guest;
//! these tests fail (they do not skip) when any of that is missing.

use crate::console_support;

use console_support::*;
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode as Http;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::Message;
use vnc::{PixelFormat, VncConnector, VncEncoding, VncEvent, X11Event};

/// The tests here share the real host's CPU; one guest at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Through the websocket: the RFB handshake, then updates until the whole screen has
/// arrived. Returns (width, height, pixels as BGRA).
async fn vnc_framebuffer(ws: Ws) -> (u16, u16, Vec<u8>) {
    let stream = ws_as_stream(ws);
    let vnc = VncConnector::new(stream)
        .set_auth_method(async move { Ok(String::new()) })
        .add_encoding(VncEncoding::Raw)
        .allow_shared(true)
        .set_pixel_format(PixelFormat::bgra())
        .build()
        .expect("VNC connector")
        .try_start()
        .await
        .expect("RFB handshake through virtdeck's websocket")
        .finish()
        .expect("VNC client");
    let mut size = None;
    let mut fb = Vec::new();
    let mut covered = 0usize;
    let mut nonblack = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    vnc.input(X11Event::FullRefresh).await.unwrap();
    loop {
        assert!(
            Instant::now() < deadline,
            "no full non-blank framebuffer within 60 s (size {size:?}, {covered} pixels)"
        );
        let ev = tokio::time::timeout(Duration::from_secs(5), vnc.recv_event()).await;
        let ev = match ev {
            Ok(ev) => ev.expect("VNC event"),
            Err(_) => {
                vnc.input(X11Event::FullRefresh).await.unwrap();
                continue;
            }
        };
        match ev {
            VncEvent::SetResolution(s) => {
                size = Some((s.width, s.height));
                fb = vec![0u8; s.width as usize * s.height as usize * 4];
                covered = 0;
            }
            VncEvent::RawImage(r, data) => {
                let (w, _h) = size.expect("resolution before pixels");
                for row in 0..r.height as usize {
                    let src = row * r.width as usize * 4;
                    let dst = ((r.y as usize + row) * w as usize + r.x as usize) * 4;
                    let len = r.width as usize * 4;
                    if src + len <= data.len() && dst + len <= fb.len() {
                        fb[dst..dst + len].copy_from_slice(&data[src..src + len]);
                    }
                }
                covered += r.width as usize * r.height as usize;
                nonblack = fb.chunks(4).any(|p| p[0] > 64 || p[1] > 64 || p[2] > 64);
            }
            _ => {}
        }
        if let Some((w, h)) = size {
            if covered >= w as usize * h as usize && nonblack {
                let _ = vnc.close().await;
                return (w, h, fb);
            }
            if covered >= w as usize * h as usize {
                // The whole screen, but still black: the guest has not drawn yet.
                tokio::time::sleep(Duration::from_millis(500)).await;
                covered = 0;
                vnc.input(X11Event::FullRefresh).await.unwrap();
            }
        }
    }
}

/// The guest's screen size as QEMU's VGA has it (from the libvirt screenshot).
fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    if png.len() > 24 && png.starts_with(b"\x89PNG") {
        let w = u32::from_be_bytes(png[16..20].try_into().ok()?);
        let h = u32::from_be_bytes(png[20..24].try_into().ok()?);
        Some((w, h))
    } else {
        None
    }
}

async fn serial_echo(ws: &mut Ws) {
    let marker = unique("marker-");
    // Output appears once the shell has run the command: the command line itself
    // reads "echo marker-…", the output line is exactly the marker.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = String::new();
    while Instant::now() < deadline {
        ws.send(Message::Binary(
            format!("echo {marker}\r").into_bytes().into(),
        ))
        .await
        .unwrap();
        seen.push_str(
            &read_serial_until(ws, Duration::from_secs(5), |t| has_output_line(t, &marker)).await,
        );
        if has_output_line(&seen, &marker) {
            return;
        }
    }
    panic!("the marker never came back from the serial console; output:\n{seen}");
}

#[tokio::test]
async fn vnc_and_serial_reach_a_real_guest_only_through_checked_tickets() {
    let _gate = crate::gate::enter(module_path!());
    let _one = ONE_AT_A_TIME.lock().await;
    let guest = Guest::new(true);
    let off = Guest::new(false);
    let app = spawn_app(|c| {
        c.console.ticket_lifetime_seconds = 2;
        c.console.max_sessions_per_vm = 3;
    })
    .await;
    let admin = app.setup_admin().await;
    let operator = app.add_user(&admin, "olga", "operator").await;
    let viewer = app.add_user(&admin, "victor", "viewer").await;
    let token = app.admin_token(&admin).await;
    let stats = app.state.consoles.stats.clone();
    guest.wait_ready().await;
    let vm = guest.name.as_str();
    let as_admin = || Upgrade {
        cookie: Some(admin.cookie(&app)),
        bearer: None,
        origin: Some(app.origin()),
    };

    // ---- (1) VNC: handshake and a full, non-blank framebuffer of the guest's size ----
    let vnc_path = app.ticket(&admin, vm, "vnc").await;
    let ws = connect(&app.ws_url(&vnc_path), as_admin())
        .await
        .expect("VNC websocket accepted");
    let (w, h, fb) = vnc_framebuffer(ws).await;
    let shot = app.state.hv.screenshot(vm).expect("libvirt screenshot");
    assert_eq!(shot.mime, "image/png", "QEMU 10 screenshots are PNG");
    let (sw, sh) = png_size(&shot.bytes).expect("PNG header");
    assert_eq!(
        (w as u32, h as u32),
        (sw, sh),
        "framebuffer has the guest's size"
    );
    let lit = fb
        .chunks(4)
        .filter(|p| p[..3].iter().any(|c| *c > 64))
        .count();
    assert!(
        lit > 100,
        "the guest's boot text is on screen ({lit} lit pixels)"
    );
    assert!(stats.sessions_opened() >= 1 && stats.bytes_from_vm() > 0);

    // ---- the VM list: a small cached picture of the running VM's screen ----
    let list = admin
        .http
        .get(app.url("/vms"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        list.contains(&format!("data-src=\"/vms/{vm}/screenshot\"")),
        "thumbnail on the VM list"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let thumb = loop {
        let started = Instant::now();
        let r = admin
            .http
            .get(app.url(&format!("/vms/{vm}/screenshot")))
            .send()
            .await
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the thumbnail answer does not wait for libvirt"
        );
        if r.status() == Http::OK {
            assert_eq!(r.headers()["content-type"], "image/png");
            break r.bytes().await.unwrap();
        }
        assert_eq!(r.status(), Http::NO_CONTENT, "no picture yet");
        assert!(Instant::now() < deadline, "no thumbnail within 30 s");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let (tw, th) = png_size(&thumb).expect("a PNG thumbnail");
    assert!(
        tw <= 320 && th <= 240 && tw > 0,
        "thumbnail is small: {tw}x{th}"
    );
    let (s, _) = {
        let r = viewer
            .http
            .get(app.url(&format!("/vms/{vm}/screenshot")))
            .send()
            .await
            .unwrap();
        (r.status(), ())
    };
    assert_eq!(
        s,
        Http::FORBIDDEN,
        "viewers do not see screens unless allowed"
    );

    // ---- (1) serial: a command and its output, through libvirt's console stream ----
    let serial_path = app.ticket(&operator, vm, "serial").await;
    let mut ws = connect(
        &app.ws_url(&serial_path),
        Upgrade {
            cookie: Some(operator.cookie(&app)),
            bearer: None,
            origin: Some(app.origin()),
        },
    )
    .await
    .expect("serial websocket accepted");
    serial_echo(&mut ws).await;

    // Held by olga: admin is told so, and may take it over.
    let (s, v) = app.mint(&admin, vm, "serial", false).await;
    assert_eq!(s, Http::CONFLICT, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("in use by olga"), "{msg}");
    let (s, v) = app.mint(&admin, vm, "serial", true).await;
    assert_eq!(s, Http::OK, "{v}");
    let mut taken = connect(&app.ws_url(v["websocket"].as_str().unwrap()), as_admin())
        .await
        .expect("take-over accepted");
    // olga's session ends, saying who took it.
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        use futures_util::StreamExt;
        while let Some(m) = ws.next().await {
            if let Ok(Message::Close(Some(c))) = m {
                return c.reason.to_string();
            }
        }
        String::new()
    })
    .await
    .expect("olga's console closes");
    assert!(end.contains("admin took over"), "{end}");
    serial_echo(&mut taken).await;
    drop(taken);

    // ---- API clients: a Bearer token mints a ticket and uses the same websocket ----
    let api = reqwest::Client::new();
    let r = api
        .post(app.url(&format!("/api/v1/vms/{vm}/console/serial")))
        .bearer_auth(&token)
        .json(&serde_json::json!({"force": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), Http::OK);
    let v: serde_json::Value = r.json().await.unwrap();
    let mut ws = connect(
        &app.ws_url(v["websocket"].as_str().unwrap()),
        Upgrade {
            cookie: None,
            bearer: Some(&token),
            origin: None,
        },
    )
    .await
    .expect("a script with a Bearer token attaches without an Origin");
    serial_echo(&mut ws).await;
    drop(ws);

    // ---- (2) refusals: nothing reaches the VM ----
    tokio::time::sleep(Duration::from_millis(500)).await;
    let opened = stats.sessions_opened();
    let to_vm = stats.bytes_to_vm();
    let refused = |r: Result<Ws, StatusCode>, what: &str| match r {
        Ok(_) => panic!("{what}: the websocket was accepted"),
        Err(s) => assert!(
            s == StatusCode::FORBIDDEN
                || s == StatusCode::CONFLICT
                || s == StatusCode::NOT_FOUND
                || s == StatusCode::SEE_OTHER,
            "{what}: refused with {s}"
        ),
    };
    let ws_path = |kind: &str| format!("/vms/{vm}/console/{kind}/ws");

    // No ticket.
    refused(
        connect(&app.ws_url(&ws_path("vnc")), as_admin()).await,
        "no ticket",
    );
    // A used ticket.
    refused(
        connect(&app.ws_url(&vnc_path), as_admin()).await,
        "reused ticket",
    );
    // An expired ticket (the lifetime is 2 s here).
    let p = app.ticket(&admin, vm, "vnc").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    refused(connect(&app.ws_url(&p), as_admin()).await, "expired ticket");
    // A ticket for another VM, or another kind.
    let p = app.ticket(&admin, vm, "vnc").await;
    let other = p.replace(&format!("/vms/{vm}/"), &format!("/vms/{}/", off.name));
    refused(connect(&app.ws_url(&other), as_admin()).await, "other VM");
    let p = app.ticket(&admin, vm, "serial").await;
    refused(
        connect(&app.ws_url(&p.replace("/serial/", "/vnc/")), as_admin()).await,
        "other kind",
    );
    // A foreign Origin, and none at all from a browser session.
    let p = app.ticket(&admin, vm, "vnc").await;
    let mut evil = as_admin();
    evil.origin = Some("https://evil.example".into());
    refused(connect(&app.ws_url(&p), evil).await, "foreign origin");
    let p = app.ticket(&admin, vm, "vnc").await;
    let mut bare = as_admin();
    bare.origin = None;
    refused(connect(&app.ws_url(&p), bare).await, "missing origin");
    // Someone else's ticket (another session), and a Bearer ticket used with a cookie.
    let p = app.ticket(&admin, vm, "vnc").await;
    refused(
        connect(
            &app.ws_url(&p),
            Upgrade {
                cookie: Some(operator.cookie(&app)),
                bearer: None,
                origin: Some(app.origin()),
            },
        )
        .await,
        "another session's ticket",
    );
    // The viewer role: no ticket, and no use of an operator's.
    let (s, v) = app.mint(&viewer, vm, "vnc", false).await;
    assert_eq!(s, Http::FORBIDDEN, "viewer mints: {v}");
    let p = app.ticket(&operator, vm, "vnc").await;
    refused(
        connect(
            &app.ws_url(&p),
            Upgrade {
                cookie: Some(viewer.cookie(&app)),
                bearer: None,
                origin: Some(app.origin()),
            },
        )
        .await,
        "viewer with an operator's ticket",
    );
    // No session at all.
    let p = app.ticket(&admin, vm, "vnc").await;
    refused(
        connect(
            &app.ws_url(&p),
            Upgrade {
                cookie: None,
                bearer: None,
                origin: Some(app.origin()),
            },
        )
        .await,
        "no session",
    );
    // A VM that is off: no ticket; and a ticket minted before it stopped is refused.
    let (s, v) = app.mint(&admin, &off.name, "vnc", false).await;
    assert_eq!(s, Http::CONFLICT, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("shut off"),
        "{v}"
    );
    let p = app.ticket(&admin, vm, "vnc").await;
    let out = virsh(&["destroy", vm]);
    assert!(out.status.success());
    refused(connect(&app.ws_url(&p), as_admin()).await, "VM off");

    assert_eq!(
        stats.sessions_opened(),
        opened,
        "no refused session was opened"
    );
    assert_eq!(stats.bytes_to_vm(), to_vm, "no byte reached the VM");

    // ---- limits, on a second virtdeck: one session per VM, 2 s idle timeout ----
    // (on a guest of its own: the first one was just forced off)
    let second = Guest::new(true);
    let strict = spawn_app(|c| {
        c.console.max_sessions_per_vm = 1;
        c.console.idle_timeout_seconds = 2;
    })
    .await;
    let boss = strict.setup_admin().await;
    second.wait_ready().await;
    let vm2 = second.name.as_str();
    let p = strict.ticket(&boss, vm2, "serial").await;
    let mut ws = connect(
        &strict.ws_url(&p),
        Upgrade {
            cookie: Some(boss.cookie(&strict)),
            bearer: None,
            origin: Some(strict.origin()),
        },
    )
    .await
    .expect("the one allowed session");
    let (s, v) = strict.mint(&boss, vm2, "vnc", false).await;
    assert_eq!(s, Http::CONFLICT, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("most allowed"),
        "{v}"
    );
    let closed = close_frame(&mut ws).await.expect("closed for inactivity");
    assert_eq!(closed.0, 4003, "{closed:?}");
    assert!(closed.1.contains("without input"), "{closed:?}");

    // ---- the VM stops under an open graphical console: the browser is told why ----
    tokio::time::sleep(Duration::from_millis(500)).await;
    let p = strict.ticket(&boss, vm2, "vnc").await;
    let mut ws = connect(
        &strict.ws_url(&p),
        Upgrade {
            cookie: Some(boss.cookie(&strict)),
            bearer: None,
            origin: Some(strict.origin()),
        },
    )
    .await
    .expect("a graphical console session");
    let first = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("the VNC server greets");
    assert!(
        matches!(&first, Some(Ok(Message::Binary(b))) if b.starts_with(b"RFB 003.")),
        "{first:?}"
    );
    assert!(virsh(&["destroy", vm2]).status.success());
    let closed = close_frame(&mut ws)
        .await
        .expect("closed when the VM stopped");
    assert_eq!(closed.0, 4001, "{closed:?}");
    assert!(closed.1.contains("VM stopped"), "{closed:?}");
    drop(strict);

    // ---- the audit log: every session with user, VM, kind, start and duration ----
    tokio::time::sleep(Duration::from_millis(500)).await;
    let audit = admin
        .http
        .get(app.url("/audit"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "console.vnc",
        "console.serial",
        "graphical console session started",
        "serial console session started",
        "lasted",
        "olga",
        "denied",
    ] {
        assert!(audit.contains(needle), "audit log lacks {needle:?}");
    }
    assert!(app.state.consoles.sessions.is_empty(), "all sessions ended");
}

#[tokio::test]
async fn the_demo_host_says_consoles_are_not_available() {
    let _gate = crate::gate::enter(module_path!());
    let data_dir = tempfile::tempdir().unwrap();
    let mut cfg = virtdeck::config::Config {
        listen: "127.0.0.1:0".into(),
        data_dir: data_dir.path().to_path_buf(),
        demo: true,
        ..Default::default()
    };
    cfg.tls.enabled = false;
    let running = virtdeck::web::server::start(cfg).unwrap();
    let app = App {
        base: running.base_url(),
        addr: running.addr,
        setup_url: running.setup_url.clone(),
        state: running.state.clone(),
        handle: running.server.handle(),
        _data_dir: data_dir,
    };
    tokio::spawn(running.server);
    let admin = app.setup_admin().await;
    let (s, v) = app.mint(&admin, "web01", "vnc", false).await;
    assert_eq!(s, Http::CONFLICT, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not available on the demo host"),
        "{v}"
    );
    // Without the CSRF header a session may not mint.
    let r = admin
        .http
        .post(app.url("/vms/web01/console/vnc/ticket"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), Http::FORBIDDEN);
    // The page itself renders, with the console script and no inline code.
    let page = admin
        .http
        .get(app.url("/vms/web01/console/vnc"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), Http::OK);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    let body = page.text().await.unwrap();
    assert!(body.contains("/static/console/vnc.js"));
    // The vendored browser code (installed by `make assets`) is served with its licenses.
    for (path, mime) in [
        ("/static/vendor/novnc/core/rfb.js", "javascript"),
        ("/static/vendor/xterm/xterm.mjs", "javascript"),
        ("/static/vendor/xterm/addon-fit.mjs", "javascript"),
        ("/static/vendor/xterm/xterm.css", "text/css"),
        ("/static/vendor/novnc/LICENSE.txt", "text/plain"),
        ("/static/vendor/xterm/LICENSE", ""),
    ] {
        let r = admin.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), Http::OK, "{path} served (run `make assets`)");
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.contains(mime), "{path}: {ct}");
    }
}

/// The close frame's code and reason, within 10 s.
async fn close_frame<S>(ws: &mut S) -> Option<(u16, String)>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(m) = ws.next().await {
            if let Ok(Message::Close(Some(c))) = m {
                return Some((u16::from(c.code), c.reason.to_string()));
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}
