//! Sign-in and connections as an attacker with network access would try them: parallel
//! password guesses, floods, a client behind a reverse proxy, slow bodies, many
//! connections, an open redirect, a shared data dir. All over real HTTP/TCP.

use crate::common;

use common::{client, spawn_app, spawn_app_with, ADMIN_PASSWORD};
use reqwest::StatusCode;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// One sign-in attempt on a fresh client (its own login CSRF cookie), with extra headers.
async fn attempt(
    base: &str,
    user: &str,
    password: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let c = client();
    let mut get = c.get(format!("{base}/login"));
    for (k, v) in headers {
        get = get.header(*k, *v);
    }
    let page = get.send().await.unwrap().text().await.unwrap();
    let csrf = common::csrf_in(&page);
    let mut post = c.post(format!("{base}/login")).form(&[
        ("username", user),
        ("password", password),
        ("csrf", &csrf),
    ]);
    for (k, v) in headers {
        post = post.header(*k, *v);
    }
    post.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_wrong_passwords_stop_at_the_account_lock_and_unlock_lifts_it() {
    let _gate = crate::gate::enter(module_path!());
    let app = spawn_app_with(|cfg| {
        // Keep the address lock out of the way: this is about the account's.
        cfg.login.address_lock_after_failures = 10_000;
        cfg.login.slow_after_failures = 10_000;
        // 120 clients on one address at once.
        cfg.http.max_connections_per_address = 1_000;
    })
    .await;
    let _admin = app.setup_admin("admin").await;

    let base = app.base.clone();
    let tasks: Vec<_> = (0..120)
        .map(|i| {
            let base = base.clone();
            tokio::spawn(async move {
                attempt(&base, "admin", &format!("wrong-password-{i}"), &[])
                    .await
                    .status()
            })
        })
        .collect();
    let mut checked = 0;
    for t in tasks {
        let status = t.await.unwrap();
        match status {
            StatusCode::UNAUTHORIZED => checked += 1,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {}
            other => panic!("unexpected answer {other}"),
        }
    }
    assert!(
        checked <= 5,
        "{checked} of 120 parallel wrong passwords were checked; the lock allows 5"
    );
    assert!(checked >= 1, "some attempts were checked");
    // Attempts refused as busy (never checked) did not count: the lock comes exactly at
    // the fifth checked failure.
    while checked < 5 {
        let r = attempt(&app.base, "admin", "one-more-wrong-guess", &[]).await;
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "checked {checked} so far"
        );
        checked += 1;
    }

    // The right password is refused while the account is locked…
    let r = attempt(&app.base, "admin", ADMIN_PASSWORD, &[]).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        r.headers().get("retry-after").is_some(),
        "says when to retry"
    );
    assert!(r.text().await.unwrap().contains("Sign-in is locked"));

    // …until an admin on the host unlocks it.
    let data_dir = app.data_dir.path().to_str().unwrap().to_string();
    let out = common::run_bin(&["--data-dir", &data_dir, "user", "unlock", "admin"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("unlocked"));
    let r = attempt(&app.base, "admin", ADMIN_PASSWORD, &[]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "signed in after unlock");

    let out = common::run_bin(
        &["--data-dir", &data_dir, "user", "unlock", "nobody-here"],
        "",
    );
    assert!(
        out.status.success(),
        "unlocking a name with no failures is harmless"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_sign_ins_gets_fast_refusals_not_a_queue() {
    let _gate = crate::gate::enter(module_path!());
    let app = spawn_app_with(|cfg| {
        cfg.login.max_parallel_password_checks = 1;
        cfg.login.address_lock_after_failures = 10_000;
        cfg.login.lock_after_failures = 10_000;
        cfg.login.slow_after_failures = 10_000;
    })
    .await;
    let _admin = app.setup_admin("admin").await;
    let base = app.base.clone();
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let base = base.clone();
            tokio::spawn(async move {
                let r = attempt(&base, &format!("user{i}"), "not-the-password", &[]).await;
                let retry = r.headers().get("retry-after").is_some();
                (r.status(), retry)
            })
        })
        .collect();
    let mut busy = 0;
    for t in tasks {
        let (status, retry) = t.await.unwrap();
        match status {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(retry, "a busy answer says when to retry");
                busy += 1;
            }
            other => panic!("unexpected answer {other}"),
        }
    }
    assert!(
        busy > 0,
        "with one password check at a time, 60 at once must see refusals"
    );
    // A refused attempt did not count: the admin still signs in at once.
    let r = attempt(&app.base, "admin", ADMIN_PASSWORD, &[]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    let _gate = crate::gate::enter(module_path!());
    // Behind a proxy on 127.0.0.1: each client is throttled by its own address.
    let app = spawn_app_with(|cfg| {
        cfg.http.trusted_proxies = vec!["127.0.0.1/32".into()];
        cfg.login.address_lock_after_failures = 3;
        cfg.login.lock_after_failures = 100;
        cfg.login.slow_after_failures = 100;
    })
    .await;
    let admin = app.setup_admin("admin").await;
    let attacker = [("X-Forwarded-For", "198.51.100.66")];
    for i in 0..3 {
        let r = attempt(&app.base, &format!("guess{i}"), "nope-nope-nope", &attacker).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = attempt(&app.base, "admin", ADMIN_PASSWORD, &attacker).await;
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the attacker's address is locked"
    );
    let r = attempt(
        &app.base,
        "admin",
        ADMIN_PASSWORD,
        &[("X-Forwarded-For", "203.0.113.5")],
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "another client behind the proxy is not"
    );
    let audit = app.audit_text(&admin).await;
    assert!(
        audit.contains("198.51.100.66"),
        "the audit log names the real client"
    );

    // Without trusted proxies the header is ignored: a client cannot pick its address.
    let app = spawn_app_with(|cfg| {
        cfg.login.address_lock_after_failures = 3;
        cfg.login.lock_after_failures = 100;
        cfg.login.slow_after_failures = 100;
    })
    .await;
    let admin = app.setup_admin("admin").await;
    for i in 0..3 {
        let fake = format!("192.0.2.{i}");
        let r = attempt(
            &app.base,
            "admin",
            "nope-nope-nope",
            &[("X-Forwarded-For", &fake)],
        )
        .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = attempt(
        &app.base,
        "admin",
        ADMIN_PASSWORD,
        &[("X-Forwarded-For", "192.0.2.99")],
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "a forged X-Forwarded-For does not escape the address lock"
    );
    let audit = app.audit_text(&admin).await;
    assert!(
        !audit.contains("192.0.2.1"),
        "forged addresses never reach the audit log"
    );
}

#[tokio::test]
async fn behind_a_trusted_tls_proxy_cookies_stay_secure_and_hsts_is_sent() {
    let _gate = crate::gate::enter(module_path!());
    let app = spawn_app_with(|cfg| cfg.http.trusted_proxies = vec!["127.0.0.1/32".into()]).await;
    let c = client();
    let r = c
        .get(app.url("/login"))
        .header("X-Forwarded-Proto", "https")
        .send()
        .await
        .unwrap();
    let cookie = r
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(cookie.contains("Secure"), "{cookie}");
    assert!(r.headers().get("strict-transport-security").is_some());

    // The same header from an untrusted peer changes nothing.
    let app = spawn_app().await;
    let r = c
        .get(app.url("/login"))
        .header("X-Forwarded-Proto", "https")
        .send()
        .await
        .unwrap();
    let cookie = r
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(!cookie.contains("Secure"), "{cookie}");
    assert!(r.headers().get("strict-transport-security").is_none());
}

fn addr_of(app: &common::TestApp) -> String {
    app.base.trim_start_matches("http://").to_string()
}

/// Reads until the peer closes or `limit` passes; returns what came and how long it took.
fn read_until_closed(mut s: &TcpStream, limit: Duration) -> (String, Duration) {
    s.set_read_timeout(Some(limit)).unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
        if start.elapsed() > limit {
            break;
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_is_answered_408_and_closed() {
    let _gate = crate::gate::enter(module_path!());
    let app = spawn_app_with(|cfg| cfg.http.body_idle_timeout_seconds = 2).await;
    let addr = addr_of(&app);
    let (text, took) = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "POST /login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 200\r\n\r\nusername=a"
        )
        .unwrap();
        read_until_closed(&s, Duration::from_secs(20))
    })
    .await
    .unwrap();
    assert!(text.starts_with("HTTP/1.1 408"), "answer: {text:?}");
    assert!(
        took < Duration::from_secs(10),
        "closed after {took:?}; the body idle limit is 2 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_client_address_are_capped() {
    let _gate = crate::gate::enter(module_path!());
    let app = spawn_app_with(|cfg| cfg.http.max_connections_per_address = 3).await;
    let addr = addr_of(&app);
    tokio::task::spawn_blocking(move || {
        let get = |s: &mut TcpStream| {
            write!(s, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut buf = [0u8; 512];
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let n = s.read(&mut buf).unwrap_or(0);
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        let mut held: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(&addr).unwrap()).collect();
        for s in held.iter_mut() {
            assert!(get(s).starts_with("HTTP/1.1 200"), "within the cap");
        }
        let mut fourth = TcpStream::connect(&addr).unwrap();
        let answer = get(&mut fourth);
        assert!(
            answer.is_empty(),
            "the fourth connection is closed at once: {answer:?}"
        );
        drop(held.pop());
        // The place is freed when the connection ends on the server's side too.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut again = TcpStream::connect(&addr).unwrap();
            if get(&mut again).starts_with("HTTP/1.1 200") {
                break;
            }
            assert!(Instant::now() < deadline, "a freed place is given again");
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn sign_in_never_sends_the_browser_off_site() {
    let _gate = crate::gate::enter(module_path!());
    let app = spawn_app().await;
    let _admin = app.setup_admin("admin").await;
    for next in [
        "/\t/evil.example",
        "/\n/evil.example",
        "//evil.example",
        "/\\evil.example",
        "/x//evil",
    ] {
        let c = client();
        let page = c
            .get(app.url("/login"))
            .query(&[("next", next)])
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let csrf = common::csrf_in(&page);
        let r = c
            .post(app.url("/login"))
            .form(&[
                ("username", "admin"),
                ("password", ADMIN_PASSWORD),
                ("csrf", &csrf),
                ("next", next),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()["location"], "/host", "next = {next:?}");
    }
}

#[test]
fn a_shared_data_dir_is_refused_and_left_alone() {
    let _gate = crate::gate::enter(module_path!());
    use std::os::unix::fs::PermissionsExt;
    let base = tempfile::tempdir().unwrap();
    let shared = base.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    for dir in [std::path::PathBuf::from("/tmp"), shared.clone()] {
        let mut child = common::bin()
            .args([
                "--data-dir",
                dir.to_str().unwrap(),
                "serve",
                "--demo",
                "--no-tls",
            ])
            .args(["--listen", "127.0.0.1:0"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("virtdeck started on {}", dir.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(!status.success(), "{} was accepted", dir.display());
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(
            err.contains("give virtdeck a directory of its own"),
            "{err}"
        );
    }
    let mode = std::fs::metadata(&shared).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o1777, "the shared directory's mode is unchanged");
    let tmp_mode = std::fs::metadata("/tmp").unwrap().permissions().mode() & 0o7777;
    assert_eq!(tmp_mode, 0o1777, "/tmp is unchanged");
}
