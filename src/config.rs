//! Configuration: built-in defaults, then a TOML file, then environment/flags.
//!
//! Every key is documented in docs/config.md with its default; `virtdeck config defaults`
//! prints a complete file.

use crate::domain::capacity::CapacityPolicy;
use crate::domain::host::VirtTypeSetting;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML for virtdeck.
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    /// A value is out of range or inconsistent.
    #[error("invalid setting {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address and port to listen on.
    pub listen: String,
    /// Where the SQLite database, the TLS certificate and demo files live.
    pub data_dir: PathBuf,
    /// libvirt connection URI.
    pub libvirt_uri: String,
    /// Guest type: auto (KVM when it works, else QEMU/TCG), kvm or qemu.
    pub virt_type: VirtTypeSetting,
    /// Run on the built-in demo host (libvirt test driver) instead of libvirt_uri.
    pub demo: bool,
    /// Kernels and initrds for direct kernel boot must be files in this directory.
    pub boot_dir: PathBuf,
    /// Emptied at every boot of the host (a tmpfs): virtdeck notes there that it started
    /// the VMs of the start order, so it does so once per boot, not at every restart.
    pub run_dir: PathBuf,
    /// How the host is split into compute units.
    pub capacity: CapacityPolicy,
    pub tls: TlsConfig,
    pub session: SessionConfig,
    pub login: LoginConfig,
    /// Host accounts through PAM.
    pub auth: AuthConfig,
    /// Connections, slow clients and reverse proxies.
    pub http: HttpConfig,
    pub log: LogConfig,
    /// The audit log: how long entries are kept.
    pub audit: AuditConfig,
    pub console: ConsoleConfig,
    /// Usage sampling for charts and `/metrics`.
    pub usage: crate::usage::UsageConfig,
    /// Host changes: network files, kernel settings, confirmation time.
    pub host: HostConfig,
    /// Uploads and fetches of images into storage pools.
    pub images: ImagesConfig,
    /// Network installs: where installing guests fetch their kickstart.
    pub install: InstallConfig,
    /// Outbound requests (install trees, image fetches): where they may go, timeouts.
    pub fetch: crate::adapters::http_fetch::FetchConfig,
    /// Peer hosts: this host's name and address in the fleet, timeouts, migration.
    pub fleet: FleetConfig,
    /// Scheduled backups.
    pub backups: BackupsConfig,
}

/// What the VM lifecycle needs of the settings (it never sees the whole [`Config`]).
#[derive(Debug, Clone)]
pub struct LifecycleSettings {
    /// How the host is split into compute units.
    pub capacity: CapacityPolicy,
    /// Kernels and initrds for direct kernel boot must be files in this directory.
    pub boot_dir: PathBuf,
    /// Network installs: where installing guests fetch their kickstart.
    pub install: InstallConfig,
    /// Outbound requests (install trees): where they may go, timeouts.
    pub fetch: crate::adapters::http_fetch::FetchConfig,
    /// Scheduled backups.
    pub backups: BackupsConfig,
}

impl Config {
    /// The lifecycle's part of the settings.
    pub fn lifecycle(&self) -> LifecycleSettings {
        LifecycleSettings {
            capacity: self.capacity.clone(),
            boot_dir: self.boot_dir.clone(),
            install: self.install.clone(),
            fetch: self.fetch.clone(),
            backups: self.backups.clone(),
        }
    }
}

/// `[backups]` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupsConfig {
    /// How many scheduled backups run at once on this host (different VMs; one VM is never
    /// backed up twice at once). 1: one after the other.
    pub scheduled_at_once: u32,
}

impl Default for BackupsConfig {
    fn default() -> Self {
        BackupsConfig {
            scheduled_at_once: 1,
        }
    }
}

impl BackupsConfig {
    /// The most scheduled backups at once a host is allowed.
    pub const MAX_AT_ONCE: u32 = 16;

    /// The first setting out of range, and why.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        (!(1..=Self::MAX_AT_ONCE).contains(&self.scheduled_at_once)).then(|| {
            (
                "backups.scheduled_at_once",
                format!(
                    "must be 1 to {}, not {}",
                    Self::MAX_AT_ONCE,
                    self.scheduled_at_once
                ),
            )
        })
    }
}

