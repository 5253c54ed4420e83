//! Building and starting the HTTP(S) server.

use super::errors::{AppError, ErrorKind};
use super::routes::RouteExt;
use super::{api, assets, pages, AppState};
use crate::adapters::kvm_probe;
use crate::adapters::libvirt::{is_test_uri, Libvirt};
use crate::auth::secret::random_token;
use crate::config::Config;
use crate::domain::host::{resolve_virt_type, KvmStatus};
use crate::hypervisor::Hypervisor;
use crate::store::Store;
use actix_web::dev::Server;
use actix_web::http::header;
use actix_web::middleware::{DefaultHeaders, NormalizePath, TrailingSlash};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use anyhow::Context;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long the shared VM list may be reused when libvirt reports no change (guest
/// addresses and autostart set with virsh have no event).
const VM_LIST_MAX_AGE: Duration = Duration::from_secs(2);

/// The demo host for libvirt's test driver, written to the data dir at start.
pub const DEMO_HOST_XML: &str = include_str!("../../demo/demo-host.xml");

/// Largest form body accepted (login, users…).
pub const FORM_LIMIT_BYTES: usize = 16 * 1024;
/// Largest JSON body accepted by the API.
pub const JSON_LIMIT_BYTES: usize = 256 * 1024;

/// A started server.
pub struct Running {
    pub addr: SocketAddr,
    /// `https` or `http`.
    pub scheme: &'static str,
    /// The one-time link for creating the first admin, when there is no account yet.
    pub setup_url: Option<String>,
    pub server: Server,
    pub state: web::Data<AppState>,
}

impl Running {
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }
}

/// Directories that are never a data dir of their own (they hold other programs' files).
const SHARED_DIRS: &[&str] = &[
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc", "/root",
    "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/lib", "/var/tmp", "/var/log",
    "/var/run",
];

/// Why `dir` (canonical, existing) may not be made virtdeck's private data dir, given its
/// owner, its mode and the uid virtdeck runs as.
fn data_dir_problem(dir: &Path, owner_uid: u32, mode: u32, our_uid: u32) -> Option<String> {
    let shown = dir.display();
    if SHARED_DIRS.iter().any(|s| Path::new(s) == dir) {
        return Some(format!(
            "data dir {shown} is a system directory; give virtdeck a directory of its own, e.g. /var/lib/virtdeck"
        ));
    }
    if owner_uid != our_uid {
        return Some(format!(
            "data dir {shown} belongs to another user (uid {owner_uid}); give virtdeck a directory of its own"
        ));
    }
    // Sticky or writable by others: a shared directory like /tmp.
    if mode & 0o1000 != 0 || mode & 0o002 != 0 {
        return Some(format!(
            "data dir {shown} is shared (writable by others); give virtdeck a directory of its own"
        ));
    }
    None
}

/// Creates the data dir (mode 0700), or checks that an existing one is virtdeck's own
/// before restricting it to 0700: a shared directory such as /tmp is refused, never chmod'ed.
fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create data dir {}", dir.display()))?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let real = std::fs::canonicalize(dir)
            .with_context(|| format!("cannot resolve data dir {}", dir.display()))?;
        let meta = std::fs::metadata(&real)
            .with_context(|| format!("cannot read data dir {}", real.display()))?;
        // SAFETY: geteuid has no preconditions.
        let our_uid = unsafe { libc::geteuid() };
        if let Some(problem) = data_dir_problem(&real, meta.uid(), meta.mode(), our_uid) {
            anyhow::bail!(problem);
        }
        if meta.mode() & 0o077 != 0 {
            std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot restrict data dir {}", real.display()))?;
        }
    }
    Ok(())
}

/// The libvirt URI to use: the configured one, or the demo host's.
pub fn effective_libvirt_uri(cfg: &Config) -> anyhow::Result<String> {
    if !cfg.demo {
        return Ok(cfg.libvirt_uri.clone());
    }
    let path = cfg.data_dir.join("demo-host.xml");
    std::fs::write(&path, DEMO_HOST_XML)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let abs = std::fs::canonicalize(&path)?;
    Ok(format!("test://{}", abs.display()))
}

