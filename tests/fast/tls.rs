//! HTTPS by default: a self-signed certificate made once and kept, Secure cookies, and a
//! configured certificate used instead when given.

use crate::common;

use common::spawn_app_with;
use reqwest::StatusCode;

fn insecure_client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .unwrap()
}

#[tokio::test]
async fn https_with_a_kept_self_signed_certificate_and_secure_cookies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let p = path.clone();
    let app = spawn_app_with(move |c| {
        c.tls.enabled = true;
        c.data_dir = p;
    })
    .await;
    assert!(app.base.starts_with("https://"), "{}", app.base);
    let c = insecure_client();
    let r = c.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().contains_key("strict-transport-security"));

    // A plain HTTP request to the TLS port gets no page.
    let plain = reqwest::Client::new()
        .get(app.url("/healthz").replace("https://", "http://"))
        .send()
        .await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));

    // Cookies are Secure under TLS.
    let login = c.get(app.url("/login")).send().await.unwrap();
    let set_cookie = login.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set_cookie.contains("Secure"), "{set_cookie}");

    let cert = std::fs::read(path.join("tls-cert.pem")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path.join("tls-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "private key readable only by its owner");
    }
    drop(app);

    // A restart keeps the same certificate (browsers' exceptions stay valid).
    let p = path.clone();
    let app = spawn_app_with(move |c| {
        c.tls.enabled = true;
        c.data_dir = p;
    })
    .await;
    assert_eq!(
        insecure_client()
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(std::fs::read(path.join("tls-cert.pem")).unwrap(), cert);
}

#[tokio::test]
async fn a_configured_certificate_is_used_instead() {
    let certs = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["virtdeck.test".to_string()]).unwrap();
    let cert_file = certs.path().join("cert.pem");
    let key_file = certs.path().join("key.pem");
    std::fs::write(&cert_file, ck.cert.pem()).unwrap();
    std::fs::write(&key_file, ck.signing_key.serialize_pem()).unwrap();
    let data = tempfile::tempdir().unwrap();
    let d = data.path().to_path_buf();
    let app = spawn_app_with(move |c| {
        c.tls.enabled = true;
        c.tls.cert_file = Some(cert_file);
        c.tls.key_file = Some(key_file);
        c.data_dir = d;
    })
    .await;
    // Trust only the configured certificate: the handshake succeeds only if it is served.
    let ca = reqwest::Certificate::from_pem(ck.cert.pem().as_bytes()).unwrap();
    let port = app.base.rsplit(':').next().unwrap().to_string();
    let c = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .resolve(
            "virtdeck.test",
            format!("127.0.0.1:{port}").parse().unwrap(),
        )
        .build()
        .unwrap();
    let r = c
        .get(format!("https://virtdeck.test:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        !data.path().join("tls-cert.pem").exists(),
        "no self-signed certificate made"
    );
}
