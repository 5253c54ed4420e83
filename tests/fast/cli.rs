//! The shell tools share the server's store: accounts and tokens made with them work
//! in the web console and the API.

use crate::common;

use common::{run_bin, spawn_app_with};
use reqwest::StatusCode;

#[tokio::test]
async fn user_add_and_token_create_work_with_the_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();

    let out = run_bin(
        &[
            "--data-dir",
            d,
            "user",
            "add",
            "alice",
            "--role",
            "admin",
            "--password-stdin",
        ],
        "alice-password-1\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Refusals say what is wrong and change nothing.
    let dup = run_bin(
        &[
            "--data-dir",
            d,
            "user",
            "add",
            "alice",
            "--role",
            "viewer",
            "--password-stdin",
        ],
        "another-password\n",
    );
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("exists already"));
    let bad_role = run_bin(
        &[
            "--data-dir",
            d,
            "user",
            "add",
            "bob",
            "--role",
            "root",
            "--password-stdin",
        ],
        "bob-password-1\n",
    );
    assert!(!bad_role.status.success());
    assert!(String::from_utf8_lossy(&bad_role.stderr).contains("viewer, operator or admin"));
    let short = run_bin(
        &[
            "--data-dir",
            d,
            "user",
            "add",
            "bob",
            "--role",
            "viewer",
            "--password-stdin",
        ],
        "short\n",
    );
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 10 characters"));
    let no_stdin_flag = run_bin(
        &["--data-dir", d, "user", "add", "bob", "--role", "viewer"],
        "",
    );
    assert!(
        !no_stdin_flag.status.success(),
        "a password is never taken from argv"
    );

    let out = run_bin(&["--data-dir", d, "token", "create", "--user", "alice"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let token = stdout.lines().last().unwrap().trim().to_string();
    assert!(
        token.starts_with("vdk_"),
        "token on the last line: {stdout}"
    );

    let list = run_bin(&["--data-dir", d, "user", "list"], "");
    assert!(String::from_utf8_lossy(&list.stdout).contains("alice\tadmin"));

    // The server on the same data dir: no setup link (an account exists), and both
    // the password and the token work.
    let path = dir.path().to_path_buf();
    let app = spawn_app_with(|c| c.data_dir = path).await;
    assert!(
        app.setup_url.is_none(),
        "no setup link once an account exists"
    );
    let (admin, r) = app.login("alice", "alice-password-1").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let who: serde_json::Value = reqwest::Client::new()
        .get(app.url("/api/v1/whoami"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["username"], "alice");
    assert_eq!(who["role"], "admin");
    let audit = app.audit_text(&admin).await;
    assert!(audit.contains("shell:"), "shell actions are audited too");
    assert!(audit.contains("token.create"));
}

#[test]
fn config_file_is_shared_by_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("virtdeck.toml");
    std::fs::write(
        &cfg,
        format!("data_dir = {:?}\n", data.display().to_string()),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let out = run_bin(
        &[
            "--config",
            c,
            "user",
            "add",
            "carol",
            "--role",
            "operator",
            "--password-stdin",
        ],
        "carol-password-1",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        data.join("virtdeck.db").exists(),
        "the file's data_dir was used"
    );
    let list = run_bin(&["--config", c, "user", "list"], "");
    assert!(String::from_utf8_lossy(&list.stdout).contains("carol\toperator"));

    // A broken config file is reported with its path.
    std::fs::write(&cfg, "listen = 42\n").unwrap();
    let out = run_bin(&["--config", c, "user", "list"], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("virtdeck.toml"));
}

#[test]
fn config_defaults_prints_a_complete_valid_file() {
    let out = run_bin(&["config", "defaults"], "");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let parsed: virtdeck::config::Config = toml::from_str(&text).expect("valid TOML");
    assert_eq!(parsed.listen, "0.0.0.0:9443");
    for key in [
        "idle_timeout_seconds",
        "lock_after_failures",
        "virt_type",
        "allow_plain_http_on_any_address",
    ] {
        assert!(text.contains(key), "{key} listed:\n{text}");
    }
}

#[test]
fn plain_http_on_a_public_address_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_bin(
        &[
            "--data-dir",
            dir.path().to_str().unwrap(),
            "serve",
            "--demo",
            "--no-tls",
            "--listen",
            "0.0.0.0:0",
        ],
        "",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("clear text"));
}