fn is_local_qemu(uri: &str) -> bool {
    uri == "qemu:///system" || uri == "qemu:///session"
}

/// Lets tests wrap the real hypervisor (e.g. to inject a failure at one step).
pub type HypervisorWrap = Box<dyn FnOnce(Arc<dyn Hypervisor>) -> Arc<dyn Hypervisor> + Send>;

/// Starts the start order's VMs on a thread of its own (once per boot of the host; each
/// VM's wait must not hold up the server), writing an audit row for each.
fn start_order_at_boot(hv: Arc<dyn Hypervisor>, store: Arc<Store>, run_dir: std::path::PathBuf) {
    let spawned = std::thread::Builder::new()
        .name("start-order".into())
        .spawn(move || {
            let row = |vm: &str, result: &str, detail: String| {
                crate::service::audit::append(
                    &store,
                    crate::store::AuditEntry {
                        at: super::now(),
                        actor: "virtdeck".into(),
                        remote_addr: "local".into(),
                        action: "vm.start".into(),
                        target: vm.to_string(),
                        result: result.into(),
                        detail,
                    },
                )
            };
            let report = |vm: &str, outcome: Result<(), &str>| match outcome {
                Ok(()) => {
                    tracing::info!(vm, "started by the start order");
                    row(vm, "ok", "the start order, at the host's boot".into());
                }
                Err(why) => {
                    tracing::warn!(vm, why, "not started by the start order");
                    row(
                        vm,
                        "failed",
                        format!("the start order, at the host's boot: {why}"),
                    );
                }
            };
            if let Err(e) = crate::lifecycle::start_order::start_in_order(
                hv.as_ref(),
                &store,
                &run_dir,
                &std::thread::sleep,
                &report,
            ) {
                tracing::error!(error = %e, "the start order did not run");
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "the start order could not be run");
    }
}

/// Opens the store and the hypervisor, probes KVM, and reconciles interrupted creates.
pub fn build_state(
    cfg: Config,
    tls: bool,
    wrap: Option<HypervisorWrap>,
) -> anyhow::Result<AppState> {
    prepare_data_dir(&cfg.data_dir)?;
    let store = Store::open(&cfg.database_path())
        .with_context(|| format!("cannot open database {}", cfg.database_path().display()))?;
    let uri = effective_libvirt_uri(&cfg)?;
    let kvm = if is_test_uri(&uri) {
        KvmStatus::NotApplicable
    } else if is_local_qemu(&uri) {
        kvm_probe::probe(Duration::from_secs(2))
    } else {
        // A remote host: we cannot probe it from here; trust the setting.
        KvmStatus::Usable
    };
    if let KvmStatus::Broken { reason } = &kvm {
        tracing::warn!(%reason, "/dev/kvm exists but KVM does not work; guests will use QEMU (TCG)");
    }
    let mut hv: Arc<dyn Hypervisor> = Arc::new(Libvirt::open(&uri, kvm.clone())?);
    if let Some(wrap) = wrap {
        hv = wrap(hv);
    }
    match crate::lifecycle::reconcile(hv.as_ref(), &store) {
        Ok(notes) => {
            for note in notes {
                tracing::warn!(%note, "start-up reconciliation");
                crate::service::audit::append(
                    &store,
                    crate::store::AuditEntry {
                        at: super::now(),
                        actor: "virtdeck".into(),
                        remote_addr: "local".into(),
                        action: "vm.reconcile".into(),
                        target: String::new(),
                        result: "ok".into(),
                        detail: note,
                    },
                );
            }
        }
        Err(e) => tracing::error!(error = %e, "start-up reconciliation failed"),
    }
    crate::service::runner::reconcile_jobs(hv.as_ref(), &store);
    for note in crate::lifecycle::backups::reconcile(hv.as_ref(), &store, super::now()) {
        tracing::warn!(%note, "start-up reconciliation");
        crate::service::audit::append(
            &store,
            crate::store::AuditEntry {
                at: super::now(),
                actor: "virtdeck".into(),
                remote_addr: "local".into(),
                action: "backup.reconcile".into(),
                target: String::new(),
                result: "ok".into(),
                detail: note,
            },
        );
    }
    let virt_type = resolve_virt_type(cfg.virt_type, &kvm).map_err(|e| e.to_string());
    if let Err(e) = &virt_type {
        tracing::warn!(error = %e, "virt_type setting cannot be honoured");
    }
    let live = Arc::new(super::live::LiveEvents::default());
    let vm_list = Arc::new(crate::lifecycle::list_cache::ListCache::new(
        VM_LIST_MAX_AGE,
    ));
    let sink = live.clone();
    let changed = vm_list.clone();
    if let Err(e) = hv.watch_events(Arc::new(move |event| {
        changed.invalidate();
        sink.publish(event)
    })) {
        tracing::warn!(error = %e, "VM events are not available; pages will not update live");
    }
    let setup_token = if store.user_count()? == 0 {
        Some(random_token())
    } else {
        None
    };
    let usage = Arc::new(crate::usage::Usage::new(cfg.usage.clone()));
    let store = Arc::new(store);
    // The demo host has its own run directory (its VMs are not the host's).
    let run_dir = if cfg.demo {
        cfg.data_dir.join("run")
    } else {
        cfg.run_dir.clone()
    };
    start_order_at_boot(hv.clone(), store.clone(), run_dir);
    let host = crate::hostcfg::Engine::new(
        crate::hostcfg::HostSettings {
            root: cfg.host.root.clone(),
            netns: cfg.host.netns.clone(),
            backend: cfg.host.backend(),
            confirm_seconds: cfg.host.confirm_seconds,
            apply_refused: (cfg.demo && cfg.host.netns.is_none()).then(|| {
                "This is the demo host: plans are shown but not applied, because applying \
                 would change this machine's real network and kernel settings. Run virtdeck \
                 without --demo on the host you want to set up."
                    .to_string()
            }),
        },
        cfg.data_dir.clone(),
        store.clone(),
    );
    host.recover();
    let trusted_proxies = cfg.http.trusted_proxy_ranges()?;
    let password_gate =
        super::password_gate::PasswordGate::new(cfg.login.max_parallel_password_checks);
    let svc = Arc::new(crate::service::Services {
        lifecycle: cfg.lifecycle(),
        cfg,
        store,
        hv,
        virt_type,
        admission: Default::default(),
        jobs: Default::default(),
        vm_list,
        host,
        ops: Default::default(),
        schedule_runs: Default::default(),
        fleet: Default::default(),
        usage: usage.clone(),
    });
    crate::service::backups::start_scheduler(&svc);
    crate::service::backups::record_missing_checksums(&svc);
    Ok(AppState {
        svc,
        trusted_proxies,
        password_gate,
        setup_token: Mutex::new(setup_token),
        tls,
        live,
        consoles: Default::default(),
        usage,
        metrics: Default::default(),
    })
}

/// The TLS settings, and the SHA-256 of the certificate (what peers pin).
fn tls_config(cfg: &Config) -> anyhow::Result<(rustls::ServerConfig, String)> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (cert_path, key_path) = match (&cfg.tls.cert_file, &cfg.tls.key_file) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => ensure_self_signed(&cfg.data_dir)?,
    };
    let certs = CertificateDer::pem_file_iter(&cert_path)
        .with_context(|| format!("cannot read certificate {}", cert_path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("bad certificate PEM in {}", cert_path.display()))?;
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .with_context(|| format!("cannot read private key {}", key_path.display()))?;
    let fingerprint = certs
        .first()
        .map(|c| crate::adapters::http_fetch::peer::fingerprint_of(c.as_ref()))
        .with_context(|| format!("no certificate in {}", cert_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the certificate and key do not match")?;
    Ok((config, fingerprint))
}

/// Makes (once) a self-signed certificate for this host's names, kept in the data dir.
fn ensure_self_signed(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cert = dir.join("tls-cert.pem");
    let key = dir.join("tls-key.pem");
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    let mut names = vec!["localhost".to_string()];
    if let Some(h) = hostname::get().ok().and_then(|h| h.into_string().ok()) {
        names.push(h);
    }
    let ck = rcgen::generate_simple_self_signed(names).context("cannot generate a certificate")?;
    write_private(&key, ck.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&cert, ck.cert.pem())?;
    tracing::info!(cert = %cert.display(), "generated a self-signed TLS certificate");
    Ok((cert, key))
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

fn json_error(err: actix_web::error::JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as J;
    let e = match &err {
        J::OverflowKnownLength { .. } | J::Overflow { .. } => AppError::new(
            ErrorKind::PayloadTooLarge,
            format!("The request body is larger than {JSON_LIMIT_BYTES} bytes."),
        ),
        J::ContentType => AppError::bad_request("Send JSON with Content-Type: application/json."),
        J::Payload(p) if super::slow_clients::is_body_timeout(p) => body_timed_out(),
        other => AppError::bad_request(format!("The request body is not valid JSON: {other}")),
    };
    e.into()
}

fn body_timed_out() -> AppError {
    AppError::new(
        ErrorKind::RequestTimeout,
        "The request did not arrive in time. Send it again.",
    )
}

fn form_error(err: actix_web::error::UrlencodedError, _req: &HttpRequest) -> actix_web::Error {
    use actix_web::error::UrlencodedError as U;
    let e = match &err {
        U::Overflow { .. } => AppError::new(
            ErrorKind::PayloadTooLarge,
            "The form is too large. Shorten what you entered and send it again.",
        ),
        U::Payload(p) if super::slow_clients::is_body_timeout(p) => body_timed_out(),
        _ => AppError::bad_request("The form could not be read. Reload the page and try again."),
    };
    e.into()
}

fn query_error(_err: actix_web::error::QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    AppError::bad_request("The address has an invalid query string.").into()
}

fn path_error(_err: actix_web::error::PathError, _req: &HttpRequest) -> actix_web::Error {
    AppError::not_found("There is no such page.").into()
}

async fn not_found() -> Result<HttpResponse, AppError> {
    Err(AppError::not_found("There is no such page."))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({"status": "ok"}))
}

async fn index() -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/host"))
        .finish()
}

/// Routes and middleware, shared by the server and nothing else.
pub fn configure(cfg: &mut web::ServiceConfig) {
    use pages::{account, admin, host, vm_changes, vms};
    cfg.app_data(
        web::FormConfig::default()
            .limit(FORM_LIMIT_BYTES)
            .error_handler(form_error),
    )
    .app_data(
        web::JsonConfig::default()
            .limit(JSON_LIMIT_BYTES)
            .error_handler(json_error),
    )
    .app_data(web::PayloadConfig::new(JSON_LIMIT_BYTES))
    .app_data(web::QueryConfig::default().error_handler(query_error))
    .app_data(web::PathConfig::default().error_handler(path_error))
    .get("/", index)
    .get("/healthz", healthz)
    .get("/static/{path:.*}", assets::serve)
    .get("/login", account::login_page)
    .post("/login", account::login)
    .get("/login/second-factor", pages::two_factor::second_step_page)
    .post("/login/second-factor", pages::two_factor::second_step)
    .post(
        "/login/second-factor/key/begin",
        pages::two_factor::begin_key_sign_in,
    )
    .post(
        "/login/second-factor/key/finish",
        pages::two_factor::finish_key_sign_in,
    )
    .get("/account/two-factor", pages::two_factor::account_page)
    .post("/account/two-factor/app", pages::two_factor::begin_app)
    .post(
        "/account/two-factor/app/confirm",
        pages::two_factor::confirm_app,
    )
    .post(
        "/account/two-factor/recovery-codes",
        pages::two_factor::new_recovery_codes,
    )
    .post("/account/two-factor/remove", pages::two_factor::remove)
    .post(
        "/account/two-factor/keys/begin",
        pages::two_factor::begin_key,
    )
    .post(
        "/account/two-factor/keys/finish",
        pages::two_factor::finish_key,
    )
    .post(
        "/account/two-factor/keys/{id}/remove",
        pages::two_factor::remove_key,
    )
    .post("/logout", account::logout)
    .get("/setup", account::setup_page)
    .post("/setup", account::setup)
    .get("/host", host::host_page)
    .get("/docs/api", super::openapi::docs_page)
    .get("/events", super::live::events)
    .get("/vms", vms::vms_page)
    .post("/vms", vms::create_vm)
    .get("/vms/new", vms::new_vm_page)
    .get("/vms/new/charge", vms::charge_explained)
    .get("/vms/{name}", vms::vm_page)
    .post("/vms/{name}/action/{action}", vms::vm_action)
    .post("/vms/{name}/autostart", vms::vm_autostart)
    .post("/vms/{name}/resize", vm_changes::resize_form)
    .post("/vms/{name}/labels", vm_changes::labels_form)
    .post("/vms/{name}/devices", vm_changes::devices_form)
    .post("/vms/{name}/cdrom", vm_changes::cdrom_form)
    .post("/vms/{name}/grow-disk", vm_changes::grow_disk_form)
    .post("/vms/{name}/disks", vm_changes::add_disk_form)
    .post(
        "/vms/{name}/disks/{target}/detach",
        vm_changes::detach_disk_form,
    )
    .post("/vms/{name}/nics", vm_changes::add_nic_form)
    .post("/vms/{name}/hostdevs", vm_changes::attach_hostdev_form)
    .post("/vms/{name}/start-order", vm_changes::start_order_form)
    .post("/vms/{name}/backup", pages::backups::backup_form)
    .get("/backups", pages::backups::backups_page)
    .post("/backups/targets", pages::backups::target_form)
    .post("/backups/targets/{pool}/scan", pages::backups::scan_form)
    .post("/backups/schedules", pages::backups::schedule_form)
    .post(
        "/backups/schedules/{id}/delete",
        pages::backups::schedule_delete_form,
    )
    .post(
        "/backups/schedules/{id}/run",
        pages::backups::schedule_run_form,
    )
    .post("/backups/{id}/restore", pages::backups::restore_form)
    .post("/backups/{id}/{action}", pages::backups::backup_action)
    .post(
        "/vms/{name}/hostdevs/detach",
        vm_changes::detach_hostdev_form,
    )
    .post("/vms/{name}/nics/{mac}/{action}", vm_changes::nic_form)
    .post("/vms/bulk", pages::bulk::bulk_form)
    .get("/vms/bulk/{batch}", pages::bulk::bulk_page)
    .post("/vms/{name}/clone", vm_changes::clone_form)
    .post("/vms/{name}/snapshots", vm_changes::snapshot_form)
    .post(
        "/vms/{name}/snapshots/{snapshot}/{action}",
        vm_changes::snapshot_action,
    )
    .get("/vms/{name}/delete", vms::delete_page)
    .post("/vms/{name}/delete", vms::delete_vm)
    .get("/audit", admin::audit_page)
    .get("/users", admin::users_page)
    .post("/users", admin::create_user)
    .post("/users/{name}/delete", admin::delete_user)
    .post("/users/{name}/reset-2fa", pages::two_factor::reset_user)
    .post(
        "/users/two-factor-required",
        pages::two_factor::set_required,
    )
    .get("/flavors", admin::flavors_page)
    .post("/flavors", admin::set_flavor)
    .post("/flavors/{name}/delete", admin::delete_flavor)
    .post("/tokens", admin::create_token)
    .post("/tokens/{id}/delete", admin::delete_token)
    .get("/host/devices", host::host_devices_page)
    .get("/host/storage", pages::storage::storage_page)
    .post("/host/storage", pages::storage::define_form)
    .get("/host/storage/{name}", pages::storage::pool_page)
    .post(
        "/host/storage/{name}/action/{action}",
        pages::storage::action_form,
    )
    .get("/host/storage/{name}/delete", pages::storage::delete_page)
    .post("/host/storage/{name}/delete", pages::storage::delete_form)
    .get(
        "/host/libvirt-networks",
        pages::libvirt_networks::networks_page,
    )
    .post(
        "/host/libvirt-networks",
        pages::libvirt_networks::create_form,
    )
    .post(
        "/host/libvirt-networks/{name}/action/{action}",
        pages::libvirt_networks::action_form,
    )
    .get(
        "/host/libvirt-networks/{name}/stop",
        pages::libvirt_networks::stop_page,
    )
    .get(
        "/host/libvirt-networks/{name}/remove",
        pages::libvirt_networks::remove_page,
    )
    .post(
        "/host/libvirt-networks/{name}/remove",
        pages::libvirt_networks::remove_form,
    )
    .configure(super::console::routes)
    // Before the /api/v1 scope: its `/pools/{name}/{action}` would take these POSTs.
    .configure(super::volumes::routes)
    .configure(super::jobs::routes)
    // Before the /api/v1 scope too: its `/vms/{name}/{action}` would take these POSTs.
    .configure(pages::templates::routes)
    // Before the /api/v1 scope, which would answer /api/v1/kickstarts with 404.
    .configure(super::kickstarts::routes)
    .configure(super::fleet_api::routes)
    .configure(pages::fleet::routes)
    .scoped("/api/v1", |cfg| {
        cfg.get("/openapi.json", super::openapi::openapi_json)
            .get("/whoami", api::whoami)
            .get("/host", api::host)
            .get("/pools", api::pools)
            .get("/vms", api::vms)
            .post("/vms", api::create_vm)
            .post("/vms/bulk", api::bulk)
            .get("/bulk/{batch}", api::bulk_outcome)
            .get("/vms/{name}", api::vm)
            .patch("/vms/{name}", api::patch_vm)
            .delete("/vms/{name}", api::delete_vm)
            .post("/vms/{name}/clone", api::clone_vm)
            .get("/vms/{name}/snapshots", api::snapshots)
            .put("/vms/{name}/cdrom", api::change_cdrom)
            .patch("/vms/{name}/disks/{target}", api::grow_disk)
            .post("/vms/{name}/disks", super::api_devices::add_disk)
            .delete(
                "/vms/{name}/disks/{target}",
                super::api_devices::detach_disk,
            )
            .post("/vms/{name}/nics", super::api_devices::add_nic)
            .patch("/vms/{name}/nics/{mac}", super::api_devices::set_nic_link)
            .delete("/vms/{name}/nics/{mac}", super::api_devices::remove_nic)
            .post("/vms/{name}/hostdevs", super::api_devices::attach_hostdev)
            .delete(
                "/vms/{name}/hostdevs/{address}",
                super::api_devices::detach_hostdev,
            )
            .get("/host/devices", super::api_devices::host_devices)
            .get("/backups", super::api_backups::list)
            .post("/vms/{name}/backups", super::api_backups::backup_vm)
            .post("/backups/{id}/restore", super::api_backups::restore)
            .post(
                "/backups/{id}/restore-over",
                super::api_backups::restore_over,
            )
            .post("/backups/{id}/verify", super::api_backups::verify)
            .delete("/backups/{id}", super::api_backups::delete)
            .put("/backup-targets/{pool}", super::api_backups::add_target)
            .delete("/backup-targets/{pool}", super::api_backups::remove_target)
            .post(
                "/backup-targets/{pool}/scan",
                super::api_backups::scan_target,
            )
            .get("/backup-schedules", super::api_backups::schedules)
            .post("/backup-schedules", super::api_backups::create_schedule)
            .delete(
                "/backup-schedules/{id}",
                super::api_backups::delete_schedule,
            )
            .post(
                "/backup-schedules/{id}/run",
                super::api_backups::run_schedule,
            )
            .put(
                "/vms/{name}/start-order",
                super::api_devices::set_start_order,
            )
            .post("/vms/{name}/snapshots", api::create_snapshot)
            .post(
                "/vms/{name}/snapshots/{snapshot}/revert",
                api::revert_snapshot,
            )
            .delete("/vms/{name}/snapshots/{snapshot}", api::delete_snapshot)
            .post("/vms/{name}/{action}", api::vm_action)
            .post("/pools", super::api_storage::define_pool)
            .get("/pools/{pool}/volumes", super::api_storage::pool_volumes)
            .post("/pools/{name}/{action}", super::api_storage::pool_action)
            .delete("/pools/{name}", super::api_storage::delete_pool)
            .get("/networks", super::api_storage::networks)
            .post("/networks", super::api_storage::create_network)
            .get("/networks/{name}", super::api_storage::network)
            .post(
                "/networks/{name}/{action}",
                super::api_storage::network_action,
            )
            .delete("/networks/{name}", super::api_storage::remove_network)
            .configure(super::hostnet_api::routes);
    })
    .configure(super::usage::routes)
    .configure(pages::hostnet::routes);
}

fn security_headers(tls: bool) -> DefaultHeaders {
    let h = DefaultHeaders::new()
        .add((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ))
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((header::REFERRER_POLICY, "same-origin"));
    if tls {
        h.add((header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"))
    } else {
        h
    }
}

/// The TCP socket systemd opened for virtdeck (`virtdeck.socket`, socket activation:
/// `LISTEN_PID`/`LISTEN_FDS`), if it was started that way; `listen` is ignored then.
fn activated_listener() -> anyhow::Result<Option<TcpListener>> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    let listener = fds
        .take_tcp_listener(0)
        .context("the socket systemd passed (socket activation) is not a TCP socket")?;
    if let Some(l) = &listener {
        tracing::info!(address = ?l.local_addr().ok(), "serving on the socket systemd opened");
    }
    Ok(listener)
}

/// Starts serving. Call from inside an actix/tokio runtime; await `Running::server`.
pub fn start(cfg: Config) -> anyhow::Result<Running> {
    start_with(cfg, None)
}

/// [`start`], with the hypervisor wrapped (tests inject failures this way).
pub fn start_with(cfg: Config, wrap: Option<HypervisorWrap>) -> anyhow::Result<Running> {
    cfg.validate()?;
    let tls = cfg.tls.enabled;
    let addr = cfg.listen_addr()?;
    prepare_data_dir(&cfg.data_dir)?;
    let (tls_cfg, fingerprint) = if tls {
        let (c, fingerprint) = tls_config(&cfg)?;
        (Some(c), Some(fingerprint))
    } else {
        (None, None)
    };
    let state = web::Data::new(build_state(cfg, tls, wrap)?);
    let listener = match activated_listener()? {
        Some(l) => l,
        None => TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?,
    };
    let addr = listener.local_addr()?;
    let scheme = if tls { "https" } else { "http" };
    state
        .fleet
        .set_own(format!("https://{}/", display_host(addr)), fingerprint);
    let setup_url = state
        .setup_token
        .lock()
        .ok()
        .and_then(|t| t.clone())
        .map(|t| format!("{scheme}://{}/setup?token={t}", display_host(addr)));

    let data = state.clone();
    let conn_limits = super::slow_clients::ConnLimits::new(
        state.cfg.http.max_connections_per_address,
        state.trusted_proxies.clone(),
    );
    let header_timeout = Duration::from_secs(state.cfg.http.header_timeout_seconds);
    let keep_alive = Duration::from_secs(state.cfg.http.keep_alive_seconds);
    let http = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .wrap(actix_web::middleware::from_fn(
                super::errors::api_errors_as_json,
            ))
            .wrap(actix_web::middleware::from_fn(streams_uncompressed))
            .wrap(actix_web::middleware::Compress::default())
            .wrap(actix_web::middleware::from_fn(super::metrics::track))
            .wrap(actix_web::middleware::from_fn(vm_list_follows_changes))
            .wrap(actix_web::middleware::from_fn(hsts_behind_proxy))
            .wrap(security_headers(tls))
            .wrap(actix_web::middleware::from_fn(super::privacy::no_store))
            .wrap(actix_web::middleware::from_fn(
                super::slow_clients::body_deadlines,
            ))
            .wrap(NormalizePath::new(TrailingSlash::Trim))
            .wrap(super::privacy::RequestLogger::new())
            .configure(configure)
            .default_service(web::to(not_found))
    })
    // Pages go out as headers then a gzip'ed body: without this, Nagle's algorithm holds
    // the body until the client's delayed ACK (≈ 40 ms per page on an idle connection).
    .tcp_nodelay(true)
    .client_request_timeout(header_timeout)
    .keep_alive(keep_alive)
    .on_connect(move |conn, ext| conn_limits.on_connect(conn, ext))
    .shutdown_timeout(5);
    let http = match tls_cfg {
        Some(c) => http.listen_rustls_0_23(listener, c)?,
        None => http.listen(listener)?,
    };
    let server = http.run();
    spawn_housekeeping(state.clone());
    spawn_fleet_refresh(state.clone());
    super::audit::spawn_retention(state.clone());
    crate::usage::spawn_sampler(&state.usage, state.hv.clone());
    Ok(Running {
        addr,
        scheme,
        setup_url,
        server,
        state,
    })
}

