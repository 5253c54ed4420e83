//! Two-factor sign-in as users and admins meet it, over HTTP: an app enrolled with a
//! code, sign-in asking for the second step (codes count once, late and wrong ones are
//! refused and throttled like passwords), recovery codes once each, roles that must have
//! a second factor enrolling at sign-in, an admin's reset, the shell's reset, and tokens
//! that need a fresh code.

use crate::common;

use common::{client, location, run_bin, spawn_app_with, TestApp, ADMIN_PASSWORD};
use reqwest::{Client, StatusCode};
use virtdeck::domain::totp;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The code the app with `secret` shows in time step `step`.
fn code_at(secret: &str, step: i64) -> String {
    let bytes = totp::secret_from_base32(secret).expect("base32 secret");
    totp::format_code(totp::code_for_step(&bytes, step, totp::DIGITS))
}

/// The code the app with `secret` shows now.
fn code(secret: &str) -> String {
    code_at(secret, totp::step_at(now()))
}

fn between<'a>(page: &'a str, start: &str, end: &str) -> &'a str {
    let s = page
        .find(start)
        .unwrap_or_else(|| panic!("{start} in {page}"))
        + start.len();
    &page[s..s + page[s..].find(end).unwrap()]
}

fn secret_on(page: &str) -> String {
    between(page, "id=\"totp-secret\">", "<").to_string()
}

fn recovery_codes_on(page: &str) -> Vec<String> {
    let list = between(page, "<ol class=\"codes\">", "</ol>");
    list.split("<code class=\"secret\">")
        .skip(1)
        .map(|c| c[..c.find('<').unwrap()].to_string())
        .collect()
}

