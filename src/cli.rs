//! The command line: `serve`, and shell tools that share the server's store.

use crate::auth::password::hash_password;
use crate::auth::secret::{new_api_token, sha256_hex};
use crate::auth::{validate_new_password, validate_username, Role};
use crate::config::Config;
use crate::domain::host::VirtTypeSetting;
use crate::service::{Action, Caller};
use crate::store::{Store, StoreError};
use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use std::io::Read;
use std::path::PathBuf;

mod vm;

/// The configuration file packages install; read when no --config is given and it exists.
pub const PACKAGED_CONFIG: &str = "/etc/virtdeck/virtdeck.toml";

#[derive(Parser, Debug)]
#[command(name = "virtdeck", version, about = "A web console for one KVM host")]
pub struct Cli {
    /// TOML configuration file (see docs/config.md).
    #[arg(long, global = true, env = "VIRTDECK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for the database, TLS certificate and demo files.
    #[arg(long, global = true, env = "VIRTDECK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the web console.
    Serve(ServeArgs),
    /// Manage accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a fresh one-time link that creates the first admin on the running service
    /// (while no account exists). It works once, until it expires.
    SetupLink {
        /// Minutes the link works.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=1440))]
        minutes: u32,
        /// The address admins open virtdeck at (default: this host's name and the
        /// configured port), e.g. https://kvm1.example.net:9443
        #[arg(long)]
        url: Option<String>,
    },
    /// Work on VMs of a running virtdeck through its API (like virsh, for scripts).
    #[command(subcommand, after_long_help = vm::ENVIRONMENT_HELP_SHORT)]
    Vm(vm::VmCommand),
    /// Write the man pages, shell completions and the commented configuration file that
    /// packages install (used by `make deb` and `make rpm`).
    #[command(hide = true)]
    PackageFiles {
        /// Directory to write into.
        out: PathBuf,
    },
}