/// Behind a TLS reverse proxy (trusted, saying `X-Forwarded-Proto: https`) virtdeck may
/// serve plain HTTP; browsers must still be told to keep to HTTPS.
async fn hsts_behind_proxy(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let https = req
        .app_data::<web::Data<AppState>>()
        .is_some_and(|s| !s.tls && s.forwarded_https(req.request()));
    let mut res = next.call(req).await?;
    if https {
        res.headers_mut().insert(
            header::STRICT_TRANSPORT_SECURITY,
            header::HeaderValue::from_static("max-age=31536000"),
        );
    }
    Ok(res)
}

/// Pages, JSON, scripts and styles go out gzip'ed when the browser accepts it; streamed
/// bodies (live events, volume downloads, uploads' answers as they come) must reach the
/// client as they are written, so they are marked as not to be compressed.
async fn streams_uncompressed(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    use actix_web::body::BodySize;
    let mut res = next.call(req).await?;
    if matches!(res.response().body().size(), BodySize::Stream) {
        res.headers_mut().insert(
            header::CONTENT_ENCODING,
            header::HeaderValue::from_static("identity"),
        );
    }
    Ok(res)
}

/// Any request that may change something (every method but GET and HEAD) makes the next
/// VM list read libvirt again, so a page loaded after a change shows it.
async fn vm_list_follows_changes(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let changes = !matches!(
        *req.method(),
        actix_web::http::Method::GET | actix_web::http::Method::HEAD
    );
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let res = next.call(req).await;
    if let (true, Some(state)) = (changes, state) {
        state.vm_list.invalidate();
    }
    res
}