/// `[images]` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImagesConfig {
    /// Largest upload or fetch accepted, in bytes.
    pub max_bytes: u64,
    /// A fetch still running after this long is stopped (and its volume removed).
    pub fetch_timeout_seconds: u64,
    /// An upload that sends nothing for this long is stopped (and its volume removed).
    pub upload_idle_seconds: u64,
    /// virt-sysprep, for "reset identity" on template clones. Unset: looked up on `PATH`.
    pub sysprep_program: Option<PathBuf>,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig {
            max_bytes: 64 * 1024 * 1024 * 1024,
            fetch_timeout_seconds: 4 * 3600,
            upload_idle_seconds: 120,
            sysprep_program: None,
        }
    }
}

impl ImagesConfig {
    /// The first setting out of range, and why.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if self.max_bytes == 0 {
            return Some(("images.max_bytes", "must be greater than zero".into()));
        }
        if self.fetch_timeout_seconds == 0 || self.upload_idle_seconds == 0 {
            return Some((
                "images",
                "fetch_timeout_seconds and upload_idle_seconds must be greater than zero".into(),
            ));
        }
        None
    }
}

/// `[fleet]`: this host among its peers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetConfig {
    /// This host's name in the fleet. Unset: the host name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The `https://` URL peers reach this host at. Unset: `https://HOSTNAME:PORT/` from
    /// the host name and the listen port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// The libvirt URI a peer's libvirtd uses to reach this host's libvirtd when it
    /// migrates a VM here; `{host}` is the host of `public_url`. Examples:
    /// `qemu+tls://{host}/system`, `qemu+ssh://root@{host}/system`.
    pub migration_uri: String,
    /// Longest wait for a peer's answer (the fleet page never waits for it).
    pub request_timeout_seconds: u64,
    /// How often each peer's VMs and capacity are asked for.
    pub refresh_seconds: u64,
    /// How long an invitation's pairing code works.
    pub pairing_code_minutes: u64,
    /// Longest a migration may run before it is aborted (the VM stays on this host).
    pub migration_timeout_minutes: u64,
    /// Most MiB/s a migration from this host sends (0: as fast as the link allows), so
    /// a move does not starve the guests' own traffic.
    pub migration_bandwidth_mib_s: u64,
    /// Directories on storage every host mounts at the same path (NFS, a cluster
    /// filesystem): disks there are not copied when a VM arrives. Network pools count as
    /// shared without being listed.
    pub shared_dirs: Vec<String>,
    /// The migration stream (memory, disks) over TLS: libvirt's `migrate_tls` set up in
    /// qemu.conf, with certificates, on every host.
    pub migration_tls: bool,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            name: None,
            public_url: None,
            migration_uri: "qemu+tls://{host}/system".into(),
            request_timeout_seconds: 5,
            refresh_seconds: 15,
            pairing_code_minutes: 10,
            migration_timeout_minutes: 60,
            migration_bandwidth_mib_s: 0,
            shared_dirs: Vec::new(),
            migration_tls: false,
        }
    }
}

impl FleetConfig {
    /// The first setting out of range, and why.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if let Some(name) = &self.name {
            if crate::domain::fleet::check_host_name(name).is_err() {
                return Some((
                    "fleet.name",
                    "use 1-63 letters, digits, '-', '_' or '.'".into(),
                ));
            }
        }
        if let Some(url) = &self.public_url {
            if crate::adapters::http_fetch::peer::peer_base_url(url).is_none() {
                return Some((
                    "fleet.public_url",
                    "must be an https:// URL of this host, e.g. https://kvm1.lan:9443/".into(),
                ));
            }
        }
        if self.request_timeout_seconds == 0 || self.refresh_seconds == 0 {
            return Some((
                "fleet.request_timeout_seconds",
                "timeouts and the refresh interval must be greater than zero".into(),
            ));
        }
        if self.pairing_code_minutes == 0 || self.migration_timeout_minutes == 0 {
            return Some((
                "fleet.pairing_code_minutes",
                "must be greater than zero".into(),
            ));
        }
        None
    }
}

/// `[install]`: how installing guests reach their kickstart.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InstallConfig {
    /// Base of kickstart URLs, e.g. `http://192.168.122.1:9443`: an address the guests
    /// can reach. Unset: derived from the listen address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kickstart_base_url: Option<String>,
    /// A kickstart URL stops working this long after the VM was created, at the latest.
    pub kickstart_max_lifetime_seconds: u64,
    /// The kernel argument that carries the URL: "inst.ks" or "ks" (older installers).
    pub kickstart_argument: crate::domain::kickstart::KsArgument,
}

