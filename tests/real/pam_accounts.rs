//! Host accounts signing in through the host's real PAM stack (`pam_unix`, `/etc/shadow`):
//! accounts and groups made here with useradd/groupadd/chpasswd and removed after. The
//! role comes from the groups; no group, no access; wrong, locked, expired and
//! must-change passwords are refused with what to do; the same throttle as local
//! sign-ins; a name that is local and a host account is refused until an admin picks.

use crate::common;

use common::{location, spawn_app_with};
use reqwest::StatusCode;
use std::process::Command;

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| {
        panic!("{cmd} could not run: {e} (these tests need root and the passwd package)")
    });
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Host accounts, groups and a PAM service of this test run; removed on drop.
struct Host {
    prefix: String,
    users: Vec<String>,
    groups: Vec<String>,
    service: String,
}

impl Host {
    fn new() -> Host {
        let prefix = format!("vdt{}", std::process::id() % 100_000);
        let service = format!("virtdeck-test-{prefix}");
        // Authentication and account checks by pam_unix alone, without its failure delay.
        std::fs::write(
            format!("/etc/pam.d/{service}"),
            "auth required pam_unix.so nodelay\naccount required pam_unix.so\n",
        )
        .expect("write a PAM service (the test needs root)");
        let mut h = Host {
            prefix,
            users: Vec::new(),
            groups: Vec::new(),
            service,
        };
        for role in ["admin", "operator", "viewer"] {
            let g = h.group(role);
            run("groupadd", &[&g]);
            h.groups.push(g);
        }
        h
    }

    fn group(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    fn name(&self, who: &str) -> String {
        format!("{}{who}", self.prefix)
    }

    /// A host account `who` with `password`, in the virtdeck groups of `roles`.
    fn account(&mut self, who: &str, password: &str, roles: &[&str]) -> String {
        let name = self.name(who);
        run(
            "useradd",
            &["--no-create-home", "--shell", "/usr/sbin/nologin", &name],
        );
        self.users.push(name.clone());
        let mut child = Command::new("chpasswd")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("chpasswd");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{name}:{password}\n").as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "chpasswd {name}");
        for r in roles {
            run("usermod", &["-aG", &self.group(r), &name]);
        }
        name
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        for u in &self.users {
            let _ = Command::new("userdel").arg(u).output();
        }
        for g in &self.groups {
            let _ = Command::new("groupdel").arg(g).output();
        }
        let _ = std::fs::remove_file(format!("/etc/pam.d/{}", self.service));
    }
}

async fn sign_in(
    app: &common::TestApp,
    name: &str,
    password: &str,
) -> (reqwest::Client, StatusCode, String) {
    let (c, r) = app.login(name, password).await;
    let status = r.status();
    let body = if status == StatusCode::SEE_OTHER {
        location(&r)
    } else {
        r.text().await.unwrap()
    };
    (c, status, body)
}

#[tokio::test]
async fn host_accounts_sign_in_through_pam_with_the_role_of_their_group() {
    let _gate = crate::gate::enter(module_path!());
    let mut host = Host::new();
    let olga = host.account("olga", "olga-host-pw-1", &["operator"]);
    let nogroup = host.account("nogroup", "nogroup-pw-1", &[]);
    let locked = host.account("locked", "locked-pw-1", &["viewer"]);
    let expired = host.account("expired", "expired-pw-1", &["viewer"]);
    let change = host.account("change", "change-pw-1", &["viewer"]);
    let twice = host.account("twice", "twice-host-pw-1", &["viewer"]);
    let flood = host.account("flood", "flood-pw-1", &["viewer"]);
    run("usermod", &["-L", &locked]);
    run("chage", &["-E", "1", &expired]);
    run("chage", &["-d", "0", &change]);

    let (service, groups) = (
        host.service.clone(),
        virtdeck::config::PamGroups {
            admin: host.group("admin"),
            operator: host.group("operator"),
            viewer: host.group("viewer"),
        },
    );
    let app = spawn_app_with(move |c| {
        c.auth.pam = true;
        c.auth.pam_service = service;
        c.auth.pam_groups = groups;
        c.login.slow_after_failures = 100;
        c.login.lock_after_failures = 3;
        c.login.address_lock_after_failures = 100;
    })
    .await;
    // A local admin keeps working beside host accounts.
    let admin = app.setup_admin("admin").await;
    app.add_user(&admin, &twice, "viewer", "twice-local-pw-1")
        .await;

    // The right host password: signed in as an operator (her group).
    let (c, status, to) = sign_in(&app, &olga, "olga-host-pw-1").await;
    assert_eq!((status, to.as_str()), (StatusCode::SEE_OTHER, "/host"));
    let page = app.get_text(&c, "/host").await;
    assert!(
        page.contains(&format!(">{olga}</a> <small>(operator)</small>")),
        "{page}"
    );
    let users = app.get_text(&admin, "/users").await;
    assert!(users.contains("host account (PAM)"), "{users}");

    // Wrong password; a locked account looks the same.
    let (_, status, body) = sign_in(&app, &olga, "not-her-password").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("Wrong user name or password."));
    let (_, status, _) = sign_in(&app, &locked, "locked-pw-1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // No virtdeck group: no access, and the page says which groups give it.
    let (c, status, body) = sign_in(&app, &nogroup, "nogroup-pw-1").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("is in none of virtdeck") && body.contains(&host.group("viewer")));
    assert_ne!(
        c.get(app.url("/host")).send().await.unwrap().status(),
        StatusCode::OK
    );

    // Expired account, and a password that must be changed first: said as such.
    let (_, status, body) = sign_in(&app, &expired, "expired-pw-1").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("host account has expired"), "{body}");
    let (_, status, body) = sign_in(&app, &change, "change-pw-1").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("must be changed first"), "{body}");

    // A name that is a local account and a host account: refused with what to do, with
    // either password; a wrong one says nothing of it.
    let (_, status, body) = sign_in(&app, &twice, "twice-host-pw-1").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(body.contains("both a virtdeck account and an account of this host"));
    let (_, status, _) = sign_in(&app, &twice, "twice-local-pw-1").await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (_, status, body) = sign_in(&app, &twice, "neither-pw-1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(!body.contains("both a virtdeck account"));

    // The same throttle as local sign-ins: three wrong host passwords lock the account,
    // and then the right one is refused too.
    for _ in 0..3 {
        let (_, status, _) = sign_in(&app, &flood, "wrong-pw").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (_, status, _) = sign_in(&app, &flood, "flood-pw-1").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);

    // Her group changes on the host: the next sign-in has the new role.
    run("gpasswd", &["-d", &olga, &host.group("operator")]);
    run("usermod", &["-aG", &host.group("admin"), &olga]);
    let (c, status, _) = sign_in(&app, &olga, "olga-host-pw-1").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let page = app.get_text(&c, "/host").await;
    assert!(
        page.contains(&format!(">{olga}</a> <small>(admin)</small>")),
        "{page}"
    );

    let audit = app.audit_text(&admin).await;
    assert!(
        audit.contains("host account in no virtdeck group"),
        "{audit}"
    );
    drop(host);
}
