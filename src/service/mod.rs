//! The service layer: every change virtdeck makes (VMs, pools, volumes, networks,
//! templates, kickstarts, users, tokens, sizes) is an [`Op`] run by [`execute`], which
//! checks the caller's role, runs the change off the async runtime, counts it and writes
//! its one audit row with the outcome. Pages, the API, the CLI and (next) peer hosts call
//! the operations in this module's children; nothing else writes audit rows for changes.
//! It knows nothing of HTTP: callers turn [`Denied`] and [`LifecycleError`] into their
//! own answers.

pub mod admin;
pub mod audit;
pub mod backups;
pub mod bulk;
pub mod fleet;
pub mod host;
pub mod kickstarts;
pub mod migration;
pub mod runner;
pub mod storage;
pub mod templates;
pub mod two_factor;
pub mod vms;

use crate::auth::Role;
use crate::config::Config;
use crate::domain::usage::prometheus::Histogram;
use crate::hypervisor::Hypervisor;
use crate::lifecycle::LifecycleError;
use crate::store::Store;
pub use audit::Action;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What every operation may use: settings, the store, libvirt, and the shared state of
/// changes in progress. Built once at start-up.
pub struct Services {
    pub cfg: Config,
    /// The lifecycle's part of `cfg`.
    pub lifecycle: crate::config::LifecycleSettings,
    pub store: Arc<Store>,
    pub hv: Arc<dyn Hypervisor>,
    /// The guest type, or why the configured one cannot be used.
    pub virt_type: Result<crate::domain::host::VirtType, String>,
    /// Serializes admission of new VMs against free units.
    pub admission: crate::lifecycle::AdmissionLock,
    /// Cancel handles of the running jobs.
    pub jobs: Arc<crate::lifecycle::jobs::Jobs>,
    /// The VM list shared by the list page, the API and the capacity summary.
    pub vm_list: Arc<crate::lifecycle::list_cache::ListCache>,
    /// Host changes (network, kernel settings): plans, the one waiting for confirmation.
    pub host: Arc<crate::hostcfg::Engine>,
    /// This host among its peers, and the peers' last answers.
    pub fleet: fleet::Fleet,
    /// Usage histories (the fleet summary carries the host's recent CPU).
    pub usage: Arc<crate::usage::Usage>,
    /// How long operations took, by action and result.
    pub ops: OpMetrics,
    /// Held while backup schedules run (by their times or an admin's "Run now"), so
    /// scheduled backups stay within `[backups] scheduled_at_once`.
    pub schedule_runs: std::sync::Mutex<()>,
}

impl Services {
    /// What a lifecycle change works with.
    pub fn lc(&self) -> crate::lifecycle::Ctx<'_> {
        crate::lifecycle::Ctx {
            hv: self.hv.as_ref(),
            store: &self.store,
            cfg: &self.lifecycle,
            lock: &self.admission,
            jobs: &self.jobs,
        }
    }
}

/// Who asks for a change, as the audit log names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub username: String,
    pub remote_addr: String,
    pub role: Role,
}

impl Caller {
    /// A shell tool run by the host user `user` (root, or whoever may read the data).
    pub fn shell(user: &str) -> Caller {
        Caller {
            username: format!("shell:{user}"),
            remote_addr: "local".into(),
            role: Role::Admin,
        }
    }

    /// virtdeck itself (start-up reconciliation, retention): may do anything.
    pub fn virtdeck() -> Caller {
        Caller {
            username: "virtdeck".into(),
            remote_addr: "local".into(),
            role: Role::Admin,
        }
    }

    /// The job runner's view of the caller (jobs write their end row under this name).
    pub fn actor(&self) -> crate::lifecycle::jobs::Actor {
        crate::lifecycle::jobs::Actor {
            username: self.username.clone(),
            remote_addr: self.remote_addr.clone(),
        }
    }
}

/// A change refused before it ran: the caller's role does not include the one it needs.
/// The refusal is already in the audit log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Your role ({have}) may not do this; it needs {needed}. Ask an admin.")]
pub struct Denied {
    pub have: Role,
    pub needed: Role,
}

/// One change: what it is (its audit action), what it acts on, who may do it, the work
/// (run off the async runtime with the [`Services`]) and how its success reads in the
/// audit log.
pub struct Op<F, D> {
    pub action: Action,
    pub target: String,
    pub role: Role,
    pub run: F,
    pub describe: D,
}

impl<F, D> Op<F, D> {
    /// A change every signed-in user may make to their own account.
    pub fn signed_in<T, E>(action: Action, target: impl Into<String>, run: F, describe: D) -> Self
    where
        F: FnOnce(&Services) -> Result<T, E>,
        D: FnOnce(&T) -> String,
    {
        Op {
            action,
            target: target.into(),
            role: Role::Viewer,
            run,
            describe,
        }
    }

    /// A change operators (and admins) may make.
    pub fn operator<T, E>(action: Action, target: impl Into<String>, run: F, describe: D) -> Self
    where
        F: FnOnce(&Services) -> Result<T, E>,
        D: FnOnce(&T) -> String,
    {
        Op {
            action,
            target: target.into(),
            role: Role::Operator,
            run,
            describe,
        }
    }

