//! Staged host changes: plan (file diffs + live operations) → apply (files written
//! atomically under the host root, previous versions kept; live changes through netlink
//! and /proc/sys) → confirmed from the browser before a deadline, or rolled back.
//!
//! One change at a time. A plan remembers a fingerprint of the state it was built on
//! (live links/addresses/routes or kernel settings, the files it touches, what virtdeck
//! manages); apply refuses it when that state has changed since. A change that is
//! waiting for confirmation is journalled in the data dir, so a restart rolls it back.

pub mod files;
pub mod sysctl;

use crate::adapters::netlink::Netlink;
use crate::adapters::sysctl_io;
use crate::auth::secret::random_token;
use crate::domain::hostnet::form::NetForm;
use crate::domain::hostnet::plan::{ipv6_losses, live_ops, FileChange, LiveNet, LiveOp};
use crate::domain::hostnet::render::{self, RenderedFile};
use crate::domain::hostnet::{field_error, Backend, FieldError, NetConfig};
use crate::store::{AuditEntry, Store};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Where host changes go and how long an admin has to confirm one.
#[derive(Debug, Clone)]
pub struct HostSettings {
    /// Every file a plan writes is below this directory (`/` on a real host).
    pub root: PathBuf,
    /// Live changes happen in this named network namespace (tests, containers).
    pub netns: Option<String>,
    /// The network files' format; `None`: detected from the files under `root`.
    pub backend: Option<Backend>,
    pub confirm_seconds: u64,
    /// Why plans may be shown but not applied here (the demo host without a network
    /// namespace of its own: applying would change the real machine's network).
    pub apply_refused: Option<String>,
}

/// What virtdeck manages on the host, as last confirmed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Managed {
    pub network: NetConfig,
    /// The format the network files were written in.
    pub network_backend: Option<Backend>,
    /// Kernel settings virtdeck persists: key → wanted value.
    pub sysctl: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Network,
    Sysctl,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Network => "network",
            ChangeKind::Sysctl => "sysctl",
        }
    }
}

/// A change as shown before it is applied.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Plan {
    pub id: String,
    pub kind: ChangeKind,
    pub title: String,
    pub files: Vec<FileChange>,
    pub ops: Vec<LiveOp>,
    /// Things the admin should know (e.g. DHCP happens at the next start of the service).
    pub notes: Vec<String>,
    /// What applying takes away from the host without giving it back (e.g. its IPv6
    /// address or default route), shown loudly above Apply.
    pub warnings: Vec<String>,
    pub backend: Option<Backend>,
    #[serde(skip)]
    pub fingerprint: String,
    #[serde(skip)]
    next: Managed,
    pub created_by: String,
    pub created_at: i64,
}

impl Plan {
    pub fn op_texts(&self) -> Vec<String> {
        self.ops.iter().map(|o| o.describe()).collect()
    }
}

/// A plan's contents, before the engine adds its id and fingerprint.
pub(crate) struct PlanParts {
    pub kind: ChangeKind,
    pub title: String,
    pub files: Vec<FileChange>,
    pub ops: Vec<LiveOp>,
    /// Kernel settings the plan depends on (part of its fingerprint).
    pub keys: Vec<String>,
    pub next: Managed,
    pub notes: Vec<String>,
}

/// One file as it was before the change.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Backup {
    path: String,
    /// Where the previous version is kept; `None`: the file did not exist.
    saved: Option<PathBuf>,
    mode: u32,
}

/// An applied change that waits for confirmation (also the on-disk journal).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Journal {
    plan_id: String,
    kind: ChangeKind,
    title: String,
    applied_by: String,
    /// SHA-256 of the sign-in (session or API token) that applied the change: its
    /// confirmation proves that this sign-in's network path still works.
    #[serde(default)]
    applied_from: String,
    applied_at: i64,
    deadline: i64,
    backups: Vec<Backup>,
    done: Vec<LiveOp>,
    next: Managed,
    files: Vec<String>,
    ops: Vec<String>,
}

/// The change waiting for confirmation, for pages and the API.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PendingView {
    pub plan_id: String,
    pub kind: ChangeKind,
    pub title: String,
    pub applied_by: String,
    pub applied_at: i64,
    /// Unix seconds by which it must be confirmed.
    pub deadline: i64,
    pub seconds_left: i64,
    pub files: Vec<String>,
    pub ops: Vec<String>,
}