impl Default for InstallConfig {
    fn default() -> Self {
        InstallConfig {
            kickstart_base_url: None,
            kickstart_max_lifetime_seconds: 2 * 3600,
            kickstart_argument: crate::domain::kickstart::KsArgument::InstKs,
        }
    }
}

impl InstallConfig {
    /// The first setting out of range, and why.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if self.kickstart_max_lifetime_seconds == 0 {
            return Some((
                "install.kickstart_max_lifetime_seconds",
                "must be greater than zero".into(),
            ));
        }
        if let Some(base) = &self.kickstart_base_url {
            if let Err(m) = crate::domain::kickstart::check_base_url(base) {
                return Some(("install.kickstart_base_url", m));
            }
        }
        None
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Serve HTTPS. When false, plain HTTP is only allowed on a loopback address.
    pub enabled: bool,
    /// PEM certificate chain; when unset a self-signed one is made in data_dir.
    pub cert_file: Option<PathBuf>,
    /// PEM private key matching cert_file.
    pub key_file: Option<PathBuf>,
    /// Allow plain HTTP on a non-loopback address (e.g. behind a TLS reverse proxy).
    pub allow_plain_http_on_any_address: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// A session unused for this long is ended.
    pub idle_timeout_seconds: u64,
    /// A session ends this long after login, used or not.
    pub absolute_timeout_seconds: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginConfig {
    /// Failed logins counted within this window.
    pub window_seconds: u64,
    /// After this many failures (per account or per address) each answer is delayed.
    pub slow_after_failures: u32,
    /// The delay for slowed answers.
    pub slow_delay_ms: u64,
    /// After this many failures for one account, it is locked for lock_seconds.
    pub lock_after_failures: u32,
    /// After this many failures from one address, that address is locked.
    pub address_lock_after_failures: u32,
    /// How long a lockout lasts.
    pub lock_seconds: u64,
    /// Password checks (Argon2id, ≈ 19 MiB of memory each) running at once; sign-ins
    /// beyond this are answered 503 with Retry-After at once instead of queueing.
    pub max_parallel_password_checks: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Reverse proxies (CIDRs) whose `X-Forwarded-For`/`Forwarded` and `X-Forwarded-Proto`
    /// headers are believed, for throttling, the audit log and `Secure` cookies. From any
    /// other peer those headers are ignored.
    pub trusted_proxies: Vec<String>,
    /// A request whose headers have not all arrived after this long is closed.
    pub header_timeout_seconds: u64,
    /// A request body that makes no progress for this long is answered 408 and closed
    /// (uploads keep their own idle rule, `[images] upload_idle_seconds`).
    pub body_idle_timeout_seconds: u64,
    /// A request body (other than an upload) must have arrived completely within this.
    pub body_timeout_seconds: u64,
    /// An idle kept-alive connection is closed after this long.
    pub keep_alive_seconds: u64,
    /// Connections open at once from one client address (trusted proxies are not
    /// counted); more are closed as soon as they are accepted.
    pub max_connections_per_address: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            trusted_proxies: Vec::new(),
            header_timeout_seconds: 5,
            body_idle_timeout_seconds: 10,
            body_timeout_seconds: 60,
            keep_alive_seconds: 5,
            max_connections_per_address: 64,
        }
    }
}