#[derive(clap::Args, Debug, Default)]
pub struct ServeArgs {
    /// Address:port to listen on (default 0.0.0.0:9443).
    #[arg(long, env = "VIRTDECK_LISTEN")]
    pub listen: Option<String>,
    /// libvirt URI (default qemu:///system).
    #[arg(long, env = "VIRTDECK_LIBVIRT_URI")]
    pub libvirt_uri: Option<String>,
    /// Run on the built-in demo host (libvirt's test driver; no daemon needed).
    #[arg(long)]
    pub demo: bool,
    /// Serve plain HTTP (only on a loopback address unless --force-plain-http).
    #[arg(long)]
    pub no_tls: bool,
    /// Allow plain HTTP on any address (behind a TLS-terminating reverse proxy).
    #[arg(long)]
    pub force_plain_http: bool,
    /// Guest type: auto, kvm or qemu.
    #[arg(long)]
    pub virt_type: Option<VirtTypeSetting>,
    /// Directory every host change writes below (default /); for tests and image builds.
    #[arg(long, env = "VIRTDECK_HOST_ROOT")]
    pub host_root: Option<PathBuf>,
    /// Make live host network changes inside this named network namespace (testing, containers).
    #[arg(long, env = "VIRTDECK_HOST_NETNS")]
    pub host_netns: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create an account. The password is read from standard input.
    Add {
        name: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Read the password from standard input (the only way: never on the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// List accounts.
    List,
    /// Delete an account, its sessions and API tokens.
    Delete { name: String },
    /// Set a new password, read from standard input; ends the user's sessions.
    Passwd {
        name: String,
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Lift a sign-in lock: forget the account's failed sign-ins (and, with --address,
    /// those from that client address too).
    Unlock {
        name: String,
        /// Also forget the failed sign-ins from this address (an address lock).
        #[arg(long)]
        address: Option<std::net::IpAddr>,
    },
    /// Remove the account's second factors (authenticator app, recovery codes) and end its
    /// sessions: for the last admin who lost both. They sign in with their password and,
    /// when their role must have a second factor, set up a new one right then.
    #[command(name = "reset-2fa")]
    Reset2fa { name: String },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create an API token for `Authorization: Bearer`; printed on the last line.
    Create {
        #[arg(long)]
        user: String,
        #[arg(long, default_value = "cli")]
        label: String,
    },
    /// List API tokens (not their secrets).
    List,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print every setting with its default value, as TOML.
    Defaults,
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

/// Defaults, then the file, then flags/environment.
pub fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let packaged = std::path::Path::new(PACKAGED_CONFIG);
    let file = match &cli.config {
        Some(path) => Some(path.as_path()),
        None => packaged.exists().then_some(packaged),
    };
    let mut cfg = Config::load(file)?;
    if let Some(d) = &cli.data_dir {
        cfg.data_dir = d.clone();
    }
    if let Command::Serve(a) = &cli.command {
        if let Some(l) = &a.listen {
            cfg.listen = l.clone();
        }
        if let Some(u) = &a.libvirt_uri {
            cfg.libvirt_uri = u.clone();
        }
        if a.demo {
            cfg.demo = true;
        }
        if a.no_tls {
            cfg.tls.enabled = false;
        }
        if a.force_plain_http {
            cfg.tls.allow_plain_http_on_any_address = true;
        }
        if let Some(v) = a.virt_type {
            cfg.virt_type = v;
        }
        if let Some(r) = &a.host_root {
            cfg.host.root = r.clone();
        }
        if let Some(n) = &a.host_netns {
            cfg.host.netns = Some(n.clone());
        }
    }
    cfg.validate()?;
    Ok(cfg)
}

fn open_store(cfg: &Config) -> anyhow::Result<Store> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data dir {}", cfg.data_dir.display()))?;
    Store::open(&cfg.database_path())
        .with_context(|| format!("cannot open {}", cfg.database_path().display()))
}

fn read_password_stdin() -> anyhow::Result<String> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("cannot read the password from standard input")?;
    let pw = s.strip_suffix('\n').unwrap_or(&s);
    let pw = pw.strip_suffix('\r').unwrap_or(pw);
    Ok(pw.to_string())
}

fn now() -> i64 {
    crate::web::now()
}

/// Writes the audit row of a shell change; the tool fails when it cannot.
fn cli_audit(store: &Store, action: Action, target: &str, detail: &str) -> anyhow::Result<()> {
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    crate::service::audit::write_shell_change(
        store,
        &Caller::shell(&user),
        action,
        target,
        detail,
    )?;
    Ok(())
}

/// Runs a shell subcommand (everything but `serve`).
pub fn run_tool(cli: &Cli, cfg: &Config) -> anyhow::Result<()> {
    match &cli.command {
        Command::Serve(_) => bail!("serve is not a tool command"),
        Command::Config(ConfigCommand::Defaults) => {
            print!("{}", Config::defaults_toml());
            Ok(())
        }
        Command::SetupLink { minutes, url } => setup_link(cfg, *minutes, url.as_deref()),
        Command::Vm(command) => vm::run(cfg, command),
        Command::PackageFiles { out } => package_files(out),
        Command::User(UserCommand::Add { name, role, .. }) => {
            validate_username(name)?;
            let password = read_password_stdin()?;
            validate_new_password(&password, None)?;
            let store = open_store(cfg)?;
            let phc = hash_password(&password)?;
            match store.create_user(name, role.as_str(), &phc, now()) {
                Ok(_) => {}
                Err(StoreError::Duplicate(_)) => bail!("a user named {name} exists already"),
                Err(e) => return Err(e.into()),
            }
            cli_audit(&store, Action::UserCreate, name, &format!("role {role}"))?;
            println!("created user {name} ({role})");
            Ok(())
        }
        Command::User(UserCommand::List) => {
            let store = open_store(cfg)?;
            for u in store.list_users()? {
                println!("{}\t{}", u.username, u.role);
            }
            Ok(())
        }
        Command::User(UserCommand::Delete { name }) => {
            let store = open_store(cfg)?;
            if !store.delete_user(name)? {
                bail!("there is no user named {name}");
            }
            cli_audit(&store, Action::UserDelete, name, "")?;
            println!("deleted user {name}");
            Ok(())
        }
        Command::User(UserCommand::Unlock { name, address }) => {
            let store = open_store(cfg)?;
            let for_user = store.clear_login_failures(name)?;
            let mut detail = format!("{for_user} failed sign-ins of the account forgotten");
            if let Some(addr) = address {
                let for_address = store.clear_login_failures_from(&addr.to_string())?;
                detail.push_str(&format!(", {for_address} from {addr}"));
            }
            cli_audit(&store, Action::UserUnlock, name, &detail)?;
            println!("{name}: sign-in unlocked ({detail})");
            Ok(())
        }
        Command::User(UserCommand::Reset2fa { name }) => {
            let store = open_store(cfg)?;
            let user = store
                .find_user(name)?
                .with_context(|| format!("there is no user named {name}"))?;
            let had = store.reset_factors(user.id)?;
            store.delete_user_sessions(user.id)?;
            let detail = if had {
                "second factors removed; sessions ended"
            } else {
                "had no second factor; sessions ended"
            };
            cli_audit(&store, Action::TwoFactorReset, name, detail)?;
            println!("{name}: {detail}");
            Ok(())
        }
        Command::User(UserCommand::Passwd { name, .. }) => {
            let store = open_store(cfg)?;
            let user = store
                .find_user(name)?
                .with_context(|| format!("there is no user named {name}"))?;
            let password = read_password_stdin()?;
            validate_new_password(&password, None)?;
            store.set_password(user.id, &hash_password(&password)?)?;
            store.delete_user_sessions(user.id)?;
            cli_audit(&store, Action::UserPassword, name, "sessions ended")?;
            println!("password changed for {name}; their sessions were ended");
            Ok(())
        }
        Command::Token(TokenCommand::Create { user, label }) => {
            let store = open_store(cfg)?;
            let row = store
                .find_user(user)?
                .with_context(|| format!("there is no user named {user}"))?;
            let token = new_api_token();
            store.create_api_token(row.id, &sha256_hex(&token), label, now())?;
            cli_audit(&store, Action::TokenCreate, user, label)?;
            println!(
                "API token for {user} ({}); use it as `Authorization: Bearer <token>`:",
                row.role
            );
            println!("{token}");
            Ok(())
        }
        Command::Token(TokenCommand::List) => {
            let store = open_store(cfg)?;
            for t in store.list_api_tokens()? {
                println!("{}\t{}\t{}", t.id, t.username, t.label);
            }
            Ok(())
        }
    }
}

/// How long a link printed by `virtdeck setup-link` works, at most (a day).
fn setup_link(cfg: &Config, minutes: u32, url: Option<&str>) -> anyhow::Result<()> {
    let store = open_store(cfg)?;
    if store.user_count()? > 0 {
        bail!(
            "accounts exist already, so there is nothing to set up: sign in, or add an admin \
             with `virtdeck user add NAME --role admin --password-stdin`"
        );
    }
    let base = match url {
        Some(u) => {
            let parsed = url::Url::parse(u.trim())
                .ok()
                .filter(|p| matches!(p.scheme(), "https" | "http") && p.host().is_some())
                .with_context(|| format!("{u} is not an http(s):// address of this host"))?;
            parsed.as_str().trim_end_matches('/').to_string()
        }
        None => {
            let addr = cfg.listen_addr()?;
            let scheme = if cfg.tls.enabled { "https" } else { "http" };
            let host = if addr.ip().is_unspecified() {
                hostname::get()
                    .ok()
                    .and_then(|h| h.into_string().ok())
                    .unwrap_or_else(|| "localhost".into())
            } else {
                addr.ip().to_string()
            };
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host
            };
            format!("{scheme}://{host}:{}", addr.port())
        }
    };
    let token = new_api_token();
    let now = now();
    let expires_at = now + i64::from(minutes) * 60;
    store.add_setup_link(&sha256_hex(&token), now, expires_at)?;
    cli_audit(
        &store,
        Action::SetupLink,
        "-",
        &format!("works for {minutes} min"),
    )?;
    println!("Open this link to create the first admin (it works once, for {minutes} minutes):");
    println!("{base}/setup?token={token}");
    Ok(())
}

