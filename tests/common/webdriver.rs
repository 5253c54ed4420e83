//! A small W3C WebDriver client (chromedriver + headless Chromium) for the browser tests,
//! with script execution for reading canvases and terminals.

use base64::Engine as _;
use serde_json::{json, Value};
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// The key under which WebDriver returns an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
pub const WAIT: Duration = Duration::from_secs(10);

/// A small W3C WebDriver client: one chromedriver child process and one browser session.
/// Dropping it ends the session (if still open) and kills chromedriver.
pub struct Browser {
    http: reqwest::Client,
    driver: Child,
    port: u16,
    /// `http://127.0.0.1:PORT/session/ID`
    session: String,
    session_id: Option<String>,
    /// The fresh Chromium profile, removed after Chromium has quit.
    profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start() -> Browser {
        for (bin, what) in [(CHROMEDRIVER, "chromedriver"), (CHROMIUM, "Chromium")] {
            assert!(
                Path::new(bin).exists(),
                "{what} not found at {bin}: the browser test needs the Debian packages \
                 chromium and chromium-driver; run `make test`, which installs them"
            );
        }
        let port = free_port();
        std::fs::create_dir_all(artifacts_dir()).expect("create target/test-artifacts");
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                artifacts_dir().join("chromedriver.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {CHROMEDRIVER}: {e}; run `make test`, which installs it")
            });
        let profile = tempfile::tempdir().expect("temp dir for the Chromium profile");
        let mut b = Browser {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
            driver,
            port,
            session: String::new(),
            session_id: None,
            profile,
        };
        b.wait_for_driver().await;

        let args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--no-first-run".into(),
            "--window-size=1280,900".into(),
            format!("--user-data-dir={}", b.profile.path().display()),
        ];
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    // Test apps with TLS on use their own self-signed certificates.
                    "acceptInsecureCerts": true,
                    "goog:chromeOptions": { "binary": CHROMIUM, "args": args }
                }
            }
        });
        let base = format!("http://127.0.0.1:{port}");
        let v = b
            .call(
                reqwest::Method::POST,
                &format!("{base}/session"),
                Some(caps),
            )
            .await;
        let id = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in the new-session answer: {v}"))
            .to_string();
        b.session = format!("{base}/session/{id}");
        b.session_id = Some(id);
        b
    }

    pub async fn wait_for_driver(&mut self) {
        let url = format!("http://127.0.0.1:{}/status", self.port);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.driver.try_wait().expect("poll chromedriver") {
                panic!("chromedriver exited at start ({status}); see target/test-artifacts/chromedriver.log");
            }
            if let Ok(r) = self.http.get(&url).send().await {
                if let Ok(v) = r.json::<Value>().await {
                    if v["value"]["ready"] == true {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready on port {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One WebDriver command; returns its `value`, panics with WebDriver's message on error.
    pub async fn call(&self, method: reqwest::Method, url: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method.clone(), url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {url}: {e}"));
        let status = r.status();
        let mut v: Value = r
            .json()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {url}: answer is not JSON: {e}"));
        if !status.is_success() || v["value"].get("error").is_some() {
            panic!(
                "WebDriver {method} {url} failed ({status}): {} — {}",
                v["value"]["error"], v["value"]["message"]
            );
        }
        v["value"].take()
    }

    pub async fn get(&self, path: &str) -> Value {
        self.call(
            reqwest::Method::GET,
            &format!("{}{path}", self.session),
            None,
        )
        .await
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            &format!("{}{path}", self.session),
            Some(body),
        )
        .await
    }

    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    pub async fn current_url(&self) -> String {
        self.get("/url")
            .await
            .as_str()
            .expect("url is a string")
            .to_string()
    }

    /// The path (and query) of the current page, e.g. `/host`.
    pub async fn path(&self) -> String {
        let url = self.current_url().await;
        let after_scheme = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
        after_scheme
            .find('/')
            .map_or("/".into(), |i| after_scheme[i..].to_string())
    }

    pub async fn wait_for_path(&self, want: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let path = self.path().await;
            if path == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "expected to reach {want}, still on {path}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn find_by(&self, using: &str, value: &str) -> Option<String> {
        let v = self
            .post("/elements", json!({ "using": using, "value": value }))
            .await;
        v.as_array()
            .and_then(|a| a.first())
            .map(|e| e[ELEMENT_KEY].as_str().expect("element id").to_string())
    }

    /// The first element matching a CSS selector; panics naming the page if there is none.
    pub async fn find(&self, css: &str) -> String {
        match self.find_by("css selector", css).await {
            Some(id) => id,
            None => panic!("no element matches {css:?} on {}", self.current_url().await),
        }
    }

    pub async fn find_all(&self, css: &str) -> Vec<String> {
        let v = self
            .post(
                "/elements",
                json!({ "using": "css selector", "value": css }),
            )
            .await;
        v.as_array()
            .expect("elements array")
            .iter()
            .map(|e| e[ELEMENT_KEY].as_str().expect("element id").to_string())
            .collect()
    }

    pub async fn text(&self, el: &str) -> String {
        let v = self.get(&format!("/element/{el}/text")).await;
        v.as_str().unwrap_or_default().to_string()
    }

    /// The visible text of the element `css` names, read in one step in the page (a
    /// live page may swap the element between a find and a read), waiting for it to
    /// exist like [`Browser::find`].
    pub async fn text_of(&self, css: &str) -> String {
        const READ: &str = "const e = document.querySelector(arguments[0]); \
                            return e ? e.innerText.trim() : null;";
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(text) = self.execute(READ, json!([css])).await.as_str() {
                return text.to_string();
            }
            assert!(Instant::now() < deadline, "no element matches {css}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn click(&self, el: &str) {
        self.post(&format!("/element/{el}/click"), json!({})).await;
    }

    pub async fn clear(&self, el: &str) {
        self.post(&format!("/element/{el}/clear"), json!({})).await;
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.clear(&el).await;
        self.post(&format!("/element/{el}/value"), json!({ "text": text }))
            .await;
    }

    /// Saves a PNG of the viewport to `target/test-artifacts/NAME.png` and checks it is real.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.get("/screenshot").await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().expect("screenshot is a base64 string"))
            .expect("screenshot decodes as base64");
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "screenshot {name} is not a PNG"
        );
        assert!(
            png.len() > 5 * 1024,
            "screenshot {name} is only {} bytes: a blank page?",
            png.len()
        );
        let path = artifacts_dir().join(format!("{name}.png"));
        std::fs::write(&path, &png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Ends the browser session (closes Chromium).
    pub async fn quit(mut self) {
        if let Some(_id) = self.session_id.take() {
            self.call(reqwest::Method::DELETE, &self.session.clone(), None)
                .await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // After a failed assertion the session is still open: end it so Chromium exits,
        // with a plain blocking request since there is no runtime to await on here.
        if let Some(id) = self.session_id.take() {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = write!(
                    s,
                    "DELETE /session/{id} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
                    self.port
                );
                // The answer comes once Chromium has quit; chromedriver may keep the
                // connection open after it, so read one chunk rather than to the end.
                let _ = s.read(&mut [0u8; 1024]);
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

pub fn artifacts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts")
}

impl Browser {
    /// Runs a synchronous script in the page and returns its value.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": args }))
            .await
    }

    /// Creates the first admin `name` with `password` through the one-time setup link,
    /// and waits until the browser is on /host, signed in.
    pub async fn set_up_first_admin(&self, setup_url: &str, name: &str, password: &str) {
        self.goto(setup_url).await;
        assert_eq!(self.text_of("form h2").await, "Create the first admin");
        self.type_into("input[name=username]", name).await;
        self.type_into("input[name=password]", password).await;
        self.type_into("input[name=password_confirm]", password)
            .await;
        let submit = self.find("form button[type=submit]").await;
        self.click(&submit).await;
        self.wait_for_path("/host").await;
    }

    /// Runs `script` until it returns a string, and returns it; panics after [`WAIT`].
    pub async fn wait_for_value(&self, script: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(v) = self.execute(script, json!([])).await.as_str() {
                return v.to_string();
            }
            assert!(Instant::now() < deadline, "timed out running {script}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs `script` until it returns true, or panics after `within` with `what`.
    pub async fn wait_until(&self, script: &str, within: Duration, what: &str) {
        let deadline = Instant::now() + within;
        loop {
            if self.execute(script, json!([])).await == Value::Bool(true) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Sends keystrokes to an element.
    pub async fn send_keys(&self, el: &str, text: &str) {
        self.post(&format!("/element/{el}/value"), json!({ "text": text }))
            .await;
    }
}