impl HttpConfig {
    /// The trusted proxies, parsed.
    pub fn trusted_proxy_ranges(&self) -> Result<Vec<crate::domain::cidr::Cidr>, ConfigError> {
        crate::domain::cidr::parse_list(&self.trusted_proxies).map_err(|e| ConfigError::Invalid {
            key: "http.trusted_proxies",
            message: e.to_string(),
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.trusted_proxy_ranges()?;
        let timeouts = [
            self.header_timeout_seconds,
            self.body_idle_timeout_seconds,
            self.body_timeout_seconds,
            self.keep_alive_seconds,
        ];
        if timeouts.iter().any(|t| !(1..=3600).contains(t)) {
            return Err(ConfigError::Invalid {
                key: "http",
                message: "timeouts must be between 1 and 3600 seconds".into(),
            });
        }
        if self.max_connections_per_address == 0 {
            return Err(ConfigError::Invalid {
                key: "http.max_connections_per_address",
                message: "must be greater than zero".into(),
            });
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// "text" or "json".
    pub format: String,
    /// A tracing filter, e.g. "info" or "virtdeck=debug,actix_web=info".
    pub filter: String,
}

/// `[auth]`: signing in with host accounts through PAM, beside virtdeck's own accounts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Host accounts may sign in through PAM; their role comes from `pam_groups`.
    pub pam: bool,
    /// The PAM service (`/etc/pam.d/<name>`); virtdeck ships `packaging/pam.d/virtdeck`.
    pub pam_service: String,
    /// The host group whose members get each role (the highest one wins; no group, no
    /// access).
    pub pam_groups: PamGroups,
}

/// `[auth.pam_groups]`: a host group per role.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct PamGroups {
    pub admin: String,
    pub operator: String,
    pub viewer: String,
}

impl Default for PamGroups {
    fn default() -> Self {
        PamGroups {
            admin: "virtdeck-admin".into(),
            operator: "virtdeck-operator".into(),
            viewer: "virtdeck-viewer".into(),
        }
    }
}

impl PamGroups {
    /// The highest role any of `groups` gives; `None` when none is a virtdeck group.
    pub fn role_of(&self, groups: &[String]) -> Option<crate::auth::Role> {
        use crate::auth::Role;
        let has = |g: &str| !g.is_empty() && groups.iter().any(|x| x == g);
        [
            (Role::Admin, &self.admin),
            (Role::Operator, &self.operator),
            (Role::Viewer, &self.viewer),
        ]
        .into_iter()
        .find(|(_, g)| has(g))
        .map(|(r, _)| r)
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            pam: false,
            pam_service: "virtdeck".into(),
            pam_groups: PamGroups::default(),
        }
    }
}

impl AuthConfig {
    /// The first setting out of range, and why.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if self.pam_service.is_empty() || !self.pam_service.chars().all(ok) {
            return Some((
                "auth.pam_service",
                "must be the file name of a PAM service in /etc/pam.d (letters, digits, '-', '_', '.')".into(),
            ));
        }
        None
    }
}

/// `[audit]`: how long the audit log keeps entries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Entries older than this many days are deleted (at start-up, then daily).
    pub retention_days: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            retention_days: 400,
        }
    }
}

impl AuditConfig {
    /// The first setting out of range, and why.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if self.retention_days == 0 {
            return Some((
                "audit.retention_days",
                "must be at least 1 (days); to keep entries for years, set e.g. 3650".into(),
            ));
        }
        None
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// How long a console ticket may wait for its websocket (at most 30).
    pub ticket_lifetime_seconds: u64,
    /// Console sessions with input (VNC and serial together) open at once on one VM.
    pub max_sessions_per_vm: usize,
    /// View-only VNC sessions (viewers) open at once on one VM; counted apart, so
    /// viewers never take an operator's place.
    pub max_viewers_per_vm: usize,
    /// A console without keyboard, mouse or serial input for this long is closed.
    pub idle_timeout_seconds: u64,
    /// An open console re-checks this often that its sign-in session or API token is
    /// still valid and the user's role still allows it (covers changes made with the
    /// shell tools).
    pub credential_check_seconds: u64,
    /// A console whose browser takes no output (or whose VM takes no input) for this
    /// long is closed.
    pub stalled_seconds: u64,
    /// Users with the viewer role may watch VNC consoles, without input.
    pub viewers_may_watch: bool,
    /// Extra `Origin`s allowed to open console websockets (e.g. the public address of a
    /// reverse proxy that rewrites `Host`), as `scheme://host[:port]`.
    pub allowed_origins: Vec<String>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            ticket_lifetime_seconds: 30,
            max_sessions_per_vm: 4,
            max_viewers_per_vm: 4,
            idle_timeout_seconds: 30 * 60,
            credential_check_seconds: 60,
            stalled_seconds: 20,
            viewers_may_watch: false,
            allowed_origins: Vec::new(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "0.0.0.0:9443".into(),
            data_dir: PathBuf::from("/var/lib/virtdeck"),
            libvirt_uri: "qemu:///system".into(),
            virt_type: VirtTypeSetting::Auto,
            demo: false,
            boot_dir: PathBuf::from("/var/lib/libvirt/boot"),
            run_dir: PathBuf::from("/run/virtdeck"),
            capacity: CapacityPolicy::default(),
            tls: TlsConfig::default(),
            session: SessionConfig::default(),
            login: LoginConfig::default(),
            auth: AuthConfig::default(),
            http: HttpConfig::default(),
            log: LogConfig::default(),
            audit: AuditConfig::default(),
            console: ConsoleConfig::default(),
            usage: Default::default(),
            host: HostConfig::default(),
            images: Default::default(),
            install: Default::default(),
            fetch: Default::default(),
            fleet: Default::default(),
            backups: Default::default(),
        }
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            enabled: true,
            cert_file: None,
            key_file: None,
            allow_plain_http_on_any_address: false,
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            idle_timeout_seconds: 30 * 60,
            absolute_timeout_seconds: 12 * 60 * 60,
        }
    }
}

