//! Starts the real app on port 0 with a temp data dir, and drives it over HTTP.
#![allow(dead_code)]

pub mod api;
pub mod faults;
pub mod http;
pub mod pages;
pub mod prom;
pub mod real;
pub mod webdriver;

use reqwest::redirect::Policy;
use reqwest::{Client, Response, StatusCode};
use tempfile::TempDir;
use virtdeck::config::Config;

pub struct TestApp {
    pub base: String,
    pub setup_url: Option<String>,
    pub data_dir: TempDir,
    pub handle: actix_web::dev::ServerHandle,
}

/// Test clients reuse a connection only if it idled less than this: virtdeck closes
/// idle connections after 5 s (actix's keep-alive), and a request sent on a connection
/// the server is closing at that moment fails with "incomplete message".
pub const IDLE_REUSE: std::time::Duration = std::time::Duration::from_secs(2);

/// A browser-like client: keeps cookies, does not follow redirects (tests look at them).
pub fn client() -> Client {
    Client::builder()
        // Test apps with TLS on use their own self-signed certificate.
        .danger_accept_invalid_certs(true)
        .cookie_store(true)
        .redirect(Policy::none())
        .pool_idle_timeout(IDLE_REUSE)
        .build()
        .expect("client")
}

/// The app on the demo host (libvirt test driver), plain HTTP on loopback.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_wrapped(tweak, None).await
}

/// The app with its hypervisor wrapped, e.g. in [`faults::FailAt`].
pub async fn spawn_app_wrapped(
    tweak: impl FnOnce(&mut Config),
    wrap: Option<virtdeck::web::server::HypervisorWrap>,
) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let (base, setup_url, handle) = spawn_app_on(data_dir.path(), tweak, wrap).await;
    TestApp {
        base,
        setup_url,
        data_dir,
        handle,
    }
}

/// The app on an existing data dir (a restart of virtdeck, once the first app is
/// stopped): its base URL, setup link (none after set-up) and handle.
pub async fn spawn_app_on(
    data_dir: &std::path::Path,
    tweak: impl FnOnce(&mut Config),
    wrap: Option<virtdeck::web::server::HypervisorWrap>,
) -> (String, Option<String>, actix_web::dev::ServerHandle) {
    let mut cfg = Config {
        listen: "127.0.0.1:0".into(),
        data_dir: data_dir.to_path_buf(),
        demo: true,
        ..Default::default()
    };
    cfg.tls.enabled = false;
    tweak(&mut cfg);
    let running = virtdeck::web::server::start_with(cfg, wrap).expect("app starts");
    let handle = running.server.handle();
    let base = running.base_url();
    let setup_url = running.setup_url.clone();
    tokio::spawn(running.server);
    (base, setup_url, handle)
}

/// Where a redirect sends the browser ("" when the answer is not one).
pub fn location(r: &Response) -> String {
    r.headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// The value of the first `name="csrf"` hidden field in a page.
pub fn csrf_in(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("page has a csrf field") + marker.len();
    let end = html[start..].find('"').expect("closing quote") + start;
    html[start..end].to_string()
}

pub const ADMIN_PASSWORD: &str = "admin-password-1";

/// The built `virtdeck` binary, for shell-tool and process-level tests.
pub fn bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_virtdeck"))
}

/// Runs `virtdeck ARGS` with `stdin` on standard input.
pub fn run_bin(args: &[&str], stdin: &str) -> std::process::Output {
    let mut cmd = bin();
    cmd.args(args);
    run_with_stdin(cmd, stdin)
}

/// Runs `cmd` with `stdin` on standard input; its output.
pub fn run_with_stdin(mut cmd: std::process::Command, stdin: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the program runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Creates the first admin through the one-time setup link; returns a signed-in client.
    pub async fn setup_admin(&self, name: &str) -> Client {
        let c = client();
        let url = self.setup_url.clone().expect("setup link printed");
        let token = url
            .split("token=")
            .nth(1)
            .expect("token in link")
            .to_string();
        let page = c.get(&url).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let r = c
            .post(self.url("/setup"))
            .form(&[
                ("token", token.as_str()),
                ("username", name),
                ("password", ADMIN_PASSWORD),
                ("password_confirm", ADMIN_PASSWORD),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "setup accepted");
        c
    }

    /// GETs a page and returns its CSRF token.
    pub async fn csrf(&self, c: &Client, path: &str) -> String {
        let body = c
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        csrf_in(&body)
    }

    /// Signs in with a fresh client; returns the client and the answer to the POST.
    pub async fn login(&self, user: &str, password: &str) -> (Client, Response) {
        let c = client();
        let r = self.login_with(&c, user, password).await;
        (c, r)
    }

    pub async fn login_with(&self, c: &Client, user: &str, password: &str) -> Response {
        let csrf = self.csrf(c, "/login").await;
        c.post(self.url("/login"))
            .form(&[("username", user), ("password", password), ("csrf", &csrf)])
            .send()
            .await
            .unwrap()
    }

    /// An admin adds a user through the Users page.
    pub async fn add_user(&self, admin: &Client, name: &str, role: &str, password: &str) {
        let csrf = self.csrf(admin, "/users").await;
        let r = admin
            .post(self.url("/users"))
            .form(&[
                ("csrf", csrf.as_str()),
                ("username", name),
                ("role", role),
                ("password", password),
                ("password_confirm", password),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "user {name} created");
        // The Users page takes the one-time notice.
        let page = self.get_text(admin, "/users").await;
        assert!(page.contains(&format!("Created {name} ")), "{page}");
    }

    /// Signs in the first admin and returns an API token for it.
    pub async fn admin_token(&self, admin: &Client) -> String {
        self.token_for(admin, "admin").await
    }

    /// A viewer `vic` made by `admin`: a signed-in client and an API token of theirs.
    pub async fn viewer(&self, admin: &Client) -> (Client, String) {
        self.add_user(admin, "vic", "viewer", "viewer-password-1")
            .await;
        let token = self.token_for(admin, "vic").await;
        let c = client();
        self.login_with(&c, "vic", "viewer-password-1").await;
        (c, token)
    }

    /// An API token for `user`, made by an admin on the Users page.
    pub async fn token_for(&self, admin: &Client, user: &str) -> String {
        let csrf = self.csrf(admin, "/users").await;
        let r = admin
            .post(self.url("/tokens"))
            .form(&[
                ("csrf", csrf.as_str()),
                ("username", user),
                ("label", "tests"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "token for {user}");
        assert_eq!(r.headers()["location"], "/users");
        let page = self.get_text(admin, "/users").await;
        let marker = "id=\"new-token\" class=\"secret\">";
        let start = page.find(marker).expect("token shown") + marker.len();
        page[start..start + page[start..].find('<').unwrap()].to_string()
    }

    /// A page's text, read with `c`.
    pub async fn get_text(&self, c: &Client, path: &str) -> String {
        c.get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The audit log's first page as text, for assertions.
    pub async fn audit_text(&self, admin: &Client) -> String {
        admin
            .get(self.url("/audit"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let h = self.handle.clone();
        drop(h.stop(false));
    }
}

/// libvirt's own schema check of a domain definition (libvirt-clients, installed by
/// `make test`).
pub fn validates_domain(xml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vm.xml");
    std::fs::write(&path, xml).unwrap();
    let out = std::process::Command::new("virt-xml-validate")
        .arg(&path)
        .arg("domain")
        .output()
        .expect("virt-xml-validate (libvirt-clients) runs: `make test-deps` installs it");
    assert!(
        out.status.success(),
        "libvirt's schema refused:\n{xml}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