/// The address to show in links: `localhost` for a wildcard bind.
fn display_host(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        let host = hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        format!("{host}:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// Asks every peer for its VMs and capacity every `[fleet] refresh_seconds`, so the fleet
/// page answers from what it knows and never waits for a peer.
fn spawn_fleet_refresh(state: web::Data<AppState>) {
    tokio::spawn(async move {
        let every = Duration::from_secs(state.cfg.fleet.refresh_seconds.max(1));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let svc = state.svc.clone();
            let _ = tokio::task::spawn_blocking(move || {
                svc.refresh_peers();
                crate::service::migration::sweep_arrivals(&svc);
            })
            .await;
        }
    });
}

/// Removes expired sessions and old login failures every few minutes.
fn spawn_housekeeping(state: web::Data<AppState>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(300));
        loop {
            tick.tick().await;
            let now = super::now();
            let idle = now - state.cfg.session.idle_timeout_seconds as i64;
            let absolute = now - state.cfg.session.absolute_timeout_seconds as i64;
            let failures = now
                - state
                    .cfg
                    .login
                    .window_seconds
                    .max(state.cfg.login.lock_seconds) as i64;
            let pending = now - crate::auth::two_factor::PENDING_SECONDS;
            let r = super::db(&state, move |s| {
                Ok((
                    s.purge_sessions(idle, absolute)?,
                    s.purge_login_failures(failures)?,
                    s.purge_pending_sign_ins(pending)?,
                ))
            })
            .await;
            if let Ok((sessions, failures, pending)) = r {
                tracing::debug!(sessions, failures, pending, "housekeeping");
            }
        }
    });
}

#[cfg(test)]
mod data_dir_tests {
    use super::*;

    #[test]
    fn only_a_directory_of_its_own() {
        let own = |p: &str, mode| data_dir_problem(Path::new(p), 1000, mode, 1000);
        assert!(own("/var/lib/virtdeck", 0o40755).is_none());
        assert!(own("/tmp", 0o41777).unwrap().contains("system directory"));
        assert!(own("/etc", 0o40755).is_some());
        assert!(own("/srv/shared", 0o41777).unwrap().contains("shared"));
        assert!(own("/srv/open", 0o40777).unwrap().contains("shared"));
        let other = data_dir_problem(Path::new("/home/bob/vd"), 1001, 0o40700, 1000);
        assert!(other.unwrap().contains("another user"));
    }
}