impl Default for LoginConfig {
    fn default() -> Self {
        LoginConfig {
            window_seconds: 15 * 60,
            slow_after_failures: 3,
            slow_delay_ms: 1000,
            lock_after_failures: 5,
            address_lock_after_failures: 20,
            lock_seconds: 15 * 60,
            max_parallel_password_checks: 2,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "text".into(),
            filter: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    /// Every file a host change writes goes below this directory ("/" on a real host).
    pub root: PathBuf,
    /// Make live network and kernel-setting changes inside this named network namespace
    /// (`ip netns add NAME`) instead of the host's own: for tests and containers.
    pub netns: Option<String>,
    /// The format of the host's network files: auto (detected), networkd,
    /// network-manager, ifupdown or ifcfg.
    pub network_backend: String,
    /// An applied host change must be confirmed from the browser within this time, or
    /// it is rolled back.
    pub confirm_seconds: u64,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            root: PathBuf::from("/"),
            netns: None,
            network_backend: "auto".into(),
            confirm_seconds: 60,
        }
    }
}

impl HostConfig {
    /// The configured backend; `None` for auto.
    pub fn backend(&self) -> Option<crate::domain::hostnet::Backend> {
        crate::domain::hostnet::Backend::parse(&self.network_backend)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.network_backend != "auto" && self.backend().is_none() {
            return Err(ConfigError::Invalid {
                key: "host.network_backend",
                message: format!(
                    "must be auto, networkd, network-manager, ifupdown or ifcfg, not {:?}",
                    self.network_backend
                ),
            });
        }
        if !(5..=3600).contains(&self.confirm_seconds) {
            return Err(ConfigError::Invalid {
                key: "host.confirm_seconds",
                message: "must be between 5 and 3600 seconds".into(),
            });
        }
        if let Some(ns) = &self.netns {
            if !crate::adapters::netns::valid_name(ns) {
                return Err(ConfigError::Invalid {
                    key: "host.netns",
                    message: format!("{ns:?} is not a network namespace name"),
                });
            }
        }
        if !self.root.is_absolute() {
            return Err(ConfigError::Invalid {
                key: "host.root",
                message: "must be an absolute path".into(),
            });
        }
        Ok(())
    }
}

