//! The packages as an admin meets them: the previous version's .deb installed with apt
//! (dependencies resolved by apt), an account made with its binary, the config file
//! edited; the upgrade keeps both, and the installed binary with the packaged config
//! serves the demo host after migrating the database (a copy taken first); `remove`
//! keeps data, `purge` deletes it; a fresh install has no default password, only the
//! link `virtdeck setup-link` prints. The .rpm is read back with rpm. The packages are
//! built before the tests by `make test-packages` (scripts/package.sh).
//!
//! These tests install into the machine's /usr, /etc and /var/lib/virtdeck: they refuse
//! to run where virtdeck's state exists that no test package left.

use crate::common;

use reqwest::StatusCode;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const STATE: &str = "/var/lib/virtdeck";
const CONFIG: &str = "/etc/virtdeck/virtdeck.toml";
const PASSWORD: &str = "keeper-password-1";

fn packages_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-packages")
}

fn package(name: &str) -> PathBuf {
    let p = packages_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: `make test-packages` builds it (make test does)",
        p.display()
    );
    p
}

fn current_deb() -> PathBuf {
    package(&format!(
        "virtdeck_{}-1_amd64.deb",
        env!("CARGO_PKG_VERSION")
    ))
}

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap_or_else(|e| panic!("{cmd} could not run: {e}"))
}