/// How the last change ended.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Outcome {
    pub at: i64,
    pub title: String,
    /// confirmed, rolled back, or failed.
    pub result: String,
    pub detail: String,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ChangeError {
    /// The form has problems; each is shown at its field.
    #[error("{}", .0.first().map(|e| e.message.as_str()).unwrap_or("invalid"))]
    Invalid(Vec<FieldError>),
    #[error("{0}")]
    NotFound(String),
    /// Another change is under way, or nothing is.
    #[error("{0}")]
    Conflict(String),
    /// The plan was built on state that has changed since.
    #[error("{0}")]
    Stale(String),
    /// A step failed; everything already done was undone (or the problems are listed).
    #[error("{message}")]
    Failed { message: String },
    #[error("{0}")]
    Io(String),
}

struct Inner {
    plans: Vec<Plan>,
    pending: Option<Journal>,
    generation: u64,
    last: Option<Outcome>,
}

/// The host-change engine. One per process.
pub struct Engine {
    pub settings: HostSettings,
    data_dir: PathBuf,
    net: Netlink,
    store: Arc<Store>,
    inner: Mutex<Inner>,
}

const MAX_PLANS: usize = 20;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Engine {
    pub fn new(settings: HostSettings, data_dir: PathBuf, store: Arc<Store>) -> Arc<Engine> {
        let net = Netlink::new(settings.netns.clone());
        Arc::new(Engine {
            settings,
            data_dir,
            net,
            store,
            inner: Mutex::new(Inner {
                plans: Vec::new(),
                pending: None,
                generation: 0,
                last: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn state_dir(&self) -> PathBuf {
        self.data_dir.join("host-changes")
    }

    fn managed_path(&self) -> PathBuf {
        self.data_dir.join("host-managed.json")
    }

    fn journal_path(&self) -> PathBuf {
        self.state_dir().join("pending.json")
    }

    /// What virtdeck manages, as last confirmed.
    pub fn managed(&self) -> Result<Managed, ChangeError> {
        match files::read_opt(&self.managed_path()).map_err(ChangeError::Io)? {
            None => Ok(Managed::default()),
            Some(text) => serde_json::from_str(&text).map_err(|e| {
                ChangeError::Io(format!("{} is damaged: {e}", self.managed_path().display()))
            }),
        }
    }

    /// The live network (links, addresses, routes).
    pub fn live(&self) -> Result<LiveNet, ChangeError> {
        self.net.read().map_err(|e| ChangeError::Io(e.0))
    }

    /// The network file format: the configured one, else detected under the host root.
    pub fn detected_backend(&self) -> Backend {
        if let Some(b) = self.settings.backend {
            return b;
        }
        let existing: Vec<&str> = Backend::MARKERS
            .iter()
            .map(|(p, _)| *p)
            .filter(|p| self.settings.root.join(p).exists())
            .collect();
        Backend::detect(&existing)
    }

    pub fn pending(&self) -> Option<PendingView> {
        self.lock().pending.as_ref().map(view)
    }

    /// Whether the waiting change was applied from another sign-in than `credential_sha256`.
    pub fn pending_from_other_sign_in(&self, credential_sha256: &str) -> bool {
        self.lock().pending.as_ref().is_some_and(|j| {
            !j.applied_from.is_empty()
                && !crate::auth::secret::secrets_equal(&j.applied_from, credential_sha256)
        })
    }

    pub fn last_outcome(&self) -> Option<Outcome> {
        self.lock().last.clone()
    }

    pub fn plan(&self, id: &str) -> Option<Plan> {
        self.lock().plans.iter().find(|p| p.id == id).cloned()
    }

    fn fingerprint(
        &self,
        kind: ChangeKind,
        paths: &[String],
        keys: &[String],
    ) -> Result<String, ChangeError> {
        let mut h = Sha256::new();
        match kind {
            ChangeKind::Network => h.update(self.live()?.fingerprint_text()),
            ChangeKind::Sysctl => {
                for (k, p) in sysctl_io::probe(self.settings.netns.as_deref(), keys.to_vec())
                    .map_err(ChangeError::Io)?
                {
                    h.update(format!("{k}={p:?}\n"));
                }
            }
        }
        for p in paths {
            let full = files::under(&self.settings.root, p).map_err(ChangeError::Io)?;
            h.update(format!("{p}\n"));
            h.update(
                files::read_opt(&full)
                    .map_err(ChangeError::Io)?
                    .unwrap_or_else(|| "\u{0}absent".into()),
            );
        }
        h.update(serde_json::to_string(&self.managed()?).unwrap_or_default());
        Ok(hex::encode(h.finalize()))
    }

    /// File changes from `old` to `new` rendered files, against what is on disk.
    pub(crate) fn file_changes(
        &self,
        old: &[RenderedFile],
        new: &[RenderedFile],
    ) -> Result<Vec<FileChange>, ChangeError> {
        let mut paths: Vec<&str> = old
            .iter()
            .chain(new.iter())
            .map(|f| f.path.as_str())
            .collect();
        paths.sort();
        paths.dedup();
        let mut out = Vec::new();
        for p in paths {
            let full = files::under(&self.settings.root, p).map_err(ChangeError::Io)?;
            let before = files::read_opt(&full).map_err(ChangeError::Io)?;
            let want = new.iter().find(|f| f.path == p);
            let after = want.map(|f| f.content.clone());
            let mode = want.map(|f| f.mode).unwrap_or(0o644);
            let mode_differs = want.is_some()
                && before.is_some()
                && files::mode_of(&full).is_some_and(|m| m != mode);
            if before != after || mode_differs {
                out.push(FileChange::new(p, before, after, mode));
            }
        }
        Ok(out)
    }

    fn remember(&self, plan: Plan) -> Plan {
        let mut inner = self.lock();
        inner.plans.push(plan.clone());
        if inner.plans.len() > MAX_PLANS {
            inner.plans.remove(0);
        }
        plan
    }

    /// Builds the plan for a host network form: validated, rendered, diffed.
    pub fn plan_network(&self, form: &NetForm, actor: &str) -> Result<Plan, ChangeError> {
        let change = form.to_change().map_err(ChangeError::Invalid)?;
        let backend = match form.backend.trim() {
            "" => self.detected_backend(),
            b => Backend::parse(b).ok_or_else(|| {
                ChangeError::Invalid(vec![field_error(
                    "backend",
                    format!("\"{b}\" is not networkd, network-manager, ifupdown or ifcfg."),
                )])
            })?,
        };
        let managed = self.managed()?;
        let live = self.live()?;
        let next_cfg = managed
            .network
            .with_change(&change, &live.link_names())
            .map_err(ChangeError::Invalid)?;
        let old_files =
            render::render(&managed.network, managed.network_backend.unwrap_or(backend));
        let mut new_files = render::render(&next_cfg, backend);
        if backend == Backend::Ifupdown {
            let main_path = files::under(&self.settings.root, render::IFUPDOWN_MAIN)
                .map_err(ChangeError::Io)?;
            let main = files::read_opt(&main_path).map_err(ChangeError::Io)?;
            if let Some(text) = render::ifupdown_main(main.as_deref().unwrap_or(""), &next_cfg) {
                new_files.push(RenderedFile {
                    path: render::IFUPDOWN_MAIN.into(),
                    content: text,
                    mode: files::mode_of(&main_path).unwrap_or(0o644),
                });
            }
        }
        let mut old_all = old_files;
        if backend == Backend::Ifupdown {
            old_all.retain(|f| f.path != render::IFUPDOWN_MAIN);
        }
        let file_changes = self.file_changes(&old_all, &new_files)?;
        let ops = live_ops(&managed.network, &next_cfg, &live);
        let warnings = ipv6_losses(&next_cfg, &live, &ops);
        if file_changes.is_empty() && ops.is_empty() {
            return Err(ChangeError::Invalid(vec![field_error(
                "kind",
                "The host is set up like this already; there is nothing to change.",
            )]));
        }
        let mut notes = Vec::new();
        if next_cfg
            .all_ip()
            .iter()
            .any(|(_, _, ip)| ip.v4 == crate::domain::hostnet::V4::Dhcp)
        {
            notes.push(
                "DHCP addresses are obtained by the host's network service when it next starts; \
                 virtdeck does not run a DHCP client."
                    .to_string(),
            );
        }
        if ops.iter().any(|o| matches!(o, LiveOp::CreateBond(_))) {
            notes.push("Bonds need the kernel's bonding driver.".to_string());
        }
        let paths: Vec<String> = file_changes.iter().map(|f| f.path.clone()).collect();
        let fingerprint = self.fingerprint(ChangeKind::Network, &paths, &[])?;
        let title = match &change {
            crate::domain::hostnet::NetChange::Bond(b) => format!("bond {}", b.name),
            crate::domain::hostnet::NetChange::Bridge(b) => format!("bridge {}", b.name),
            crate::domain::hostnet::NetChange::Vlan(v) => format!("VLAN {}", v.name),
            crate::domain::hostnet::NetChange::Recipe { bond, bridge } => match bond {
                Some(b) => format!("bond {} → bridge {}", b.name, bridge.name),
                None => format!("bridge {}", bridge.name),
            },
            crate::domain::hostnet::NetChange::Delete { name } => format!("delete {name}"),
        };
        Ok(self.remember(Plan {
            id: random_token()[..16].to_string(),
            kind: ChangeKind::Network,
            title,
            files: file_changes,
            ops,
            notes,
            warnings,
            backend: Some(backend),
            fingerprint,
            next: Managed {
                network_backend: Some(backend),
                network: next_cfg,
                ..managed
            },
            created_by: actor.to_string(),
            created_at: now(),
        }))
    }

    /// Builds a plan from parts computed elsewhere (kernel settings).
    pub(crate) fn plan_custom(&self, parts: PlanParts, actor: &str) -> Result<Plan, ChangeError> {
        let paths: Vec<String> = parts.files.iter().map(|f| f.path.clone()).collect();
        let fingerprint = self.fingerprint(parts.kind, &paths, &parts.keys)?;
        Ok(self.remember(Plan {
            id: random_token()[..16].to_string(),
            kind: parts.kind,
            title: parts.title,
            files: parts.files,
            ops: parts.ops,
            notes: parts.notes,
            warnings: Vec::new(),
            backend: None,
            fingerprint,
            next: parts.next,
            created_by: actor.to_string(),
            created_at: now(),
        }))
    }

    /// Applies a plan: files, then live operations; on any failure everything already
    /// done is undone. On success the change waits for [`Engine::confirm`].
    pub fn apply(
        self: &Arc<Self>,
        plan_id: &str,
        actor: &str,
        applied_from: &str,
    ) -> Result<PendingView, ChangeError> {
        if let Some(reason) = &self.settings.apply_refused {
            return Err(ChangeError::Conflict(reason.clone()));
        }
        let mut inner = self.lock();
        if let Some(p) = &inner.pending {
            return Err(ChangeError::Conflict(format!(
                "Another host change ({}, applied by {}) is waiting for confirmation; confirm or roll it back first.",
                p.title, p.applied_by
            )));
        }
        let Some(plan) = inner.plans.iter().find(|p| p.id == plan_id).cloned() else {
            return Err(ChangeError::NotFound(
                "This plan is no longer available; build it again.".into(),
            ));
        };
        let keys: Vec<String> = plan
            .ops
            .iter()
            .filter_map(|o| match o {
                LiveOp::SetSysctl { key, .. } => Some(key.clone()),
                _ => None,
            })
            .collect();
        let paths: Vec<String> = plan.files.iter().map(|f| f.path.clone()).collect();
        if self.fingerprint(plan.kind, &paths, &keys)? != plan.fingerprint {
            inner.plans.retain(|p| p.id != plan_id);
            return Err(ChangeError::Stale(
                "The host has changed since this plan was made (its network, its files or what virtdeck manages); nothing was applied. Build the plan again.".into(),
            ));
        }
        inner.plans.retain(|p| p.id != plan_id);
        let deadline = now() + self.settings.confirm_seconds as i64;
        let mut journal = Journal {
            plan_id: plan.id.clone(),
            kind: plan.kind,
            title: plan.title.clone(),
            applied_by: actor.to_string(),
            applied_from: applied_from.to_string(),
            applied_at: now(),
            deadline,
            backups: Vec::new(),
            done: Vec::new(),
            next: plan.next.clone(),
            files: paths,
            ops: plan.op_texts(),
        };
        if let Err(e) = self.execute(&plan, &mut journal) {
            let problems = self.undo(&journal);
            let _ = files::remove(&self.journal_path());
            let mut message = format!("{e} Everything done before it was undone.");
            if !problems.is_empty() {
                message = format!(
                    "{e} Undoing the earlier steps had problems: {}",
                    problems.join("; ")
                );
            }
            inner.last = Some(Outcome {
                at: now(),
                title: plan.title.clone(),
                result: "failed".into(),
                detail: message.clone(),
            });
            return Err(ChangeError::Failed { message });
        }
        journal.deadline = now() + self.settings.confirm_seconds as i64;
        self.save_journal(&journal).map_err(ChangeError::Io)?;
        inner.generation += 1;
        let generation = inner.generation;
        let view = view(&journal);
        inner.pending = Some(journal);
        drop(inner);
        let me = Arc::clone(self);
        let wait = Duration::from_secs(self.settings.confirm_seconds);
        std::thread::spawn(move || {
            std::thread::sleep(wait);
            me.expire(generation);
        });
        Ok(view)
    }

    fn save_journal(&self, j: &Journal) -> Result<(), String> {
        let text = serde_json::to_vec_pretty(j).map_err(|e| e.to_string())?;
        files::write_atomic(&self.journal_path(), &text, 0o600)
    }

    fn execute(&self, plan: &Plan, journal: &mut Journal) -> Result<(), String> {
        let backup_dir = self.state_dir().join(&plan.id);
        self.save_journal(journal)?;
        for f in &plan.files {
            let full = files::under(&self.settings.root, &f.path)?;
            let current = files::read_opt(&full)?;
            let saved = match &current {
                Some(text) => {
                    let keep = backup_dir.join("files").join(&f.path);
                    let mode = files::mode_of(&full).unwrap_or(0o644);
                    files::write_atomic(&keep, text.as_bytes(), mode)?;
                    Some(keep)
                }
                None => None,
            };
            journal.backups.push(Backup {
                path: f.path.clone(),
                saved,
                mode: files::mode_of(&full).unwrap_or(f.mode),
            });
            self.save_journal(journal)?;
            match &f.after {
                Some(text) => files::write_atomic(&full, text.as_bytes(), f.mode)?,
                None => files::remove(&full)?,
            }
        }
        for op in &plan.ops {
            self.net
                .run(op)
                .map_err(|e| format!("Step \"{}\" failed: {}.", op.describe(), e.0))?;
            journal.done.push(op.clone());
            self.save_journal(journal)?;
        }
        Ok(())
    }

    /// Undoes live operations (newest first) and restores files. Returns problems.
    fn undo(&self, j: &Journal) -> Vec<String> {
        let mut problems = Vec::new();
        for op in j.done.iter().rev() {
            if let Some(inv) = op.inverse() {
                if let Err(e) = self.net.run(&inv) {
                    problems.push(e.0);
                }
            }
        }
        for b in j.backups.iter().rev() {
            let r = files::under(&self.settings.root, &b.path).and_then(|full| match &b.saved {
                Some(saved) => std::fs::read(saved)
                    .map_err(|e| format!("cannot read the saved {}: {e}", saved.display()))
                    .and_then(|bytes| files::write_atomic(&full, &bytes, b.mode)),
                None => files::remove(&full),
            });
            if let Err(e) = r {
                problems.push(e);
            }
        }
        problems
    }

    /// Keeps the applied change: it becomes what virtdeck manages. Only the sign-in that
    /// applied it may confirm it (its requests arriving proves the new network carries
    /// them), unless `for_other_sign_in` says the admin means to confirm someone else's.
    pub fn confirm(
        &self,
        actor: &str,
        confirmed_from: &str,
        for_other_sign_in: bool,
    ) -> Result<Outcome, ChangeError> {
        let mut inner = self.lock();
        let Some(j) = inner.pending.take() else {
            return Err(self.nothing_pending(&inner));
        };
        let same_sign_in = crate::auth::secret::secrets_equal(&j.applied_from, confirmed_from);
        if !j.applied_from.is_empty() && !same_sign_in && !for_other_sign_in {
            let msg = format!(
                "This change was applied by {} from another sign-in; a confirmation from there \
                 proves that its network path still works. Confirm from that browser, or tick \
                 “Confirm a change applied from another sign-in” if you mean to.",
                j.applied_by
            );
            inner.pending = Some(j);
            return Err(ChangeError::Conflict(msg));
        }
        let other = !same_sign_in && !j.applied_from.is_empty();
        let text =
            serde_json::to_vec_pretty(&j.next).map_err(|e| ChangeError::Io(e.to_string()))?;
        if let Err(e) = files::write_atomic(&self.managed_path(), &text, 0o600) {
            inner.pending = Some(j);
            return Err(ChangeError::Io(e));
        }
        let _ = files::remove(&self.journal_path());
        let outcome = Outcome {
            at: now(),
            title: j.title.clone(),
            result: "confirmed".into(),
            detail: if other {
                format!(
                    "confirmed by {actor} for another sign-in (applied by {})",
                    j.applied_by
                )
            } else {
                format!("confirmed by {actor}")
            },
        };
        inner.last = Some(outcome.clone());
        Ok(outcome)
    }

    fn nothing_pending(&self, inner: &Inner) -> ChangeError {
        match &inner.last {
            Some(o) if o.result == "rolled back" => ChangeError::Conflict(format!(
                "No host change is waiting for confirmation: {} was rolled back ({}).",
                o.title, o.detail
            )),
            _ => ChangeError::Conflict("No host change is waiting for confirmation.".into()),
        }
    }

    /// Restores the previous files and live state of the waiting change.
    pub fn rollback(&self, reason: &str) -> Result<Outcome, ChangeError> {
        let mut inner = self.lock();
        let Some(j) = inner.pending.take() else {
            return Err(self.nothing_pending(&inner));
        };
        let outcome = self.finish_rollback(&j, reason);
        inner.last = Some(outcome.clone());
        Ok(outcome)
    }

    fn finish_rollback(&self, j: &Journal, reason: &str) -> Outcome {
        let problems = self.undo(j);
        let _ = files::remove(&self.journal_path());
        let detail = if problems.is_empty() {
            format!("{reason}; previous files and live state restored")
        } else {
            format!("{reason}; restoring had problems: {}", problems.join("; "))
        };
        Outcome {
            at: now(),
            title: j.title.clone(),
            result: "rolled back".into(),
            detail,
        }
    }

    fn audit(&self, action: &str, target: &str, result: &str, detail: &str) {
        let _ = self.store.append_audit(&AuditEntry {
            at: now(),
            actor: "virtdeck".into(),
            remote_addr: "local".into(),
            action: action.into(),
            target: target.into(),
            result: result.into(),
            detail: detail.into(),
        });
    }

    /// Called when the confirmation time is over: rolls back if still unconfirmed.
    fn expire(&self, generation: u64) {
        let mut inner = self.lock();
        if inner.generation != generation || inner.pending.is_none() {
            return;
        }
        let Some(j) = inner.pending.take() else {
            return;
        };
        let reason = format!("not confirmed within {} s", self.settings.confirm_seconds);
        let outcome = self.finish_rollback(&j, &reason);
        tracing::warn!(change = %j.title, detail = %outcome.detail, "host change rolled back");
        self.audit(
            &format!("host.{}.rollback", j.kind.as_str()),
            &j.title,
            "ok",
            &outcome.detail,
        );
        inner.last = Some(outcome);
    }

    /// At start-up: a change that was waiting for confirmation when virtdeck stopped is
    /// rolled back.
    pub fn recover(&self) {
        let Ok(Some(text)) = files::read_opt(&self.journal_path()) else {
            return;
        };
        let Ok(j) = serde_json::from_str::<Journal>(&text) else {
            tracing::error!(path = %self.journal_path().display(), "cannot read the host change journal");
            return;
        };
        let outcome = self.finish_rollback(&j, "virtdeck restarted before it was confirmed");
        tracing::warn!(change = %j.title, detail = %outcome.detail, "host change rolled back at start-up");
        self.audit(
            &format!("host.{}.rollback", j.kind.as_str()),
            &j.title,
            "ok",
            &outcome.detail,
        );
        self.lock().last = Some(outcome);
    }

    /// Every file virtdeck manages, as it should be now (for the export).
    pub fn managed_files(&self) -> Result<Vec<RenderedFile>, ChangeError> {
        let m = self.managed()?;
        let mut out = render::render(
            &m.network,
            m.network_backend.unwrap_or_else(|| self.detected_backend()),
        );
        out.extend(crate::domain::sysctl::render_file(&m.sysctl));
        Ok(out)
    }
}

fn view(j: &Journal) -> PendingView {
    PendingView {
        plan_id: j.plan_id.clone(),
        kind: j.kind,
        title: j.title.clone(),
        applied_by: j.applied_by.clone(),
        applied_at: j.applied_at,
        deadline: j.deadline,
        seconds_left: (j.deadline - now()).max(0),
        files: j.files.clone(),
        ops: j.ops.clone(),
    }
}
