//! The shell tools an admin uses beside the installed service: `virtdeck setup-link` for
//! the running service's first admin, `virtdeck vm …` against its API with a token from
//! the environment, and socket activation (`virtdeck.socket`).

use crate::common;

use common::{client, spawn_app_with, ADMIN_PASSWORD};
use reqwest::StatusCode;
use std::process::Output;

/// `virtdeck ARGS` with extra environment, off the async runtime (the app under test
/// runs on it).
async fn virtdeck(args: Vec<String>, env: Vec<(&'static str, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut cmd = common::bin();
        cmd.args(&args)
            .env_remove("VIRTDECK_URL")
            .env_remove("VIRTDECK_TOKEN")
            .env_remove("VIRTDECK_FINGERPRINT");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("virtdeck runs")
    })
    .await
    .unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setup_link_from_the_shell_creates_the_first_admin_of_the_running_service_once() {
    let app = spawn_app_with(|_| {}).await;
    let d = app.data_dir.path().to_str().unwrap().to_string();
    let out = virtdeck(
        vec![
            "--data-dir".into(),
            d.clone(),
            "setup-link".into(),
            "--url".into(),
            app.base.clone(),
        ],
        vec![],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let link = stdout.lines().last().unwrap().trim().to_string();
    assert!(
        link.starts_with(&format!("{}/setup?token=", app.base.trim_end_matches('/'))),
        "{link}"
    );
    let token = link.split("token=").nth(1).unwrap().to_string();
    // A made-up token is refused; the printed one opens the form.
    let c = client();
    let forged = c
        .get(app.url("/setup?token=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::NOT_FOUND);
    let page = c.get(&link).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let made = c
        .post(app.url("/setup"))
        .form(&[
            ("token", token.as_str()),
            ("username", "root-admin"),
            ("password", ADMIN_PASSWORD),
            ("password_confirm", ADMIN_PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), StatusCode::SEE_OTHER);
    // Used: the link, and the one printed at start-up, no longer work.
    let again = client().get(&link).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    let body = again.text().await.unwrap();
    assert!(body.contains("virtdeck setup-link"), "{body}");
    let startup = app.setup_url.clone().unwrap();
    assert_eq!(
        client().get(&startup).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    // With an account, the tool says there is nothing to set up.
    let out = virtdeck(vec!["--data-dir".into(), d, "setup-link".into()], vec![]).await;
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(stderr.contains("accounts exist already"), "{stderr}");
    // The link was audited (who ran the tool), the sign-up as usual.
    let admin = app.login("root-admin", ADMIN_PASSWORD).await.0;
    let audit = app.audit_text(&admin).await;
    assert!(audit.contains("setup.link"), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_commands_work_against_the_running_service_with_a_token_and_its_pinned_certificate() {
    let app = spawn_app_with(|c| c.tls.enabled = true).await;
    assert!(app.base.starts_with("https://"));
    let d = app.data_dir.path().to_str().unwrap().to_string();
    let admin = app.setup_admin("admin").await;
    let token = app.admin_token(&admin).await;
    let env = |token: &str| {
        vec![
            ("VIRTDECK_URL", app.base.clone()),
            ("VIRTDECK_TOKEN", token.to_string()),
        ]
    };
    let vm = |args: &[&str]| {
        let mut v = vec!["--data-dir".to_string(), d.clone(), "vm".into()];
        v.extend(args.iter().map(|a| a.to_string()));
        v
    };

    // The table of the demo host's VMs (the certificate is read from the data dir).
    let out = virtdeck(vm(&["list"]), env(&token)).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let header = stdout.lines().next().unwrap();
    assert!(
        header.starts_with("NAME") && header.contains("STATE"),
        "{stdout}"
    );
    let get = |path: String| {
        let (admin, url) = (admin.clone(), app.url(&path));
        async move {
            let r = admin.get(url).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    let vms = get("/api/v1/vms".into()).await;
    let running: Vec<String> = vms["vms"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["state"] == "running")
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    assert!(!running.is_empty(), "{vms}");
    for name in &running {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(name.as_str()) && l.contains("running")),
            "{name} in {stdout}"
        );
    }

    // Stop one, and ask for one that does not exist in the same call: each outcome is
    // printed, the exit status says one failed, the first did stop.
    let target = running[0].clone();
    let out = virtdeck(vm(&["force-off", &target, "no-such-vm"]), env(&token)).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains(&format!("{target}: shut_off")), "{stdout}");
    assert!(stderr.contains("no-such-vm:"), "{stderr}");
    let one = get(format!("/api/v1/vms/{target}")).await;
    assert_eq!(one["state"], "shut_off");

    let out = virtdeck(vm(&["start", &target]), env(&token)).await;
    assert!(out.status.success(), "{:?}", text(&out));
    let out = virtdeck(vm(&["show", &target, "--json"]), env(&token)).await;
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(shown["state"], "running");

    // A name that would change the URL never leaves the tool.
    let out = virtdeck(vm(&["start", "../host"]), env(&token)).await;
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("is not a VM name"),
        "{:?}",
        text(&out)
    );

    // A wrong token: the server's sentence.
    let out = virtdeck(vm(&["list"]), env("vd_not-a-token")).await;
    assert!(!out.status.success());
    assert!(text(&out).1.contains("401"), "{:?}", text(&out));

    // No token at all: what to set.
    let out = virtdeck(vm(&["list"]), vec![("VIRTDECK_URL", app.base.clone())]).await;
    assert!(!out.status.success());
    assert!(text(&out).1.contains("VIRTDECK_TOKEN"), "{:?}", text(&out));

    // Another certificate than the one pinned: nothing is sent (the token included).
    let mut wrong = env(&token);
    wrong.push(("VIRTDECK_FINGERPRINT", "ab".repeat(32)));
    let out = virtdeck(vm(&["list"]), wrong).await;
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("certificate changed"),
        "{:?}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_serves_on_the_socket_systemd_hands_it() {
    // systemd-socket-activate listens like virtdeck.socket does and starts virtdeck at the
    // first connection with the socket as fd 3 (LISTEN_FDS/LISTEN_PID). The configured
    // `listen` (port 9) is ignored then.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let data = tempfile::tempdir().unwrap();
    let activator = which("systemd-socket-activate").expect(
        "systemd-socket-activate is missing: run `make test-deps` (Debian package systemd)",
    );
    let child = std::process::Command::new(activator)
        .args(["-l", &format!("127.0.0.1:{port}"), "--"])
        .arg(env!("CARGO_BIN_EXE_virtdeck"))
        .args(["--data-dir", data.path().to_str().unwrap()])
        .args(["serve", "--demo", "--no-tls", "--listen", "127.0.0.1:9"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("systemd-socket-activate runs");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(child);
    // The activator listens at once; the first request waits for virtdeck to start.
    let url = format!("http://127.0.0.1:{port}/healthz");
    let mut answer = None;
    for _ in 0..200 {
        match reqwest::Client::new()
            .get(&url)
            .timeout(std::time::Duration::from_secs(30))
            .send()
            .await
        {
            Ok(r) => {
                answer = Some(r);
                break;
            }
            // Not listening yet.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
    let r = answer.expect("virtdeck answered on the activated socket");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), r#"{"status":"ok"}"#);
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}