/// Sets up an app for the signed-in `c`; returns its secret, the recovery codes shown and
/// the time step of the code that confirmed it (later codes are taken relative to it, so
/// a step ending during the test changes nothing).
async fn enrol(app: &TestApp, c: &Client) -> (String, Vec<String>, i64) {
    let csrf = app.csrf(c, "/account/two-factor").await;
    let page = c
        .post(app.url("/account/two-factor/app"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<svg"), "a QR code is drawn: {page}");
    let secret = secret_on(&page);
    assert!(page.contains("otpauth://totp/virtdeck"), "{page}");

    // A wrong code: said at the code box, nothing enrolled.
    let r = c
        .post(app.url("/account/two-factor/app/confirm"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("secret", &secret),
            ("code", "000000"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = r.text().await.unwrap();
    assert!(page.contains("That code is not right"), "{page}");
    assert!(page.contains(&secret), "the same secret is offered again");

    let step = totp::step_at(now());
    let r = c
        .post(app.url("/account/two-factor/app/confirm"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("secret", &secret),
            ("code", &code_at(&secret, step)),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/account/two-factor");
    let page = app.get_text(c, "/account/two-factor").await;
    let codes = recovery_codes_on(&page);
    assert_eq!(codes.len(), 10, "{page}");
    assert!(page.contains("Sign-in asks for a code from your authenticator app"));
    // Shown once.
    let again = app.get_text(c, "/account/two-factor").await;
    assert!(!again.contains(&codes[0]));
    (secret, codes, step)
}

/// Password, then the second step with `typed`; returns the client and the answer.
async fn sign_in_with(
    app: &TestApp,
    user: &str,
    password: &str,
    typed: &str,
) -> (Client, reqwest::Response) {
    let (c, r) = app.login(user, password).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/login/second-factor");
    let page = app.get_text(&c, "/login/second-factor").await;
    let csrf = common::csrf_in(&page);
    let r = c
        .post(app.url("/login/second-factor"))
        .form(&[("csrf", csrf.as_str()), ("code", typed)])
        .send()
        .await
        .unwrap();
    (c, r)
}

async fn signed_in(app: &TestApp, c: &Client) -> bool {
    c.get(app.url("/vms")).send().await.unwrap().status() == StatusCode::OK
}

#[tokio::test]
async fn sign_in_asks_for_a_code_that_counts_once_and_recovery_codes_work_once_each() {
    let app = spawn_app_with(|c| {
        c.login.slow_after_failures = 100;
        c.login.lock_after_failures = 6;
        c.login.address_lock_after_failures = 100;
    })
    .await;
    let admin = app.setup_admin("admin").await;
    let (secret, codes, step) = enrol(&app, &admin).await;
    assert!(app.audit_text(&admin).await.contains("user.2fa.enrol"));

    // The password alone is not a session.
    let (c, r) = app.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(location(&r), "/login/second-factor");
    assert!(!signed_in(&app, &c).await);
    let page = app.get_text(&c, "/login/second-factor").await;
    assert!(page.contains("enter the 6-digit code"), "{page}");

    // The code that confirmed the app was used already; a late one is refused.
    let (c, r) = sign_in_with(&app, "admin", ADMIN_PASSWORD, &code_at(&secret, step)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().await.unwrap().contains("used already"));
    assert!(!signed_in(&app, &c).await);
    let (_, r) = sign_in_with(&app, "admin", ADMIN_PASSWORD, &code_at(&secret, step - 3)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // The next step's code signs in, once.
    let next = code_at(&secret, step + 1);
    let (c, r) = sign_in_with(&app, "admin", ADMIN_PASSWORD, &next).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/host");
    assert!(signed_in(&app, &c).await);
    let (c2, r) = sign_in_with(&app, "admin", ADMIN_PASSWORD, &next).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(!signed_in(&app, &c2).await);

    // A recovery code, however it is typed, once.
    let typed = codes[2].to_uppercase().replace('-', " ");
    let (c, r) = sign_in_with(&app, "admin", ADMIN_PASSWORD, &typed).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/account/two-factor");
    let page = app.get_text(&c, "/account/two-factor").await;
    assert!(
        page.contains("signed in with a recovery code; 9 left"),
        "{page}"
    );
    let (c, r) = sign_in_with(&app, "admin", ADMIN_PASSWORD, &codes[2]).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(!signed_in(&app, &c).await);

    // Wrong codes count like wrong passwords: the account locks, the right code is
    // refused too, and a wrong second step never made a session.
    let mut locked = false;
    for _ in 0..8 {
        let (c, r) = app.login("admin", ADMIN_PASSWORD).await;
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            locked = true;
            break;
        }
        let page = app.get_text(&c, "/login/second-factor").await;
        let csrf = common::csrf_in(&page);
        let r = c
            .post(app.url("/login/second-factor"))
            .form(&[("csrf", csrf.as_str()), ("code", "123456")])
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            locked = true;
            assert!(r.headers().contains_key("retry-after"));
            break;
        }
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    assert!(locked, "wrong second steps lock the account");
    let c = client();
    let r = app.login_with(&c, "admin", ADMIN_PASSWORD).await;
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "locked at the password too"
    );

    // A second step without a password first goes back to sign-in.
    let r = client()
        .get(app.url("/login/second-factor"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(location(&r).starts_with("/login?expired=1"));
    let audit = app.audit_text(&admin).await;
    assert!(audit.contains("wrong second factor"), "{audit}");
}

#[tokio::test]
async fn a_role_that_must_have_a_second_factor_enrols_at_sign_in_and_an_admin_can_reset_it() {
    let app = spawn_app_with(|_| {}).await;
    let admin = app.setup_admin("admin").await;
    app.add_user(&admin, "olga", "operator", "olga-password-1")
        .await;

    let csrf = app.csrf(&admin, "/users").await;
    let r = admin
        .post(app.url("/users/two-factor-required"))
        .form(&[("csrf", csrf.as_str()), ("operator", "on")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page = app.get_text(&admin, "/users").await;
    assert!(
        page.contains("Now operators must have a second factor"),
        "{page}"
    );
    assert!(page.contains("name=\"operator\" checked"), "{page}");

    // Olga signs in: set up an app first, then she is in, with recovery codes shown once.
    let (c, r) = app.login("olga", "olga-password-1").await;
    assert_eq!(location(&r), "/login/second-factor");
    let page = app.get_text(&c, "/login/second-factor").await;
    assert!(page.contains("Set up two-factor sign-in") && page.contains("<svg"));
    let secret = secret_on(&page);
    let csrf = common::csrf_in(&page);
    let r = c
        .post(app.url("/login/second-factor"))
        .form(&[("csrf", csrf.as_str()), ("code", "999999")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(!signed_in(&app, &c).await);
    let page = r.text().await.unwrap();
    assert_eq!(secret_on(&page), secret, "the same app is waited for");
    let csrf = common::csrf_in(&page);
    let r = c
        .post(app.url("/login/second-factor"))
        .form(&[("csrf", csrf.as_str()), ("code", &code(&secret))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/account/two-factor");
    let page = app.get_text(&c, "/account/two-factor").await;
    assert_eq!(recovery_codes_on(&page).len(), 10);
    assert!(signed_in(&app, &c).await);
    assert!(page.contains("must have a second factor"));
    assert!(
        !page.contains("/account/two-factor/remove"),
        "no way to turn it off"
    );

    // Turning it off is refused while the role must have it.
    let csrf = common::csrf_in(&page);
    let r = c
        .post(app.url("/account/two-factor/remove"))
        .form(&[("csrf", csrf.as_str()), ("code", &code(&secret))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("cannot be removed"));

    // The admin sees it, and resets it for Olga (she lost her phone): her sessions end.
    let page = app.get_text(&admin, "/users").await;
    assert!(page.contains("app, 10 recovery codes"), "{page}");
    let csrf = common::csrf_in(&page);
    let r = admin
        .post(app.url("/users/olga/reset-2fa"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(!signed_in(&app, &c).await, "her sessions ended");
    let audit = app.audit_text(&admin).await;
    assert!(audit.contains("user.2fa.reset") && audit.contains("users.2fa.required"));

    // Her next sign-in asks her to set up a new app.
    let (c, _) = app.login("olga", "olga-password-1").await;
    let page = app.get_text(&c, "/login/second-factor").await;
    assert!(page.contains("Set up two-factor sign-in"));
    assert_ne!(secret_on(&page), secret);

    // An operator may not reset anyone's, nor set the policy.
    let csrf = common::csrf_in(&page);
    let r = c
        .post(app.url("/login/second-factor"))
        .form(&[("csrf", csrf.as_str()), ("code", &code(&secret_on(&page)))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let csrf = app.csrf(&c, "/account/two-factor").await;
    for path in ["/users/admin/reset-2fa", "/users/two-factor-required"] {
        let r = c
            .post(app.url(path))
            .form(&[("csrf", csrf.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
    }
}

#[tokio::test]
async fn a_token_needs_a_fresh_code_and_the_shell_resets_a_locked_out_admin() {
    let app = spawn_app_with(|_| {}).await;
    let admin = app.setup_admin("admin").await;
    let (secret, codes, step) = enrol(&app, &admin).await;

    let create = |typed: Option<String>| {
        let admin = admin.clone();
        let app_url = app.url("/tokens");
        let users = app.url("/users");
        async move {
            let page = admin.get(users).send().await.unwrap().text().await.unwrap();
            let csrf = common::csrf_in(&page);
            let mut form = vec![
                ("csrf".to_string(), csrf),
                ("username".to_string(), "admin".to_string()),
                ("label".to_string(), "ci".to_string()),
            ];
            if let Some(t) = typed {
                form.push(("code".to_string(), t));
            }
            admin.post(app_url).form(&form).send().await.unwrap()
        }
    };
    let r = create(None).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("enter a code from your authenticator app"));
    let r = create(Some("000000".into())).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = create(Some(code_at(&secret, step + 1))).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = create(Some(codes[0].clone())).await;
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "a recovery code is a fresh factor too"
    );

    // The admin lost the phone and the codes: the shell removes the factors.
    let out = run_bin(
        &[
            "--data-dir",
            app.data_dir.path().to_str().unwrap(),
            "user",
            "reset-2fa",
            "admin",
        ],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("second factors removed"));
    assert!(!signed_in(&app, &admin).await, "sessions ended");
    let (c, r) = app.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(location(&r), "/host");
    assert!(signed_in(&app, &c).await);
    let audit = app.audit_text(&c).await;
    assert!(audit.contains("user.2fa.reset"), "{audit}");
}

#[tokio::test]
async fn security_keys_are_refused_with_what_to_do_before_any_browser_prompt() {
    let app = spawn_app_with(|_| {}).await;
    let admin = app.setup_admin("admin").await;
    let csrf = app.csrf(&admin, "/account/two-factor").await;
    let page = app.get_text(&admin, "/account/two-factor").await;
    assert!(page.contains("Add a security key") && page.contains("/static/security-keys.js"));
    let begin = |host: Option<String>, body: serde_json::Value| {
        let mut r = admin
            .post(app.url("/account/two-factor/keys/begin"))
            .header("x-csrf-token", csrf.clone())
            .json(&body);
        if let Some(h) = host {
            r = r.header("host", h);
        }
        r.send()
    };

    // Opened by IP address: browsers cannot use keys there; said before any prompt.
    let r = begin(None, serde_json::json!({"name": "blue"}))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("not by an IP address"),
        "{v}"
    );

    // By name: the options name this host as the relying party.
    let port = app.base.rsplit(':').next().unwrap().to_string();
    let localhost = format!("localhost:{port}");
    let r = begin(Some(localhost.clone()), serde_json::json!({"name": "blue"}))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["publicKey"]["rp"]["id"], "localhost");
    assert_eq!(v["publicKey"]["user"]["name"], "admin");
    let long = "k".repeat(61);
    let r = begin(Some(localhost.clone()), serde_json::json!({"name": long}))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Without the session's CSRF header: refused.
    let r = admin
        .post(app.url("/account/two-factor/keys/begin"))
        .header("host", localhost.clone())
        .json(&serde_json::json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // A user with an app must give a fresh code first.
    let (_, _, _) = enrol(&app, &admin).await;
    let r = begin(Some(localhost.clone()), serde_json::json!({"name": "blue"}))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("Enter a code"), "{v}");

    // A made-up credential is not a key: refused for the ceremony the page started, and
    // the ceremony is used up, so a second try finds none.
    let forged = || {
        admin
            .post(app.url("/account/two-factor/keys/finish"))
            .header("x-csrf-token", csrf.clone())
            .header("host", localhost.clone())
            .json(&serde_json::json!({
                "name": "forged",
                "credential": {
                    "id": "AAAA", "rawId": "AAAA", "type": "public-key",
                    "response": {"attestationObject": "AAAA", "clientDataJSON": "AAAA"}
                }
            }))
            .send()
    };
    for expected in ["not accepted", "expired"] {
        let r = forged().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().contains(expected), "{v}");
    }
    let page = app.get_text(&admin, "/account/two-factor").await;
    assert!(!page.contains("forged"));
    let audit = app.audit_text(&admin).await;
    assert!(
        audit.contains("user.2fa.key.add"),
        "the refusal is audited: {audit}"
    );

    // Signing in with a key: without a password first there is nothing to sign.
    let r = client()
        .post(app.url("/login/second-factor/key/begin"))
        .json(&serde_json::json!({"csrf": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // After the password: a user with no key at this address is told so; an answer with
    // no credential counts as a failed second step.
    let (c, _) = app.login("admin", ADMIN_PASSWORD).await;
    let page = app.get_text(&c, "/login/second-factor").await;
    assert!(!page.contains("use-key"), "no key, no key button");
    let csrf = common::csrf_in(&page);
    let r = c
        .post(app.url("/login/second-factor/key/begin"))
        .header("host", localhost.clone())
        .json(&serde_json::json!({"csrf": csrf}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = c
        .post(app.url("/login/second-factor/key/finish"))
        .header("host", localhost)
        .json(&serde_json::json!({"csrf": csrf}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(!signed_in(&app, &c).await);
    assert!(app.audit_text(&admin).await.contains("wrong second factor"));
}
