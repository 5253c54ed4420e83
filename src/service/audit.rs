//! The audit log's one writer: the actions changes are recorded under (an enum, so a
//! typo cannot make a new kind of row), and [`append`], which every entry goes through —
//! changes from [`super::execute`], sign-ins and refusals from the web layer, job
//! outcomes from the job runner. Unauthenticated refusals fold into one row per address,
//! action, result and minute.

use super::Caller;
use crate::domain::vm::VmAction;
use crate::lifecycle::storage::PoolAction;
use crate::store::{AuditEntry, Store};

/// What a change is, as the audit log and the operation metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    VmCreate,
    Vm(VmAction),
    VmAutostart,
    VmResize,
    VmClone,
    VmDelete,
    SnapshotCreate,
    SnapshotRevert,
    SnapshotDelete,
    TemplateMark,
    TemplateUnmark,
    TemplateCreate,
    PoolDefine,
    Pool(PoolAction),
    PoolDelete,
    NetworkCreate,
    NetworkStart,
    NetworkStop,
    NetworkAutostart,
    NetworkRemove,
    VolumeCreate,
    VolumeResize,
    VolumeDelete,
    VolumeFetch,
    VolumeUpload,
    JobCancel,
    KickstartCreate,
    KickstartUpdate,
    KickstartDelete,
    UserCreate,
    UserDelete,
    UserUnlock,
    UserPassword,
    TokenCreate,
    TokenDelete,
    FlavorSet,
    FlavorDelete,
    HostNetworkPlan,
    HostSysctlPlan,
    HostChangeApply,
    HostChangeConfirm,
    HostChangeRollback,
    PeerInvite,
    PeerPair,
    PeerUnpair,
    VmMigrate,
    HostDrain,
    HostDrainEnd,
    TwoFactorEnrol,
    TwoFactorRecoveryCodes,
    TwoFactorRemove,
    TwoFactorReset,
    TwoFactorRequired,
    TwoFactorKeyAdd,
    TwoFactorKeyRemove,
    SetupLink,
    VmLabels,
    VmDevices,
    VmCdrom,
    VmDiskGrow,
    VmDiskAdd,
    VmDiskDetach,
    VmNicAdd,
    VmNicRemove,
    VmNicLink,
    VmHostdevAttach,
    VmHostdevDetach,
    VmStartOrder,
    BackupTarget,
    VmBackup,
    BackupRestore,
    BackupVerify,
    BackupDelete,
    BackupSchedule,
}

impl Action {
    /// Every action, once.
    pub const ALL: [Action; 83] = [
        Action::VmCreate,
        Action::Vm(VmAction::Start),
        Action::Vm(VmAction::Shutdown),
        Action::Vm(VmAction::Reboot),
        Action::Vm(VmAction::ForceOff),
        Action::Vm(VmAction::Pause),
        Action::Vm(VmAction::Resume),
        Action::VmAutostart,
        Action::VmResize,
        Action::VmClone,
        Action::VmDelete,
        Action::SnapshotCreate,
        Action::SnapshotRevert,
        Action::SnapshotDelete,
        Action::TemplateMark,
        Action::TemplateUnmark,
        Action::TemplateCreate,
        Action::PoolDefine,
        Action::Pool(PoolAction::Start),
        Action::Pool(PoolAction::Stop),
        Action::Pool(PoolAction::Refresh),
        Action::Pool(PoolAction::Autostart(true)),
        Action::Pool(PoolAction::Autostart(false)),
        Action::PoolDelete,
        Action::NetworkCreate,
        Action::NetworkStart,
        Action::NetworkStop,
        Action::NetworkAutostart,
        Action::NetworkRemove,
        Action::VolumeCreate,
        Action::VolumeResize,
        Action::VolumeDelete,
        Action::VolumeFetch,
        Action::VolumeUpload,
        Action::JobCancel,
        Action::KickstartCreate,
        Action::KickstartUpdate,
        Action::KickstartDelete,
        Action::UserCreate,
        Action::UserDelete,
        Action::UserUnlock,
        Action::UserPassword,
        Action::TokenCreate,
        Action::TokenDelete,
        Action::FlavorSet,
        Action::FlavorDelete,
        Action::HostNetworkPlan,
        Action::HostSysctlPlan,
        Action::HostChangeApply,
        Action::HostChangeConfirm,
        Action::HostChangeRollback,
        Action::PeerInvite,
        Action::PeerPair,
        Action::PeerUnpair,
        Action::VmMigrate,
        Action::HostDrain,
        Action::HostDrainEnd,
        Action::TwoFactorEnrol,
        Action::TwoFactorRecoveryCodes,
        Action::TwoFactorRemove,
        Action::TwoFactorReset,
        Action::TwoFactorRequired,
        Action::TwoFactorKeyAdd,
        Action::TwoFactorKeyRemove,
        Action::SetupLink,
        Action::VmLabels,
        Action::VmDevices,
        Action::VmCdrom,
        Action::VmDiskGrow,
        Action::VmDiskAdd,
        Action::VmDiskDetach,
        Action::VmNicAdd,
        Action::VmNicRemove,
        Action::VmNicLink,
        Action::VmHostdevAttach,
        Action::VmHostdevDetach,
        Action::VmStartOrder,
        Action::BackupTarget,
        Action::VmBackup,
        Action::BackupRestore,
        Action::BackupVerify,
        Action::BackupDelete,
        Action::BackupSchedule,
    ];

