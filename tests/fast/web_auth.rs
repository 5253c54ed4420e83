//! Accounts, sessions, CSRF, roles, lockout, API tokens and bad input, over HTTP.

use crate::common;

use common::{client, spawn_app, spawn_app_with, ADMIN_PASSWORD};
use reqwest::StatusCode;

#[tokio::test]
async fn setup_link_creates_the_first_admin_once() {
    let app = spawn_app().await;
    let url = app.setup_url.clone().expect("no accounts → setup link");
    assert!(url.contains("/setup?token="));

    // A wrong token is refused.
    let c = client();
    let r = c.get(app.url("/setup?token=guess")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Bad input is shown at the field and creates nothing.
    let token = url.split("token=").nth(1).unwrap();
    let r = c
        .post(app.url("/setup"))
        .form(&[
            ("token", token),
            ("username", "admin"),
            ("password", "short"),
            ("password_confirm", "short"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("at least 10 characters"));

    let admin = app.setup_admin("admin").await;
    let host = admin.get(app.url("/host")).send().await.unwrap();
    assert_eq!(host.status(), StatusCode::OK, "signed in right after setup");

    // The link is spent: neither the page nor the form works again.
    let r = client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = client()
        .post(app.url("/setup"))
        .form(&[
            ("token", token),
            ("username", "mallory"),
            ("password", "mallory-password"),
            ("password_confirm", "mallory-password"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let (_, r) = app.login("mallory", "mallory-password").await;
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "no second admin was made"
    );
    assert!(app.audit_text(&admin).await.contains("setup.first_admin"));
}

#[tokio::test]
async fn login_right_and_wrong_password_and_logout_ends_the_session_server_side() {
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    app.add_user(&admin, "olga", "operator", "olga-password-1")
        .await;

    let (_, wrong) = app.login("olga", "not-her-password").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong
        .text()
        .await
        .unwrap()
        .contains("Wrong user name or password."));
    let (_, unknown) = app.login("nobody", "whatever-pass").await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    assert!(
        unknown
            .text()
            .await
            .unwrap()
            .contains("Wrong user name or password."),
        "same answer for unknown users"
    );

    let (c, ok) = app.login("olga", "olga-password-1").await;
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    let set_cookie = ok
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(set_cookie.contains("vd_session="), "{set_cookie}");
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    let session_value = set_cookie
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("vd_session=")
        .to_string();
    assert_eq!(
        c.get(app.url("/host")).send().await.unwrap().status(),
        StatusCode::OK
    );

    // Logout without CSRF changes nothing.
    let r = c
        .post(app.url("/logout"))
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        c.get(app.url("/host")).send().await.unwrap().status(),
        StatusCode::OK
    );

    let csrf = app.csrf(&c, "/host").await;
    let r = c
        .post(app.url("/logout"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);

    // Replaying the old cookie from another client: the server forgot the session.
    let replay = client()
        .get(app.url("/api/v1/whoami"))
        .header("cookie", format!("vd_session={session_value}"))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), StatusCode::UNAUTHORIZED);

    let audit = app.audit_text(&admin).await;
    assert!(audit.contains("logout"));
    assert!(audit.contains("failed"));
}

#[tokio::test]
async fn repeated_failures_lock_the_account_and_the_page_says_so() {
    let app = spawn_app_with(|c| {
        c.login.slow_after_failures = 2;
        c.login.slow_delay_ms = 200;
        c.login.lock_after_failures = 3;
        c.login.lock_seconds = 600;
    })
    .await;
    let admin = app.setup_admin("admin").await;
    app.add_user(&admin, "vic", "viewer", "vic-password-1")
        .await;
    for _ in 0..2 {
        let (_, r) = app.login("vic", "wrong-password").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // The third failure is answered slowly.
    let t = std::time::Instant::now();
    let (_, r) = app.login("vic", "wrong-password").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(200),
        "slowed down"
    );
    // Now even the right password is refused, with a message that says why.
    let (c, r) = app.login("vic", "vic-password-1").await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let body = r.text().await.unwrap();
    assert!(body.contains("locked"), "{body}");
    assert!(body.contains("10 minutes"), "{body}");
    assert_eq!(
        c.get(app.url("/host")).send().await.unwrap().status(),
        StatusCode::SEE_OTHER
    );
    // Another account is not locked by vic's failures.
    let (_, r) = app.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(app.audit_text(&admin).await.contains("locked"));
}

#[tokio::test]
async fn post_without_csrf_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    for csrf in [None, Some("forged-token")] {
        let mut form = vec![
            ("username", "eve"),
            ("role", "admin"),
            ("password", "eve-password-1"),
            ("password_confirm", "eve-password-1"),
        ];
        if let Some(c) = csrf {
            form.push(("csrf", c));
        }
        let r = admin
            .post(app.url("/users"))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
    let users = admin
        .get(app.url("/users"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!users.contains("<td>eve</td>"), "no user was created");
    let (_, r) = app.login("eve", "eve-password-1").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // A login form without its CSRF cookie is refused too.
    let r = client()
        .post(app.url("/login"))
        .form(&[
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
            ("csrf", "x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn viewer_is_forbidden_from_mutating_and_it_is_audited() {
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    app.add_user(&admin, "vera", "viewer", "vera-password-1")
        .await;
    let (viewer, _) = app.login("vera", "vera-password-1").await;
    // A viewer may look.
    assert_eq!(
        viewer.get(app.url("/host")).send().await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        viewer.get(app.url("/vms")).send().await.unwrap().status(),
        StatusCode::OK
    );
    // But not change anything, even with a valid CSRF token of her own.
    let csrf = app.csrf(&viewer, "/host").await;
    let r = viewer
        .post(app.url("/users"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("username", "vera2"),
            ("role", "admin"),
            ("password", "vera-password-2"),
            ("password_confirm", "vera-password-2"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("Your role (viewer) may not do this"));
    assert_eq!(
        viewer.get(app.url("/audit")).send().await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let audit = app.audit_text(&admin).await;
    assert!(
        audit.contains("<td>vera</td>"),
        "denial recorded with the user"
    );
    assert!(audit.contains("user.create"));
    assert!(audit.contains("denied"));
}

#[tokio::test]
async fn sessions_expire_when_idle() {
    let app = spawn_app_with(|c| c.session.idle_timeout_seconds = 2).await;
    let admin = app.setup_admin("admin").await;
    assert_eq!(
        admin.get(app.url("/host")).send().await.unwrap().status(),
        StatusCode::OK
    );
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let r = admin.get(app.url("/host")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/login?next=%2Fhost");
}

#[tokio::test]
async fn sessions_end_at_the_absolute_limit_even_when_used() {
    let app = spawn_app_with(|c| {
        c.session.idle_timeout_seconds = 60;
        c.session.absolute_timeout_seconds = 3;
    })
    .await;
    let admin = app.setup_admin("admin").await;
    for _ in 0..2 {
        assert_eq!(
            admin.get(app.url("/host")).send().await.unwrap().status(),
            StatusCode::OK
        );
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_eq!(
        admin.get(app.url("/host")).send().await.unwrap().status(),
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn api_tokens_authenticate_and_carry_the_users_role() {
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    app.add_user(&admin, "bot", "viewer", "bot-password-1")
        .await;
    let csrf = app.csrf(&admin, "/users").await;
    let r = admin
        .post(app.url("/tokens"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("username", "bot"),
            ("label", "monitoring"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = app.get_text(&admin, "/users").await;
    let marker = "id=\"new-token\" class=\"secret\">";
    let start = page.find(marker).expect("token shown once") + marker.len();
    let token = &page[start..start + page[start..].find('<').unwrap()];
    assert!(token.starts_with("vdk_"));

    let api = reqwest::Client::new();
    let who: serde_json::Value = api
        .get(app.url("/api/v1/whoami"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["username"], "bot");
    assert_eq!(who["role"], "viewer");
    assert_eq!(who["via"], "token");

    let host: serde_json::Value = api
        .get(app.url("/api/v1/host"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(host["host"]["cpu_count"], 16);
    assert_eq!(host["host"]["memory_mib"], 65536);
    assert_eq!(host["kvm"]["status"], "not_applicable");

    let vms: serde_json::Value = api
        .get(app.url("/api/v1/vms"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = vms["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"web01"), "{names:?}");

    // Wrong and missing tokens get JSON 401s.
    let r = api
        .get(app.url("/api/v1/host"))
        .bearer_auth("vdk_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    let r = api.get(app.url("/api/v1/host")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Deleting the user revokes the token.
    let csrf = app.csrf(&admin, "/users").await;
    let r = admin
        .post(app.url("/users/bot/delete"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = api
        .get(app.url("/api/v1/whoami"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_input_gets_clean_4xx_never_a_500() {
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    let csrf = app.csrf(&admin, "/users").await;

    // Oversized form body.
    let big = "x".repeat(64 * 1024);
    let r = admin
        .post(app.url("/users"))
        .form(&[("csrf", csrf.as_str()), ("username", big.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // A form that is not UTF-8.
    let r = admin
        .post(app.url("/users"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}&username=%FF%FE&role=admin&password=aaaaaaaaaaaa&password_confirm=aaaaaaaaaaaa").into_bytes())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    let r = admin
        .post(app.url("/users"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(vec![b'u', b'=', 0xff, 0xfe, b'&', b'c', b'=', 0xc3])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());

    // Unknown routes.
    let r = admin.get(app.url("/no/such/page")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = admin.get(app.url("/api/v1/nothing")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");

    // Malformed cookies.
    for cookie in [
        "vd_session=%%%; ===",
        "vd_session=\"unterminated; a",
        "garbage-without-equals",
    ] {
        let r = client()
            .get(app.url("/api/v1/whoami"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "cookie {cookie:?}");
        let r = client()
            .get(app.url("/host"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "cookie {cookie:?}");
    }

    // A bad query string.
    let r = admin.get(app.url("/audit?page=-1")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Still alive and well.
    assert_eq!(
        admin
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn healthz_needs_no_auth_and_pages_send_security_headers() {
    let app = spawn_app().await;
    let r = client().get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let csp = r
        .headers()
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(csp.contains("frame-ancestors 'none'"));
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn host_page_shows_the_demo_host() {
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    let page = admin
        .get(app.url("/host"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("16 CPUs"), "{page}");
    assert!(page.contains("65536 MiB"));
    assert!(page.contains("libvirt test driver"));
    let vms = admin
        .get(app.url("/vms"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in ["web01", "db01", "win2019-ad"] {
        assert!(vms.contains(name), "{name} listed");
    }
    assert!(vms.contains("shut off"));
    assert!(vms.contains("paused"));
}

/// Every error under `/api/` answers in JSON, also one raised by an extractor before any
/// handler ran (a job id that is not a number), so API clients can always read it.
#[tokio::test]
async fn api_errors_are_json_whoever_raised_them() {
    let app = spawn_app().await;
    let admin = app.setup_admin("admin").await;
    let token = app.admin_token(&admin).await;
    let c = client();
    for path in [
        "/api/v1/jobs/not-a-number",
        "/api/v1/jobs/999999",
        "/api/v1/nothing-here",
    ] {
        let r = c
            .get(app.url(path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::NOT_FOUND, "{path}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("application/json"), "{path}: {ct}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "not_found", "{path}: {v}");
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // Signed in with a session, a forbidden or refused API call is JSON too.
    let r = admin
        .post(app.url("/api/v1/vms/db01/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::FORBIDDEN);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "forbidden", "{v}");
}