fn ok(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn installed_version() -> Option<String> {
    let out = run("dpkg-query", &["-W", "-f=${Status} ${Version}", "virtdeck"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.strip_prefix("install ok installed ")
        .map(str::to_string)
}

/// apt installs a local .deb and the packages it depends on (not the recommended ones:
/// QEMU and OVMF are the host's business, and the test machine has its own).
fn apt_install(deb: &Path) -> String {
    ok(
        "apt-get",
        &[
            "install",
            "-y",
            "--no-install-recommends",
            "--allow-downgrades",
            deb.to_str().unwrap(),
        ],
    )
}

fn purge() {
    if installed_version().is_some() || run("dpkg", &["-s", "virtdeck"]).status.success() {
        ok("apt-get", &["purge", "-y", "virtdeck"]);
    }
}

/// The installed binary, with `stdin` given.
fn installed(args: &[&str], stdin: &str) -> Output {
    let mut cmd = Command::new("/usr/bin/virtdeck");
    cmd.args(args)
        .env_remove("VIRTDECK_CONFIG")
        .env_remove("VIRTDECK_DATA_DIR");
    common::run_with_stdin(cmd, stdin)
}

/// The installed service as systemd would start it (`ExecStart` of the unit, with the
/// demo host and plain HTTP on loopback for the test); stopped on drop.
struct Serving {
    child: std::process::Child,
    base: String,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve_installed() -> Serving {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let child = Command::new("/usr/bin/virtdeck")
        .args(["--config", CONFIG, "serve", "--demo", "--no-tls"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env_remove("VIRTDECK_DATA_DIR")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the installed virtdeck starts");
    let base = format!("http://127.0.0.1:{port}");
    let mut serving = Serving { child, base };
    let health = format!("{}/healthz", serving.base);
    for _ in 0..600 {
        if let Ok(r) = reqwest::get(&health).await {
            assert_eq!(r.status(), StatusCode::OK);
            return serving;
        }
        if let Ok(Some(status)) = serving.child.try_wait() {
            panic!("the installed virtdeck stopped: {status}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the installed virtdeck did not answer on {health}");
}

async fn sign_in(base: &str, user: &str, password: &str) -> reqwest::Client {
    let c = common::client();
    let page = c
        .get(format!("{base}/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = common::csrf_in(&page);
    let r = c
        .post(format!("{base}/login"))
        .form(&[("username", user), ("password", password), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{user} signs in");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deb_installs_upgrades_with_data_kept_removes_and_purges() {
    let _gate = crate::gate::enter(module_path!());
    let previous = package("virtdeck_0.1.0-1_amd64.deb");
    let current = current_deb();
    purge();
    assert!(
        !Path::new(STATE).exists(),
        "{STATE} exists without a virtdeck package: this test installs virtdeck into the \
         machine and would mix with that state; move it away on a test machine"
    );

    // The previous version, as it was installed: an account made with its shell tool,
    // the config file edited by the admin.
    apt_install(&previous);
    assert_eq!(installed_version().as_deref(), Some("0.1.0-1"));
    let out = installed(
        &[
            "user",
            "add",
            "keeper",
            "--role",
            "admin",
            "--password-stdin",
        ],
        PASSWORD,
    );
    assert!(out.status.success(), "{:?}", out);
    let mut config = std::fs::read_to_string(CONFIG).expect("packaged config");
    config.push_str("\n# kept: edited by the admin\n");
    std::fs::write(CONFIG, &config).unwrap();

    // The upgrade keeps the database and the edited config file.
    let said = apt_install(&current);
    assert_eq!(
        installed_version(),
        Some(format!("{}-1", env!("CARGO_PKG_VERSION")))
    );
    assert!(
        std::fs::read_to_string(CONFIG)
            .unwrap()
            .contains("# kept: edited by the admin"),
        "the admin's config file was replaced"
    );
    assert!(
        !said.contains("virtdeck is installed"),
        "an upgrade is not a first install: {said}"
    );

    // What the package put where.
    let files = ok("dpkg", &["-L", "virtdeck"]);
    for f in [
        "/usr/bin/virtdeck",
        CONFIG,
        "/etc/pam.d/virtdeck",
        "/usr/lib/systemd/system/virtdeck.service",
        "/usr/lib/systemd/system/virtdeck.socket",
        "/usr/share/man/man1/virtdeck.1.gz",
        "/usr/share/man/man1/virtdeck-vm.1.gz",
        "/usr/share/man/man1/virtdeck-setup-link.1.gz",
        "/usr/share/bash-completion/completions/virtdeck",
        "/usr/share/zsh/vendor-completions/_virtdeck",
        "/usr/share/fish/vendor_completions.d/virtdeck.fish",
        "/usr/share/doc/virtdeck/copyright",
        "/usr/share/doc/virtdeck/vendored-browser-code/novnc/LICENSE.txt",
        "/usr/share/doc/virtdeck/vendored-browser-code/xterm/LICENSE",
    ] {
        assert!(
            files.lines().any(|l| l == f),
            "{f} not in the package:\n{files}"
        );
        assert!(Path::new(f).exists(), "{f} not installed");
    }
    let conffiles = ok("dpkg-query", &["-W", "-f=${Conffiles}", "virtdeck"]);
    assert!(conffiles.contains(CONFIG), "{conffiles}");
    // Every line of the packaged config is a comment or a section: the defaults.
    let packaged = std::fs::read_to_string(CONFIG).unwrap();
    assert!(
        packaged.contains("# listen = \"0.0.0.0:9443\""),
        "{packaged}"
    );
    let mode = std::fs::metadata(STATE).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        mode.permissions().mode() & 0o777,
        0o700,
        "{STATE} is private"
    );
    // The man page is the one the binary describes.
    let man = ok("sh", &["-c", "zcat /usr/share/man/man1/virtdeck.1.gz"]);
    assert!(
        man.contains("setup\\-link") && man.contains("VIRTDECK_TOKEN"),
        "{man}"
    );
    // The units as systemd reads them.
    let out = run(
        "systemd-analyze",
        &[
            "verify",
            "--man=no",
            "/usr/lib/systemd/system/virtdeck.service",
            "/usr/lib/systemd/system/virtdeck.socket",
        ],
    );
    assert!(
        out.status.success(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The installed binary with the packaged config: the database is migrated at start,
    // a copy of the old one taken first; the account made before the upgrade signs in.
    {
        let serving = serve_installed().await;
        let c = sign_in(&serving.base, "keeper", PASSWORD).await;
        let vms = c
            .get(format!("{}/api/v1/vms", serving.base))
            .send()
            .await
            .unwrap();
        assert_eq!(vms.status(), StatusCode::OK);
        let vms: serde_json::Value = vms.json().await.unwrap();
        assert!(
            !vms["vms"].as_array().unwrap().is_empty(),
            "the demo host's VMs: {vms}"
        );
        let copies: Vec<String> = std::fs::read_dir(STATE)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("virtdeck.db.before-"))
            .collect();
        assert_eq!(copies.len(), 1, "one copy before migrating: {copies:?}");
        let out = installed(&["setup-link"], "");
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("accounts exist already"));
    }

    // remove: the program goes, the database and the config stay.
    ok("apt-get", &["remove", "-y", "virtdeck"]);
    assert!(!Path::new("/usr/bin/virtdeck").exists());
    assert!(
        Path::new(STATE).join("virtdeck.db").exists(),
        "data kept on remove"
    );
    assert!(Path::new(CONFIG).exists(), "config kept on remove");

    // purge: both gone.
    ok("apt-get", &["purge", "-y", "virtdeck"]);
    assert!(!Path::new(STATE).exists(), "data deleted on purge");
    assert!(
        !Path::new("/etc/virtdeck").exists(),
        "config deleted on purge"
    );

    // A first install: no default account; the shell tool's link makes the first admin.
    let said = apt_install(&current);
    assert!(said.contains("virtdeck setup-link"), "{said}");
    {
        let serving = serve_installed().await;
        let out = installed(&["setup-link", "--url", &serving.base], "");
        assert!(out.status.success(), "{:?}", out);
        let link = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap()
            .to_string();
        let token = link.split("token=").nth(1).expect("a token").to_string();
        let c = common::client();
        assert_eq!(c.get(&link).send().await.unwrap().status(), StatusCode::OK);
        let r = c
            .post(format!("{}/setup", serving.base))
            .form(&[
                ("token", token.as_str()),
                ("username", "first"),
                ("password", PASSWORD),
                ("password_confirm", PASSWORD),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        sign_in(&serving.base, "first", PASSWORD).await;
    }
    purge();
    assert!(!Path::new(STATE).exists());
}

#[test]
fn the_rpm_holds_the_same_files_config_and_requirements() {
    let _gate = crate::gate::enter(module_path!());
    let rpm = package(&format!(
        "virtdeck-{}-1.x86_64.rpm",
        env!("CARGO_PKG_VERSION")
    ));
    let rpm = rpm.to_str().unwrap();
    let files = ok("rpm", &["-qpl", rpm]);
    for f in [
        "/usr/bin/virtdeck",
        CONFIG,
        "/usr/lib/systemd/system/virtdeck.service",
        "/usr/lib/systemd/system/virtdeck.socket",
        "/usr/share/man/man1/virtdeck.1",
        "/usr/share/bash-completion/completions/virtdeck",
        "/usr/share/licenses/virtdeck/vendored-browser-code/novnc/LICENSE.txt",
    ] {
        assert!(
            files.lines().any(|l| l == f),
            "{f} not in the rpm:\n{files}"
        );
    }
    let config = ok("rpm", &["-qpc", rpm]);
    assert!(config.lines().any(|l| l == CONFIG), "{config}");
    let requires = ok("rpm", &["-qpR", rpm]);
    for r in ["libvirt-libs", "genisoimage", "pam", "libvirt.so.0"] {
        assert!(requires.contains(r), "{r} not required:\n{requires}");
    }
    let scripts = ok("rpm", &["-qp", "--scripts", rpm]);
    assert!(
        scripts.contains("install -d -m 0700 /var/lib/virtdeck"),
        "{scripts}"
    );
}

#[test]
fn the_service_unit_keeps_its_exposure_score() {
    let _gate = crate::gate::enter(module_path!());
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/systemd/virtdeck.service");
    let out = ok(
        "systemd-analyze",
        &[
            "security",
            "--offline=yes",
            "--no-pager",
            unit.to_str().unwrap(),
        ],
    );
    let score: f64 = out
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for virtdeck.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{out}"));
    // docs/packaging.md records the score and why each directive is there; a directive
    // dropped by accident raises it.
    assert!(score <= 2.7, "exposure level {score} (recorded: 2.7)");
}