/// The files packages install beside the binary, made from the code so they stay true:
/// man pages (`man/`), completions (`completions/`), and `virtdeck.toml` with every
/// setting commented out at its default.
fn package_files(out: &std::path::Path) -> anyhow::Result<()> {
    use clap::CommandFactory;
    let man = out.join("man");
    let completions = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    let cmd = Cli::command();
    clap_mangen::generate_to(cmd.clone(), &man)
        .with_context(|| format!("cannot write man pages to {}", man.display()))?;
    // The main page again, with the sections clap does not know about.
    let mut page = Vec::new();
    let main = clap_mangen::Man::new(cmd.clone());
    main.render_title(&mut page)?;
    main.render_name_section(&mut page)?;
    main.render_synopsis_section(&mut page)?;
    main.render_description_section(&mut page)?;
    main.render_options_section(&mut page)?;
    main.render_subcommands_section(&mut page)?;
    page.extend_from_slice(MAN_SECTIONS.as_bytes());
    main.render_version_section(&mut page)?;
    std::fs::write(man.join("virtdeck.1"), page)?;
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        clap_complete::generate_to(shell, &mut cmd.clone(), "virtdeck", &completions)
            .with_context(|| format!("cannot write {shell} completions"))?;
    }
    std::fs::write(out.join("virtdeck.toml"), commented_config())?;
    Ok(())
}

