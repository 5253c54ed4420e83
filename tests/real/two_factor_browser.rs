//! Two-factor sign-in in a real headless Chromium: a new admin sets up an authenticator
//! app from their account page (the QR code is drawn on the page), saves the recovery
//! codes, signs out, and signs in again with the password and then a code.

use crate::common;

use common::webdriver::{Browser, WAIT};
use common::ADMIN_PASSWORD;
use virtdeck::domain::totp;

fn code_at(secret: &str, step: i64) -> String {
    let bytes = totp::secret_from_base32(secret).expect("base32 secret");
    totp::format_code(totp::code_for_step(&bytes, step, totp::DIGITS))
}

fn step_now() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    totp::step_at(now)
}

#[tokio::test]
async fn an_admin_sets_up_an_app_and_signs_in_with_its_code_in_chromium() {
    let _gate = crate::gate::enter(module_path!());
    let app = common::spawn_app().await;
    let setup_url = app.setup_url.clone().expect("setup link");
    let b = Browser::start().await;

    b.set_up_first_admin(&setup_url, "admin", ADMIN_PASSWORD)
        .await;

    // The user's name in the header leads to their two-factor page.
    let me = b.find("header form.who a").await;
    b.click(&me).await;
    b.wait_for_path("/account/two-factor").await;
    assert!(b
        .text_of("#two-factor-status")
        .await
        .contains("asks only for your password"));
    let set_up = b.find_by("xpath", "//button[text()='Set up an app']").await;
    b.click(&set_up.expect("a 'Set up an app' button")).await;

    // The QR code is an SVG drawn in the page, with the key beside it.
    let secret = b.text_of("#totp-secret").await;
    let qr_width = b
        .execute(
            "const s = document.querySelector('#totp-qr svg'); return s ? s.getBoundingClientRect().width : 0;",
            serde_json::json!([]),
        )
        .await;
    assert!(
        qr_width.as_f64().unwrap_or(0.0) >= 150.0,
        "QR drawn: {qr_width}"
    );
    b.screenshot("two-factor-setup").await;
    let step = step_now();
    b.type_into("input[name=code]", &code_at(&secret, step))
        .await;
    let confirm = b.find_by("xpath", "//button[text()='Confirm']").await;
    b.click(&confirm.expect("a Confirm button")).await;
    // The answer comes back to the same address: wait for the codes themselves.
    b.wait_until(
        "return document.querySelectorAll('#recovery-codes li').length === 10;",
        WAIT,
        "ten recovery codes shown",
    )
    .await;
    assert!(b
        .text_of("#two-factor-status")
        .await
        .contains("asks for a code from your authenticator app"));
    b.screenshot("two-factor-recovery-codes").await;

    // Sign out, then the password, then the next code.
    let sign_out = b.find("header form.who button[type=submit]").await;
    b.click(&sign_out).await;
    b.wait_for_path("/login?signed_out=1").await;
    b.type_into("input[name=username]", "admin").await;
    b.type_into("input[name=password]", ADMIN_PASSWORD).await;
    let submit = b.find("form button[type=submit]").await;
    b.click(&submit).await;
    b.wait_for_path("/login/second-factor").await;
    assert_eq!(b.text_of("form h2").await, "Second step");
    b.type_into("input[name=code]", &code_at(&secret, step + 1))
        .await;
    let submit = b.find("form button[type=submit]").await;
    b.click(&submit).await;
    b.wait_for_path("/host").await;
    assert!(b.text_of("header form.who").await.contains("admin"));
    b.screenshot("two-factor-signed-in").await;
    b.quit().await;
}

#[tokio::test]
async fn a_security_key_is_added_and_signs_in_in_chromium() {
    let _gate = crate::gate::enter(module_path!());
    let app = common::spawn_app().await;
    // Browsers use WebAuthn only at a host name over HTTPS, or at http://localhost.
    let at_localhost = |url: &str| url.replace("127.0.0.1", "localhost");
    let b = Browser::start().await;
    // Chromium's virtual authenticator stands in for a USB security key.
    let made = b
        .post(
            "/webauthn/authenticator",
            serde_json::json!({
                "protocol": "ctap2",
                "transport": "usb",
                "hasResidentKey": false,
                "hasUserVerification": true,
                "isUserPresent": true,
                "isUserVerified": true
            }),
        )
        .await;
    assert!(made.as_str().is_some(), "virtual authenticator: {made}");
    b.set_up_first_admin(
        &at_localhost(&app.setup_url.clone().expect("setup link")),
        "admin",
        ADMIN_PASSWORD,
    )
    .await;

    b.goto(&at_localhost(&app.url("/account/two-factor"))).await;
    b.type_into("#add-key input[name=key_name]", "blue key")
        .await;
    let add = b.find("#add-key button[type=submit]").await;
    b.click(&add).await;
    // Done when the key is listed with the recovery codes; a refusal the page shows
    // ends the wait with its words.
    let shown = b
        .wait_for_value(
            "if (document.querySelectorAll('#recovery-codes li').length === 10 \
                 && (document.querySelector('#security-keys')?.innerText || '').includes('blue key')) \
               return 'added'; \
             const s = document.querySelector('#add-key-status'); \
             return s && !s.hidden && !s.innerText.startsWith('Touch') ? s.innerText : null;",
        )
        .await;
    assert_eq!(shown, "added");
    b.screenshot("security-key-added").await;

    // Sign out, the password, then the key.
    let sign_out = b.find("header form.who button[type=submit]").await;
    b.click(&sign_out).await;
    b.wait_for_path("/login?signed_out=1").await;
    b.type_into("input[name=username]", "admin").await;
    b.type_into("input[name=password]", ADMIN_PASSWORD).await;
    let submit = b.find("form button[type=submit]").await;
    b.click(&submit).await;
    b.wait_for_path("/login/second-factor").await;
    b.wait_until(
        "const k = document.querySelector('#use-key'); return !!k && !k.hidden;",
        WAIT,
        "the 'Use a security key' button",
    )
    .await;
    let use_key = b.find("#use-key").await;
    b.click(&use_key).await;
    b.wait_for_path("/host").await;
    assert!(b.text_of("header form.who").await.contains("admin"));
    b.screenshot("security-key-signed-in").await;
    b.quit().await;
}
