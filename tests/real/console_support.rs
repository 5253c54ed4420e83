//! Shared by the console tests: a real tiny guest on qemu:///system, the app with its
//! state at hand (console counters), signed-in clients whose cookie can be given to a
//! websocket client, and websocket helpers.
#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use reqwest::cookie::{CookieStore, Jar};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::{self, Message};

// The real-libvirtd helpers are shared with the lifecycle tests (tests/common/real.rs).
pub use crate::common::real::{guest_dir, virsh, URI};

pub fn unique(prefix: &str) -> String {
    let mut b = [0u8; 4];
    getrandom(&mut b);
    format!("{prefix}{}-{}", std::process::id(), hex(&b))
}

fn getrandom(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .expect("/dev/urandom");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A guest on the real libvirtd, destroyed (and undefined) when dropped.
pub struct Guest {
    pub name: String,
    pub serial_log: PathBuf,
    persistent: bool,
    _files: tempfile::TempDir,
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = virsh(&["destroy", &self.name]);
        if self.persistent {
            let _ = virsh(&["undefine", &self.name, "--checkpoints-metadata"]);
        }
        if !self.serial_log.starts_with(self._files.path()) {
            let _ = std::fs::remove_file(&self.serial_log);
        }
    }
}

impl Guest {
    /// Boots the tiny guest (transient). `start = false` defines it without starting it.
    pub fn new(start: bool) -> Guest {
        Guest::with_devices(start, "")
    }

    /// The tiny guest with `devices` (domain XML) added to its `<devices>`.
    pub fn with_devices(start: bool, devices: &str) -> Guest {
        Guest::with_devices_in(start, devices, std::path::Path::new("/var/tmp"), None)
    }