/// The main man page's own sections (roff).
const MAN_SECTIONS: &str = r#".SH SERVICE
Installed from a package, virtdeck runs as the systemd service \fBvirtdeck.service\fR
(\fBsystemctl enable \-\-now virtdeck\fR), or socket\-activated by \fBvirtdeck.socket\fR.
It listens on https://HOST:9443. Until an admin exists, open the link that
\fBvirtdeck setup\-link\fR prints to create the first one.
.SH ENVIRONMENT
.TP
\fBVIRTDECK_CONFIG\fR
Configuration file (default \fI/etc/virtdeck/virtdeck.toml\fR when it exists).
.TP
\fBVIRTDECK_DATA_DIR\fR
Directory of the database, TLS certificate and keys (default \fI/var/lib/virtdeck\fR).
.TP
\fBVIRTDECK_TOKEN\fR
For \fBvirtdeck vm\fR: an API token (Users page, or \fBvirtdeck token create \-\-user NAME\fR);
the commands act with its user's role.
.TP
\fBVIRTDECK_URL\fR
For \fBvirtdeck vm\fR: the virtdeck to talk to (default https://127.0.0.1:PORT, PORT from
the configuration's \fIlisten\fR).
.TP
\fBVIRTDECK_FINGERPRINT\fR
For \fBvirtdeck vm\fR: the SHA\-256 of that virtdeck's TLS certificate (shown on its Fleet
page). On the host itself it is read from the configured certificate.
.SH FILES
.TP
\fI/etc/virtdeck/virtdeck.toml\fR
Every setting, commented out at its default.
.TP
\fI/var/lib/virtdeck/virtdeck.db\fR
The SQLite database. Before an upgrade migrates it, a copy is written beside it as
\fIvirtdeck.db.before\-MIGRATION\fR.
.TP
\fI/var/lib/virtdeck/tls\-cert.pem\fR, \fItls\-key.pem\fR
The self\-signed certificate made at first start, unless \fItls.cert_file\fR is set.
.SH EXIT STATUS
0 on success, 1 when the command failed (the reason is printed), 2 for a usage or
configuration error. \fBvirtdeck vm start|stop|...\fR with several VMs prints each
VM's outcome and exits 1 when any of them failed.
.SH EXAMPLES
.nf
sudo virtdeck setup\-link
export VIRTDECK_TOKEN=$(sudo virtdeck token create \-\-user admin | tail \-n1)
virtdeck vm list
virtdeck vm start web1 web2
virtdeck vm show web1 \-\-json | jq .state
.fi
"#;

/// Every setting at its default, commented out, under its section.
pub fn commented_config() -> String {
    let mut text = String::from(
        "# virtdeck's configuration (read by the service and by the `virtdeck` shell tools).\n\
         # Every setting is shown at its default, commented out: uncomment a line to change it,\n\
         # then `systemctl restart virtdeck`. What each one means: virtdeck(1),\n\
         # /usr/share/doc/virtdeck/config.md. The database, TLS certificate and keys live in\n\
         # data_dir (/var/lib/virtdeck).\n\n",
    );
    for line in Config::defaults_toml().lines() {
        if line.starts_with('[') || line.trim().is_empty() {
            text.push_str(line);
        } else {
            text.push_str("# ");
            text.push_str(line);
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packaged_config_is_every_default_commented_out() {
        let text = commented_config();
        let parsed: Config = toml::from_str(&text).expect("the packaged file parses");
        assert_eq!(
            toml::to_string_pretty(&parsed).unwrap(),
            Config::defaults_toml(),
            "the packaged file means the defaults"
        );
        // Every setting of the defaults appears, commented, in the file.
        for line in Config::defaults_toml().lines() {
            if line.contains(" = ") {
                assert!(text.contains(&format!("# {line}")), "{line} missing");
            }
        }
    }
}
