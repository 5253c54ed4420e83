//! Virtual machines as the rest of the product sees them.

use serde::Serialize;

/// A VM's run state, in the words an admin uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    Running,
    Paused,
    ShuttingDown,
    ShutOff,
    Crashed,
    Suspended,
    /// Also what a state from a newer peer reads as.
    #[serde(other)]
    Unknown,
}

impl VmState {
    pub fn label(self) -> &'static str {
        match self {
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::ShuttingDown => "shutting down",
            VmState::ShutOff => "shut off",
            VmState::Crashed => "crashed",
            VmState::Suspended => "suspended",
            VmState::Unknown => "unknown",
        }
    }

    /// A CSS-safe name for the state.
    pub fn css_class(self) -> &'static str {
        match self {
            VmState::ShuttingDown => "shutting-down",
            VmState::ShutOff => "shut-off",
            other => other.label(),
        }
    }

    /// Whether the VM holds its vCPUs and memory right now.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            VmState::Running | VmState::Paused | VmState::ShuttingDown | VmState::Suspended
        )
    }
}

/// What an operator can do to a VM's run state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VmAction {
    Start,
    /// ACPI power button: the guest decides.
    Shutdown,
    Reboot,
    /// Pull the plug.
    ForceOff,
    Pause,
    Resume,
}

impl VmAction {
    pub fn parse(s: &str) -> Option<VmAction> {
        Some(match s {
            "start" => VmAction::Start,
            "shutdown" => VmAction::Shutdown,
            "reboot" => VmAction::Reboot,
            "force-off" => VmAction::ForceOff,
            "pause" => VmAction::Pause,
            "resume" => VmAction::Resume,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            VmAction::Start => "start",
            VmAction::Shutdown => "shutdown",
            VmAction::Reboot => "reboot",
            VmAction::ForceOff => "force-off",
            VmAction::Pause => "pause",
            VmAction::Resume => "resume",
        }
    }

    /// Words for buttons.
    pub fn label(self) -> &'static str {
        match self {
            VmAction::Start => "Start",
            VmAction::Shutdown => "Shut down",
            VmAction::Reboot => "Reboot",
            VmAction::ForceOff => "Force off",
            VmAction::Pause => "Pause",
            VmAction::Resume => "Resume",
        }
    }

    /// The actions that make sense in a state.
    pub fn available_in(state: VmState) -> &'static [VmAction] {
        match state {
            VmState::Running => &[
                VmAction::Shutdown,
                VmAction::Reboot,
                VmAction::Pause,
                VmAction::ForceOff,
            ],
            VmState::Paused => &[VmAction::Resume, VmAction::ForceOff],
            VmState::ShuttingDown => &[VmAction::ForceOff],
            VmState::ShutOff | VmState::Crashed => &[VmAction::Start],
            VmState::Suspended => &[VmAction::ForceOff],
            VmState::Unknown => &[VmAction::Start, VmAction::ForceOff],
        }
    }
}

/// One VM in a listing.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VmSummary {
    pub name: String,
    pub uuid: String,
    pub state: VmState,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub autostart: bool,
    pub persistent: bool,
}

/// Counts for the overview.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct VmCounts {
    pub total: usize,
    pub active: usize,
    pub vcpus_active: u64,
    pub memory_mib_active: u64,
}

impl VmCounts {
    pub fn of(vms: &[VmSummary]) -> Self {
        vms.iter().fold(VmCounts::default(), |mut c, vm| {
            c.total += 1;
            if vm.state.is_active() {
                c.active += 1;
                c.vcpus_active += u64::from(vm.vcpus);
                c.memory_mib_active += vm.memory_mib;
            }
            c
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(name: &str, state: VmState, vcpus: u32, memory_mib: u64) -> VmSummary {
        VmSummary {
            name: name.into(),
            uuid: String::new(),
            state,
            vcpus,
            memory_mib,
            autostart: false,
            persistent: true,
        }
    }

    #[test]
    fn counts_only_active_vms_as_using_resources() {
        let vms = [
            vm("a", VmState::Running, 2, 2048),
            vm("b", VmState::ShutOff, 4, 8192),
            vm("c", VmState::Paused, 1, 1024),
        ];
        let c = VmCounts::of(&vms);
        assert_eq!(c.total, 3);
        assert_eq!(c.active, 2);
        assert_eq!(c.vcpus_active, 3);
        assert_eq!(c.memory_mib_active, 3072);
    }
}

#[cfg(test)]
mod action_tests {
    use super::*;

    #[test]
    fn actions_parse_and_fit_states() {
        for a in [
            "start",
            "shutdown",
            "reboot",
            "force-off",
            "pause",
            "resume",
        ] {
            assert_eq!(VmAction::parse(a).unwrap().as_str(), a);
        }
        assert!(VmAction::parse("explode").is_none());
        assert!(VmAction::available_in(VmState::ShutOff).contains(&VmAction::Start));
        assert!(!VmAction::available_in(VmState::Running).contains(&VmAction::Start));
    }
}

/// A change of a VM's life, as libvirt reports it (also for changes made with virsh).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmEvent {
    pub vm: String,
    /// defined, undefined, started, suspended, resumed, stopped, shutdown, pmsuspended,
    /// crashed.
    pub kind: String,
    /// Seconds since the Unix epoch, when virtdeck heard of it.
    pub at: i64,
}

impl VmEvent {
    /// The event kind for libvirt's `virDomainEventType` number.
    pub fn kind_name(event_type: i32) -> &'static str {
        match event_type {
            0 => "defined",
            1 => "undefined",
            2 => "started",
            3 => "suspended",
            4 => "resumed",
            5 => "stopped",
            6 => "shutdown",
            7 => "pmsuspended",
            8 => "crashed",
            _ => "changed",
        }
    }
}

/// A guest's IP address on one of its NICs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuestAddress {
    pub mac: Option<String>,
    pub address: String,
    pub prefix: u32,
}