    /// The action the audit log names `name`.
    pub fn parse(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// Whether the action changes an existing VM named by its target: refused while a
    /// restore over that VM runs.
    pub fn changes_named_vm(self) -> bool {
        matches!(
            self,
            Action::Vm(_)
                | Action::VmAutostart
                | Action::VmResize
                | Action::VmClone
                | Action::VmDelete
                | Action::SnapshotCreate
                | Action::SnapshotRevert
                | Action::SnapshotDelete
                | Action::TemplateMark
                | Action::TemplateUnmark
                | Action::VmMigrate
                | Action::VmLabels
                | Action::VmDevices
                | Action::VmCdrom
                | Action::VmDiskGrow
                | Action::VmDiskAdd
                | Action::VmDiskDetach
                | Action::VmNicAdd
                | Action::VmNicRemove
                | Action::VmNicLink
                | Action::VmHostdevAttach
                | Action::VmHostdevDetach
                | Action::VmStartOrder
                | Action::VmBackup
                | Action::BackupRestore
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::VmCreate => "vm.create",
            Action::Vm(a) => match a {
                VmAction::Start => "vm.start",
                VmAction::Shutdown => "vm.shutdown",
                VmAction::Reboot => "vm.reboot",
                VmAction::ForceOff => "vm.force-off",
                VmAction::Pause => "vm.pause",
                VmAction::Resume => "vm.resume",
            },
            Action::VmAutostart => "vm.autostart",
            Action::VmResize => "vm.resize",
            Action::VmClone => "vm.clone",
            Action::VmDelete => "vm.delete",
            Action::SnapshotCreate => "vm.snapshot.create",
            Action::SnapshotRevert => "vm.snapshot.revert",
            Action::SnapshotDelete => "vm.snapshot.delete",
            Action::TemplateMark => "vm.template.mark",
            Action::TemplateUnmark => "vm.template.unmark",
            Action::TemplateCreate => "vm.template.create",
            Action::PoolDefine => "pool.define",
            Action::Pool(a) => match a {
                PoolAction::Start => "pool.start",
                PoolAction::Stop => "pool.stop",
                PoolAction::Refresh => "pool.refresh",
                PoolAction::Autostart(true) => "pool.autostart",
                PoolAction::Autostart(false) => "pool.no-autostart",
            },
            Action::PoolDelete => "pool.delete",
            Action::NetworkCreate => "network.create",
            Action::NetworkStart => "network.start",
            Action::NetworkStop => "network.stop",
            Action::NetworkAutostart => "network.autostart",
            Action::NetworkRemove => "network.remove",
            Action::VolumeCreate => "volume.create",
            Action::VolumeResize => "volume.resize",
            Action::VolumeDelete => "volume.delete",
            Action::VolumeFetch => "volume.fetch",
            Action::VolumeUpload => "volume.upload",
            Action::JobCancel => "job.cancel",
            Action::KickstartCreate => "kickstart.create",
            Action::KickstartUpdate => "kickstart.update",
            Action::KickstartDelete => "kickstart.delete",
            Action::UserCreate => "user.create",
            Action::UserDelete => "user.delete",
            Action::UserUnlock => "user.unlock",
            Action::UserPassword => "user.password",
            Action::TokenCreate => "token.create",
            Action::TokenDelete => "token.delete",
            Action::FlavorSet => "flavor.set",
            Action::FlavorDelete => "flavor.delete",
            Action::HostNetworkPlan => "host.network.plan",
            Action::HostSysctlPlan => "host.sysctl.plan",
            Action::HostChangeApply => "host.change.apply",
            Action::HostChangeConfirm => "host.change.confirm",
            Action::HostChangeRollback => "host.change.rollback",
            Action::PeerInvite => "peer.invite",
            Action::PeerPair => "peer.pair",
            Action::PeerUnpair => "peer.unpair",
            Action::VmMigrate => "vm.migrate",
            Action::HostDrain => "host.drain",
            Action::HostDrainEnd => "host.drain.end",
            Action::TwoFactorEnrol => "user.2fa.enrol",
            Action::TwoFactorRecoveryCodes => "user.2fa.recovery_codes",
            Action::TwoFactorRemove => "user.2fa.remove",
            Action::TwoFactorReset => "user.2fa.reset",
            Action::TwoFactorRequired => "users.2fa.required",
            Action::TwoFactorKeyAdd => "user.2fa.key.add",
            Action::TwoFactorKeyRemove => "user.2fa.key.remove",
            Action::SetupLink => "setup.link",
            Action::VmLabels => "vm.labels",
            Action::VmDevices => "vm.devices",
            Action::VmCdrom => "vm.cdrom",
            Action::VmDiskGrow => "vm.disk.grow",
            Action::VmDiskAdd => "vm.disk.add",
            Action::VmDiskDetach => "vm.disk.detach",
            Action::VmNicAdd => "vm.nic.add",
            Action::VmNicRemove => "vm.nic.remove",
            Action::VmNicLink => "vm.nic.link",
            Action::VmHostdevAttach => "vm.hostdev.attach",
            Action::VmHostdevDetach => "vm.hostdev.detach",
            Action::VmStartOrder => "vm.start_order",
            Action::BackupTarget => "backup.target",
            Action::VmBackup => "vm.backup",
            Action::BackupRestore => "backup.restore",
            Action::BackupVerify => "backup.verify",
            Action::BackupDelete => "backup.delete",
            Action::BackupSchedule => "backup.schedule",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Results that refuse a request.
/// A wrong password ("failed") is not among them: each is kept with the name tried, and
/// the sign-in throttle already bounds them (`[login] address_lock_after_failures`).
const REFUSALS: &[&str] = &[
    "denied",
    "locked",
    "refused",
    "invalid",
    "not-found",
    "throttled",
    "rejected",
];

/// Actions a request with no session and no API token can cause: signing in, creating
/// the first admin, an installer fetching its kickstart.
const UNAUTHENTICATED_ACTIONS: &[&str] = &["login", "setup.first_admin", "kickstart.fetch"];

/// Actors that stand for nobody signed in.
const UNAUTHENTICATED_ACTORS: &[&str] = &["", "-", "installer", "anonymous"];

/// Whether an entry is a refusal of a request nobody signed in made. Anyone who can reach
/// the port can cause these as often as they like, so they are folded: one row per
/// address, action and result and clock minute, with a count.
pub fn is_unauthenticated_refusal(actor: &str, action: &str, result: &str) -> bool {
    REFUSALS.contains(&result)
        && (UNAUTHENTICATED_ACTORS.contains(&actor) || UNAUTHENTICATED_ACTIONS.contains(&action))
}

/// Writes one entry (blocking); an unauthenticated refusal is counted in the row of the
/// same address, action and result of the same minute instead of adding one. A failure
/// to write is logged loudly; it does not undo what the entry describes (which has
/// already happened). The log gets each entry, and for folded rows the 1st, 2nd, 4th,
/// 8th… so a flood cannot flood the log either.
pub fn append(store: &Store, entry: AuditEntry) {
    if is_unauthenticated_refusal(&entry.actor, &entry.action, &entry.result) {
        match store.append_audit_folded(&entry) {
            Ok(count) if count.is_power_of_two() => tracing::info!(
                actor = %entry.actor, remote_addr = %entry.remote_addr, action = %entry.action,
                target = %entry.target, result = %entry.result, detail = %entry.detail,
                count, "audit"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "could not write the audit log"),
        }
        return;
    }
    tracing::info!(
        actor = %entry.actor, remote_addr = %entry.remote_addr, action = %entry.action,
        target = %entry.target, result = %entry.result, detail = %entry.detail, "audit"
    );
    if let Err(e) = store.append_audit(&entry) {
        tracing::error!(error = %e, "could not write the audit log");
    }
}

/// Writes the entry of a change made from the host's shell (`virtdeck user …`), which
/// stops with the error when the row cannot be written: a shell change is never silent.
pub fn write_shell_change(
    store: &Store,
    caller: &Caller,
    action: Action,
    target: &str,
    detail: &str,
) -> crate::store::StoreResult<()> {
    let entry = AuditEntry {
        at: super::now(),
        actor: caller.username.clone(),
        remote_addr: caller.remote_addr.clone(),
        action: action.as_str().to_string(),
        target: target.to_string(),
        result: "ok".to_string(),
        detail: detail.to_string(),
    };
    store.append_audit(&entry)
}

/// Writes the entry for `caller` doing `action` on `target` now (blocking).
pub fn write(
    store: &Store,
    caller: &Caller,
    action: &str,
    target: &str,
    result: &str,
    detail: &str,
) {
    append(
        store,
        AuditEntry {
            at: super::now(),
            actor: caller.username.clone(),
            remote_addr: caller.remote_addr.clone(),
            action: action.to_string(),
            target: target.to_string(),
            result: result.to_string(),
            detail: detail.to_string(),
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_of_unauthenticated_requests_fold() {
        assert!(is_unauthenticated_refusal(
            "installer",
            "kickstart.fetch",
            "refused"
        ));
        assert!(is_unauthenticated_refusal("mallory", "login", "locked"));
        assert!(is_unauthenticated_refusal(
            "-",
            "setup.first_admin",
            "denied"
        ));
        assert!(is_unauthenticated_refusal("-", "anything.else", "denied"));
        // Served fetches, good sign-ins and a signed-in user's refusals stay one row each.
        assert!(!is_unauthenticated_refusal(
            "installer",
            "kickstart.fetch",
            "served"
        ));
        assert!(!is_unauthenticated_refusal("jo", "login", "ok"));
        assert!(!is_unauthenticated_refusal("jo", "login", "failed"));
        assert!(!is_unauthenticated_refusal("vera", "vm.start", "denied"));
        assert!(!is_unauthenticated_refusal("olga", "vm.create", "failed"));
    }

    #[test]
    fn action_names_are_the_audit_logs_words() {
        assert_eq!(Action::Vm(VmAction::ForceOff).as_str(), "vm.force-off");
        assert_eq!(
            Action::Pool(PoolAction::Autostart(false)).as_str(),
            "pool.no-autostart"
        );
        assert_eq!(Action::SnapshotRevert.to_string(), "vm.snapshot.revert");
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(a), "{a}");
        }
        assert_eq!(Action::parse("vm.nothing"), None);
    }
}
