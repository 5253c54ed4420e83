//! The database survives `kill -9` of the server in the middle of writes: every row
//! whose request was answered is still there, and the file is intact.

use crate::common;

use common::{bin, csrf_in, run_bin};
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn committed_rows_survive_kill_9_mid_write() {
    let _gate = crate::gate::enter(module_path!());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    let cfg = dir.path().join("virtdeck.toml");
    // Every request below is a failed login: let them all through unthrottled.
    std::fs::write(
        &cfg,
        "[login]\nslow_after_failures = 1000000\nlock_after_failures = 1000000\naddress_lock_after_failures = 1000000\n",
    )
    .unwrap();
    let out = run_bin(
        &[
            "--data-dir",
            &d,
            "user",
            "add",
            "admin",
            "--role",
            "admin",
            "--password-stdin",
        ],
        "admin-password-1",
    );
    assert!(out.status.success());

    let mut child = bin()
        .args(["--data-dir", &d, "--config", cfg.to_str().unwrap()])
        .args(["serve", "--demo", "--no-tls", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        let line = lines.next().expect("server printed its address").unwrap();
        if let Some(i) = line.find("url=") {
            break line[i + 4..].split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});

    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for w in 0..6 {
        let base = base.clone();
        let acknowledged = acknowledged.clone();
        workers.push(tokio::spawn(async move {
            let c = common::client();
            let Ok(r) = c.get(format!("{base}/login")).send().await else {
                return;
            };
            let Ok(body) = r.text().await else { return };
            let mut csrf = csrf_in(&body);
            for i in 0.. {
                let name = format!("w{w}-n{i}");
                let sent = c
                    .post(format!("{base}/login"))
                    .form(&[
                        ("username", name.as_str()),
                        ("password", "nope-nope-nope"),
                        ("csrf", csrf.as_str()),
                    ])
                    .send()
                    .await;
                let Ok(r) = sent else { return };
                if r.status() != reqwest::StatusCode::UNAUTHORIZED {
                    return;
                }
                let Ok(body) = r.text().await else { return };
                acknowledged.lock().unwrap().push(name);
                csrf = csrf_in(&body);
            }
        }));
    }
    // Let writes pile up, then kill the server without warning.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let done_before_kill = acknowledged.lock().unwrap().len();
    child.kill().expect("kill -9");
    child.wait().unwrap();
    for w in workers {
        let _ = w.await;
    }
    let acked: Vec<String> = acknowledged.lock().unwrap().clone();
    assert!(
        done_before_kill >= 20,
        "too few writes happened to test anything: {done_before_kill}"
    );

    // Reopen as the next start would (WAL recovery), check integrity and every row.
    let store = virtdeck::store::Store::open(&dir.path().join("virtdeck.db")).unwrap();
    let (entries, total) = store.audit_page(0, 1_000_000).unwrap();
    assert!(total as usize >= acked.len());
    let audited: HashSet<String> = entries
        .into_iter()
        .filter(|e| e.action == "login" && e.result == "failed")
        .map(|e| e.target)
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|n| !audited.contains(*n)).collect();
    assert!(
        lost.is_empty(),
        "{} answered writes lost after kill -9: {lost:?}",
        lost.len()
    );
    let conn = rusqlite::Connection::open(dir.path().join("virtdeck.db")).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}