impl Config {
    /// Loads the file if given (missing keys keep their defaults).
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let addr = self.listen_addr()?;
        if !self.tls.enabled
            && !addr.ip().is_loopback()
            && !self.tls.allow_plain_http_on_any_address
        {
            return Err(ConfigError::Invalid {
                key: "tls.enabled",
                message: format!(
                    "plain HTTP on {addr} would send passwords in clear text; listen on 127.0.0.1, \
                     keep TLS on, or set tls.allow_plain_http_on_any_address = true (--force-plain-http) \
                     behind a TLS reverse proxy"
                ),
            });
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(ConfigError::Invalid {
                key: "tls.cert_file",
                message: "set both tls.cert_file and tls.key_file, or neither".into(),
            });
        }
        if self.session.idle_timeout_seconds == 0 || self.session.absolute_timeout_seconds == 0 {
            return Err(ConfigError::Invalid {
                key: "session",
                message: "session timeouts must be greater than zero".into(),
            });
        }
        if self.login.lock_after_failures == 0 || self.login.address_lock_after_failures == 0 {
            return Err(ConfigError::Invalid {
                key: "login",
                message: "lockout thresholds must be greater than zero".into(),
            });
        }
        if !(1..=64).contains(&self.login.max_parallel_password_checks) {
            return Err(ConfigError::Invalid {
                key: "login.max_parallel_password_checks",
                message: "must be between 1 and 64".into(),
            });
        }
        self.http.validate()?;
        if self.log.format != "text" && self.log.format != "json" {
            return Err(ConfigError::Invalid {
                key: "log.format",
                message: format!("must be \"text\" or \"json\", not {:?}", self.log.format),
            });
        }
        if let Some((key, message)) = self.auth.problem() {
            return Err(ConfigError::Invalid { key, message });
        }
        if let Some((key, message)) = self.audit.problem() {
            return Err(ConfigError::Invalid { key, message });
        }
        if !(1..=30).contains(&self.console.ticket_lifetime_seconds) {
            return Err(ConfigError::Invalid {
                key: "console.ticket_lifetime_seconds",
                message: "must be between 1 and 30 seconds".into(),
            });
        }
        if self.console.max_sessions_per_vm == 0 || self.console.idle_timeout_seconds == 0 {
            return Err(ConfigError::Invalid {
                key: "console",
                message: "max_sessions_per_vm and idle_timeout_seconds must be greater than zero"
                    .into(),
            });
        }
        if !(1..=3600).contains(&self.console.credential_check_seconds) {
            return Err(ConfigError::Invalid {
                key: "console.credential_check_seconds",
                message: "must be between 1 and 3600 seconds".into(),
            });
        }
        if !(1..=600).contains(&self.console.stalled_seconds) {
            return Err(ConfigError::Invalid {
                key: "console.stalled_seconds",
                message: "must be between 1 and 600 seconds".into(),
            });
        }
        if let Some((key, message)) = self.usage.problem() {
            return Err(ConfigError::Invalid { key, message });
        }
        self.host.validate()?;
        if let Some((key, message)) = self.images.problem() {
            return Err(ConfigError::Invalid { key, message });
        }
        if let Some((key, message)) = self.install.problem() {
            return Err(ConfigError::Invalid { key, message });
        }
        if let Some((key, message)) = self.fleet.problem() {
            return Err(ConfigError::Invalid { key, message });
        }
        if let Some((key, message)) = self.backups.problem() {
            return Err(ConfigError::Invalid { key, message });
        }
        if let Some((key, message)) = self.fetch.problem() {
            return Err(ConfigError::Invalid { key, message });
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|e| ConfigError::Invalid {
            key: "listen",
            message: format!("{:?} is not an address:port ({e})", self.listen),
        })
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("virtdeck.db")
    }

    /// The complete default configuration as TOML, for `virtdeck config defaults`.
    pub fn defaults_toml() -> String {
        toml::to_string_pretty(&Config::default()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_round_trip() {
        let c = Config::default();
        c.validate().expect("defaults are valid");
        let text = Config::defaults_toml();
        let back: Config = toml::from_str(&text).expect("defaults parse");
        assert_eq!(back.listen, "0.0.0.0:9443");
        assert!(back.tls.enabled);
    }

    #[test]
    fn plain_http_on_all_addresses_is_refused_unless_forced() {
        let mut c = Config::default();
        c.tls.enabled = false;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("clear text"), "{err}");
        c.listen = "127.0.0.1:9443".into();
        c.validate().expect("loopback is fine");
        c.listen = "0.0.0.0:9443".into();
        c.tls.allow_plain_http_on_any_address = true;
        c.validate().expect("forced is fine");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let r: Result<Config, _> = toml::from_str("lisen = \"x\"");
        assert!(r.is_err());
    }

    #[test]
    fn host_settings_are_checked() {
        let mut c = Config::default();
        assert_eq!(c.host.confirm_seconds, 60);
        c.host.netns = Some("../x".into());
        assert!(c.validate().unwrap_err().to_string().contains("host.netns"));
        c.host.netns = Some("vd-test-1".into());
        c.host.network_backend = "wicked".into();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("network_backend"));
        c.host.network_backend = "ifcfg".into();
        c.host.confirm_seconds = 1;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("confirm_seconds"));
        c.host.confirm_seconds = 60;
        c.validate().unwrap();
    }

    #[test]
    fn scheduled_backups_at_once_are_1_to_16() {
        let c: Config = toml::from_str("[backups]\nscheduled_at_once = 3\n").unwrap();
        c.validate().unwrap();
        assert_eq!(Config::default().backups.scheduled_at_once, 1);
        for bad in [0, 17] {
            let mut c = Config::default();
            c.backups.scheduled_at_once = bad;
            let e = c.validate().unwrap_err().to_string();
            assert!(
                e.contains("backups.scheduled_at_once") && e.contains(&format!("not {bad}")),
                "{e}"
            );
        }
    }

    #[test]
    fn partial_file_keeps_defaults() {
        let c: Config = toml::from_str("[session]\nidle_timeout_seconds = 5\n").unwrap();
        assert_eq!(c.session.idle_timeout_seconds, 5);
        assert_eq!(c.session.absolute_timeout_seconds, 12 * 60 * 60);
    }
}