    /// A change only admins may make.
    pub fn admin<T, E>(action: Action, target: impl Into<String>, run: F, describe: D) -> Self
    where
        F: FnOnce(&Services) -> Result<T, E>,
        D: FnOnce(&T) -> String,
    {
        Op {
            action,
            target: target.into(),
            role: Role::Admin,
            run,
            describe,
        }
    }
}

/// How a change's error reads in the audit log and the operation metrics.
pub trait Failure: std::fmt::Display + Send + 'static {
    /// `invalid` (bad input), `refused` (does not fit or not now) or `failed`.
    fn result_word(&self) -> &'static str;
    /// The audit row's detail: every field error, or the sentence.
    fn audit_detail(&self) -> String {
        self.to_string()
    }
    /// The error for a change whose thread was lost.
    fn internal(message: String) -> Self;
    /// The error for a change refused because what it changes is busy.
    fn busy(message: String) -> Self;
}

impl Failure for LifecycleError {
    fn result_word(&self) -> &'static str {
        match self {
            LifecycleError::Invalid(_) => "invalid",
            LifecycleError::Capacity(_) => "refused",
            _ => "failed",
        }
    }
    fn audit_detail(&self) -> String {
        match self {
            LifecycleError::Invalid(errs) => {
                fields_text(errs.iter().map(|e| (e.field, e.message.as_str())))
            }
            other => match other.libvirt_code() {
                Some(code) => format!("{other} (libvirt error {code})"),
                None => other.to_string(),
            },
        }
    }
    fn internal(message: String) -> Self {
        LifecycleError::failed(message)
    }
    fn busy(message: String) -> Self {
        LifecycleError::Conflict(message)
    }
}

/// Field errors as one audit detail: `field: message; field: message`.
pub fn fields_text<'a>(errors: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    errors
        .map(|(field, message)| format!("{field}: {message}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Runs `op` for `caller`: the role check (a refusal is audited and returned as
/// [`Denied`]), then the change on a blocking thread, its duration counted by action and
/// outcome, and one audit row with the outcome (`ok`, `invalid`, `refused`, `failed`)
/// and what it did or why not. The inner result is the change's own.
pub async fn execute<T, E, F, D>(
    svc: &Arc<Services>,
    caller: &Caller,
    op: Op<F, D>,
) -> Result<Result<T, E>, Denied>
where
    T: Send + 'static,
    E: Failure,
    F: FnOnce(&Services) -> Result<T, E> + Send + 'static,
    D: FnOnce(&T) -> String + Send + 'static,
{
    check_role(svc, caller, op.role, op.action, &op.target).await?;
    let (s, who) = (svc.clone(), caller.clone());
    let Op {
        action,
        target,
        run,
        describe,
        ..
    } = op;
    // The change's log lines (its audit entry among them) carry the caller's span.
    let span = tracing::Span::current();
    let done = tokio::task::spawn_blocking(move || {
        let _in_request = span.enter();
        let started = Instant::now();
        let held = if action.changes_named_vm() {
            crate::lifecycle::jobs::held(&s.store, &target).unwrap_or(None)
        } else {
            None
        };
        let r = match held {
            Some(why) => Err(E::busy(why)),
            None => run(&s),
        };
        let took = started.elapsed().as_secs_f64();
        let (result, detail) = match &r {
            Ok(v) => ("ok", describe(v)),
            Err(e) => (e.result_word(), e.audit_detail()),
        };
        s.ops.observe(action, result, took);
        audit::write(&s.store, &who, action.as_str(), &target, result, &detail);
        r
    })
    .await;
    Ok(done.unwrap_or_else(|e| Err(E::internal(format!("internal error: {e}")))))
}

/// Refuses, and audits the refusal, unless `caller`'s role includes `needed`.
pub async fn check_role(
    svc: &Arc<Services>,
    caller: &Caller,
    needed: Role,
    action: Action,
    target: &str,
) -> Result<(), Denied> {
    if caller.role.allows(needed) {
        return Ok(());
    }
    let (s, who, target) = (svc.clone(), caller.clone(), target.to_string());
    let detail = format!("role {} needs {}", caller.role, needed);
    let span = tracing::Span::current();
    let _ = tokio::task::spawn_blocking(move || {
        let _in_request = span.enter();
        audit::write(&s.store, &who, action.as_str(), &target, "denied", &detail)
    })
    .await;
    Err(Denied {
        have: caller.role,
        needed,
    })
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Upper bounds (seconds) of the operation duration buckets: changes take from a
/// fraction of a second (start) to many minutes (a clone copying large disks).
pub const OP_BUCKETS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
];

/// How long operations took, by action and outcome (bounded: actions are an enum,
/// outcomes four words).
#[derive(Default)]
pub struct OpMetrics {
    by_action: Mutex<HashMap<(&'static str, &'static str), Histogram>>,
}

impl OpMetrics {
    pub fn observe(&self, action: Action, result: &'static str, seconds: f64) {
        let mut m = self.by_action.lock().unwrap_or_else(|p| p.into_inner());
        m.entry((action.as_str(), result))
            .or_insert_with(|| Histogram::new(&OP_BUCKETS))
            .observe(seconds);
    }

    /// Every (action, outcome) with its histogram, sorted.
    pub fn snapshot(&self) -> Vec<((&'static str, &'static str), Histogram)> {
        let m = self.by_action.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = m.iter().map(|(k, v)| (*k, v.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}