    /// The tiny guest with `devices`, its kernel in a new directory under `files_in` and
    /// its serial log in `log_in` (`<name>-serial.log`; else beside its kernel).
    pub fn with_devices_in(
        start: bool,
        devices: &str,
        files_in: &std::path::Path,
        log_in: Option<&std::path::Path>,
    ) -> Guest {
        let version = virsh(&["version"]);
        assert!(
            version.status.success(),
            "libvirtd is not answering on {URI}: {}; run scripts/start-libvirt.sh (make test does)",
            String::from_utf8_lossy(&version.stderr)
        );
        let files = tempfile::Builder::new()
            .prefix("virtdeck-cons-")
            .tempdir_in(files_in)
            .unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(files.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let src = guest_dir();
        for f in ["vmlinuz", "initrd.img"] {
            std::fs::copy(src.join(f), files.path().join(f)).unwrap();
        }
        let name = unique("vdcons-");
        let serial_log = match log_in {
            Some(dir) => dir.join(format!("{name}-serial.log")),
            None => files.path().join("serial.log"),
        };
        let xml = include_str!("../fixtures/tiny-guest-domain.xml")
            .replace("@NAME@", &name)
            .replace("@GUEST_DIR@", &files.path().display().to_string())
            .replace("@SERIAL_LOG@", &serial_log.display().to_string())
            .replace("</devices>", &format!("{devices}</devices>"));
        let xml_path = files.path().join("domain.xml");
        std::fs::write(&xml_path, xml).unwrap();
        let verb = if start { "create" } else { "define" };
        let out = virsh(&[verb, xml_path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "virsh {verb} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Guest {
            name,
            serial_log,
            persistent: !start,
            _files: files,
        }
    }

    /// Waits until the guest's serial log shows the banner (its shell is up).
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let log = std::fs::read_to_string(&self.serial_log).unwrap_or_default();
            if crate::common::real::shows_banner(&log) {
                // Give the shell a moment to print its prompt.
                tokio::time::sleep(Duration::from_millis(500)).await;
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no banner on the serial console of {}; log so far:\n{log}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// The app on the real libvirtd, plain HTTP on loopback, with its state.
pub struct App {
    pub base: String,
    pub addr: std::net::SocketAddr,
    pub setup_url: Option<String>,
    pub state: actix_web::web::Data<virtdeck::web::AppState>,
    pub handle: actix_web::dev::ServerHandle,
    pub _data_dir: tempfile::TempDir,
}

impl Drop for App {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

pub const ADMIN_PASSWORD: &str = "admin-password-1";

pub async fn spawn_app(tweak: impl FnOnce(&mut virtdeck::config::Config)) -> App {
    let data_dir = tempfile::tempdir().unwrap();
    let mut cfg = virtdeck::config::Config {
        listen: "127.0.0.1:0".into(),
        data_dir: data_dir.path().to_path_buf(),
        libvirt_uri: URI.into(),
        ..Default::default()
    };
    cfg.tls.enabled = false;
    tweak(&mut cfg);
    let running = virtdeck::web::server::start(cfg).expect("app starts");
    let handle = running.server.handle();
    let app = App {
        base: running.base_url(),
        addr: running.addr,
        setup_url: running.setup_url.clone(),
        state: running.state.clone(),
        handle,
        _data_dir: data_dir,
    };
    tokio::spawn(running.server);
    app
}

/// A signed-in browser-like client whose session cookie we can read.
pub struct User {
    pub http: reqwest::Client,
    jar: Arc<Jar>,
    pub csrf: String,
}

fn jar_client() -> (reqwest::Client, Arc<Jar>) {
    let jar = Arc::new(Jar::default());
    let http = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    (http, jar)
}

fn csrf_in(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("page has a csrf field") + marker.len();
    let end = html[start..].find('"').expect("closing quote") + start;
    html[start..end].to_string()
}

impl App {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Our own origin, as a browser on this app would send it.
    pub fn origin(&self) -> String {
        self.base.clone()
    }

    /// Creates the first admin and returns it signed in.
    pub async fn setup_admin(&self) -> User {
        let (http, jar) = jar_client();
        let url = self.setup_url.clone().expect("setup link");
        let token = url.split("token=").nth(1).unwrap().to_string();
        http.get(&url).send().await.unwrap();
        let r = http
            .post(self.url("/setup"))
            .form(&[
                ("token", token.as_str()),
                ("username", "admin"),
                ("password", ADMIN_PASSWORD),
                ("password_confirm", ADMIN_PASSWORD),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::SEE_OTHER, "setup accepted");
        let csrf = self.page_csrf(&http).await;
        User { http, jar, csrf }
    }

    async fn page_csrf(&self, http: &reqwest::Client) -> String {
        let body = http
            .get(self.url("/host"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        csrf_in(&body)
    }

    /// An admin adds a user; returns that user signed in.
    pub async fn add_user(&self, admin: &User, name: &str, role: &str) -> User {
        let password = "user-password-1";
        let r = admin
            .http
            .post(self.url("/users"))
            .form(&[
                ("csrf", admin.csrf.as_str()),
                ("username", name),
                ("role", role),
                ("password", password),
                ("password_confirm", password),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            reqwest::StatusCode::SEE_OTHER,
            "user {name} created (the form answers with a redirect)"
        );
        let (http, jar) = jar_client();
        let body = http
            .get(self.url("/login"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let r = http
            .post(self.url("/login"))
            .form(&[
                ("username", name),
                ("password", password),
                ("csrf", &csrf_in(&body)),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            reqwest::StatusCode::SEE_OTHER,
            "{name} signs in"
        );
        let csrf = self.page_csrf(&http).await;
        User { http, jar, csrf }
    }

    /// An API token for the admin.
    pub async fn admin_token(&self, admin: &User) -> String {
        let r = admin
            .http
            .post(self.url("/tokens"))
            .form(&[
                ("csrf", admin.csrf.as_str()),
                ("username", "admin"),
                ("label", "console-tests"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::SEE_OTHER, "token made");
        // Shown once, on the page the form redirects to.
        let page = admin
            .http
            .get(self.url("/users"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let marker = "id=\"new-token\" class=\"secret\">";
        let start = page.find(marker).expect("token shown") + marker.len();
        page[start..start + page[start..].find('<').unwrap()].to_string()
    }

    /// POSTs for a console ticket as `user`; returns the status and JSON answer.
    pub async fn mint(
        &self,
        user: &User,
        vm: &str,
        kind: &str,
        force: bool,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let r = user
            .http
            .post(self.url(&format!("/vms/{vm}/console/{kind}/ticket")))
            .header("x-csrf-token", &user.csrf)
            .json(&serde_json::json!({ "force": force }))
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Mints a ticket that must be granted; returns the websocket path.
    pub async fn ticket(&self, user: &User, vm: &str, kind: &str) -> String {
        let (s, v) = self.mint(user, vm, kind, false).await;
        assert_eq!(s, reqwest::StatusCode::OK, "ticket for {kind} on {vm}: {v}");
        v["websocket"].as_str().unwrap().to_string()
    }
}

impl User {
    /// The `Cookie` header this user's browser would send to the app.
    pub fn cookie(&self, app: &App) -> String {
        let url: reqwest::Url = app.base.parse().unwrap();
        self.jar
            .cookies(&url)
            .expect("signed in: has a cookie")
            .to_str()
            .unwrap()
            .to_string()
    }
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How to present ourselves on the websocket upgrade.
pub struct Upgrade<'a> {
    pub cookie: Option<String>,
    pub bearer: Option<&'a str>,
    pub origin: Option<String>,
}

/// Opens a websocket; `Err(status)` if the upgrade was refused with an HTTP answer.
pub async fn connect(url: &str, how: Upgrade<'_>) -> Result<Ws, StatusCode> {
    let mut req = url.into_client_request().unwrap();
    let h = req.headers_mut();
    h.insert("sec-websocket-protocol", HeaderValue::from_static("binary"));
    if let Some(c) = how.cookie {
        h.insert("cookie", HeaderValue::from_str(&c).unwrap());
    }
    if let Some(b) = how.bearer {
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {b}")).unwrap(),
        );
    }
    if let Some(o) = how.origin {
        h.insert("origin", HeaderValue::from_str(&o).unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, resp)) => {
            assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
            Ok(ws)
        }
        Err(tungstenite::Error::Http(resp)) => Err(resp.status()),
        Err(e) => panic!("websocket to {url} failed unexpectedly: {e}"),
    }
}

/// Turns a websocket into a byte stream (for the VNC client), through a duplex pipe.
pub fn ws_as_stream(ws: Ws) -> tokio::io::DuplexStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    let (mut rd, mut wr) = tokio::io::split(theirs);
    let (mut sink, mut stream) = ws.split();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = sink.close().await;
                    return;
                }
                Ok(n) => {
                    if sink
                        .send(Message::Binary(buf[..n].to_vec().into()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    tokio::spawn(async move {
        while let Some(Ok(m)) = stream.next().await {
            match m {
                Message::Binary(b) if wr.write_all(&b).await.is_err() => return,
                Message::Close(_) => return,
                _ => {}
            }
        }
    });
    ours
}

/// Reads serial output until `done(text so far)` or the deadline; returns the text.
///
/// `done` is asked when the output pauses and at most every 100 ms while it flows: asked
/// after every frame of a flood, it would scan the whole text thousands of times and the
/// reader would fall minutes behind (and miss the console's idle timeout).
pub async fn read_serial_until(
    ws: &mut Ws,
    within: Duration,
    done: impl Fn(&str) -> bool,
) -> String {
    const QUIET: Duration = Duration::from_millis(20);
    const CHECK_EVERY: Duration = Duration::from_millis(100);
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut checked = tokio::time::Instant::now();
    loop {
        let wake = (tokio::time::Instant::now() + QUIET).min(deadline);
        match tokio::time::timeout_at(wake, ws.next()).await {
            Ok(Some(Ok(m))) => {
                match m {
                    Message::Binary(b) => text.push_str(&String::from_utf8_lossy(&b)),
                    Message::Text(t) => text.push_str(t.as_str()),
                    Message::Close(c) => {
                        panic!("the serial console closed: {c:?}; output so far:\n{text}")
                    }
                    _ => {}
                }
                if checked.elapsed() < CHECK_EVERY && tokio::time::Instant::now() < deadline {
                    continue;
                }
            }
            Ok(Some(Err(e))) => panic!("websocket error {e}; output so far:\n{text}"),
            Ok(None) => panic!("the serial websocket ended; output so far:\n{text}"),
            // Quiet for a moment (or the deadline).
            Err(_) => {}
        }
        if done(&text) || tokio::time::Instant::now() >= deadline {
            return text;
        }
        checked = tokio::time::Instant::now();
    }
}

/// A line of output that is exactly `marker` (not the echoed command line).
pub fn has_output_line(text: &str, marker: &str) -> bool {
    text.split(['\r', '\n']).any(|l| l.trim() == marker)
}

/// Types `command` into the serial console until a line of output is exactly `want`.
pub async fn serial_until(ws: &mut Ws, command: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = String::new();
    while Instant::now() < deadline {
        ws.send(Message::Binary(format!("{command}\r").into_bytes().into()))
            .await
            .unwrap();
        seen.push_str(
            &read_serial_until(ws, Duration::from_secs(5), |t| has_output_line(t, want)).await,
        );
        if has_output_line(&seen, want) {
            return;
        }
    }
    panic!("no line {want:?} after {command:?}; output:\n{seen}");
}

pub async fn serial(app: &crate::common::TestApp, api: &crate::common::api::Api, vm: &str) -> Ws {
    let (s, v) = api
        .post(
            &format!("/api/v1/vms/{vm}/console/serial"),
            serde_json::json!({"force": true}),
        )
        .await;
    assert_eq!(s, reqwest::StatusCode::OK, "{v}");
    let url = format!(
        "{}{}",
        app.base.replacen("http", "ws", 1),
        v["websocket"].as_str().unwrap()
    );
    connect(
        &url,
        Upgrade {
            cookie: None,
            bearer: Some(&api.token),
            origin: None,
        },
    )
    .await
    .expect("serial websocket accepted")
}
