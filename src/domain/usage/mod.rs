//! Usage of the host and its VMs: the cumulative counters libvirt reports, rates between
//! two samples, a bounded history, SVG charts, and the Prometheus text format.
//!
//! Everything here is plain values: the libvirt adapter turns its bulk stats call into
//! [`UsageSample`] and the sampler feeds it to [`history`].

pub mod chart;
pub mod history;
pub mod prometheus;
pub mod rates;

use super::vm::VmState;

/// One libvirt statistic: its name (e.g. `block.0.rd.bytes`) and its value when it is a
/// whole number (libvirt's int, uint, long long and unsigned long long parameters).
pub type Stat = (String, u64);

/// One VM's counters at one moment, as libvirt's bulk stats call reports them.
#[derive(Debug, Clone, PartialEq)]
pub struct VmCounters {
    pub name: String,
    pub state: VmState,
    /// libvirt's id for the running VM; it changes on every start, so a different id
    /// means the counters started again from zero.
    pub run_id: Option<u32>,
    pub vcpus: u32,
    /// CPU time used since the VM started (all vCPUs and QEMU's own threads).
    pub cpu_time_ns: Option<u64>,
    /// The memory the VM may use.
    pub memory_max_kib: Option<u64>,
    /// Memory in use: the guest's own view when its balloon driver reports it, else
    /// what the VM's QEMU process holds on the host (resident set).
    pub memory_used_kib: Option<u64>,
    pub io: IoCounters,
}

/// Disk and network counters of one VM, summed over its disks and interfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IoCounters {
    pub disk_read_bytes: u64,
    pub disk_write_bytes: u64,
    pub disk_reads: u64,
    pub disk_writes: u64,
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
}

/// The host's counters at one moment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HostCounters {
    pub cpus: u32,
    /// CPU time spent working (not idle, not waiting for I/O), all CPUs together.
    pub cpu_busy_ns: Option<u64>,
    /// All CPU time, all CPUs together.
    pub cpu_total_ns: Option<u64>,
    pub memory_total_kib: u64,
    /// Memory in use, not counting buffers and page cache.
    pub memory_used_kib: Option<u64>,
}

/// What one bulk stats call returns: the host and every VM libvirt knows of.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UsageSample {
    pub host: HostCounters,
    pub vms: Vec<VmCounters>,
}

/// A VM state from libvirt's `state.state` number (`virDomainState`).
pub fn state_from_code(code: u64) -> VmState {
    match code {
        1 | 2 => VmState::Running,
        3 => VmState::Paused,
        4 => VmState::ShuttingDown,
        5 => VmState::ShutOff,
        6 => VmState::Crashed,
        7 => VmState::Suspended,
        _ => VmState::Unknown,
    }
}

fn stat(stats: &[Stat], name: &str) -> Option<u64> {
    stats.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
}

/// Sums `PREFIX.N.FIELD` over `N` in `0..PREFIX.count`.
fn sum_indexed(stats: &[Stat], prefix: &str, field: &str) -> u64 {
    let count = stat(stats, &format!("{prefix}.count")).unwrap_or(0);
    (0..count)
        .filter_map(|i| stat(stats, &format!("{prefix}.{i}.{field}")))
        .fold(0u64, u64::saturating_add)
}

/// One VM's counters from the statistics of libvirt's bulk call (groups state, cpu-total,
/// balloon, vcpu, interface, block). Missing statistics stay `None` or zero.
pub fn vm_counters(name: &str, run_id: Option<u32>, stats: &[Stat]) -> VmCounters {
    let state = stat(stats, "state.state")
        .map(state_from_code)
        .unwrap_or(VmState::Unknown);
    let guest_used = match (
        stat(stats, "balloon.available"),
        stat(stats, "balloon.unused"),
    ) {
        (Some(avail), Some(unused)) if avail >= unused && avail > 0 => Some(avail - unused),
        _ => None,
    };
    VmCounters {
        name: name.to_string(),
        state,
        run_id,
        vcpus: stat(stats, "vcpu.current")
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0),
        cpu_time_ns: stat(stats, "cpu.time"),
        memory_max_kib: stat(stats, "balloon.maximum"),
        memory_used_kib: guest_used.or_else(|| stat(stats, "balloon.rss")),
        io: IoCounters {
            disk_read_bytes: sum_indexed(stats, "block", "rd.bytes"),
            disk_write_bytes: sum_indexed(stats, "block", "wr.bytes"),
            disk_reads: sum_indexed(stats, "block", "rd.reqs"),
            disk_writes: sum_indexed(stats, "block", "wr.reqs"),
            net_rx_bytes: sum_indexed(stats, "net", "rx.bytes"),
            net_tx_bytes: sum_indexed(stats, "net", "tx.bytes"),
        },
    }
}

/// Busy and total CPU time from libvirt's node CPU statistics (`kernel`, `user`, `idle`,
/// `iowait`, …, in ns); `None` when libvirt reports no idle time to tell them apart.
pub fn host_cpu_times(stats: &[Stat]) -> Option<(u64, u64)> {
    let idle = stat(stats, "idle")?;
    let iowait = stat(stats, "iowait").unwrap_or(0);
    let busy = ["kernel", "user", "intr"]
        .iter()
        .filter_map(|f| stat(stats, f))
        .fold(0u64, u64::saturating_add);
    Some((busy, busy.saturating_add(idle).saturating_add(iowait)))
}

/// Memory in use from libvirt's node memory statistics (KiB): total less free, buffers
/// and page cache, as `free` counts it.
pub fn host_memory_used_kib(stats: &[Stat]) -> Option<u64> {
    let total = stat(stats, "total")?;
    let free = stat(stats, "free")?;
    let reclaimable = stat(stats, "buffers")
        .unwrap_or(0)
        .saturating_add(stat(stats, "cached").unwrap_or(0));
    Some(total.saturating_sub(free).saturating_sub(reclaimable))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(pairs: &[(&str, u64)]) -> Vec<Stat> {
        pairs.iter().map(|(n, v)| (n.to_string(), *v)).collect()
    }

    #[test]
    fn a_running_vm_with_two_disks_and_a_nic() {
        let s = stats(&[
            ("state.state", 1),
            ("cpu.time", 3_114_439_000),
            ("balloon.maximum", 262_144),
            ("balloon.rss", 223_296),
            ("vcpu.current", 2),
            ("block.count", 2),
            ("block.0.rd.bytes", 1000),
            ("block.0.wr.bytes", 10),
            ("block.0.rd.reqs", 4),
            ("block.0.wr.reqs", 1),
            ("block.1.rd.bytes", 24),
            ("block.1.rd.reqs", 2),
            // Not counted: beyond block.count.
            ("block.2.rd.bytes", 99_999),
            ("net.count", 1),
            ("net.0.rx.bytes", 700),
            ("net.0.tx.bytes", 300),
        ]);
        let c = vm_counters("web01", Some(7), &s);
        assert_eq!(c.state, VmState::Running);
        assert_eq!(c.run_id, Some(7));
        assert_eq!(c.vcpus, 2);
        assert_eq!(c.cpu_time_ns, Some(3_114_439_000));
        assert_eq!(c.memory_max_kib, Some(262_144));
        assert_eq!(c.memory_used_kib, Some(223_296), "QEMU's resident set");
        assert_eq!(
            c.io,
            IoCounters {
                disk_read_bytes: 1024,
                disk_write_bytes: 10,
                disk_reads: 6,
                disk_writes: 1,
                net_rx_bytes: 700,
                net_tx_bytes: 300,
            }
        );
    }

    #[test]
    fn the_guests_own_memory_figures_win_over_the_resident_set() {
        let s = stats(&[
            ("balloon.available", 1_000_000),
            ("balloon.unused", 600_000),
            ("balloon.rss", 900_000),
        ]);
        assert_eq!(vm_counters("a", None, &s).memory_used_kib, Some(400_000));
    }

    #[test]
    fn a_shut_off_vm_reports_only_its_state() {
        let c = vm_counters("db", None, &stats(&[("state.state", 5)]));
        assert_eq!(c.state, VmState::ShutOff);
        assert_eq!(c.cpu_time_ns, None);
        assert_eq!(c.memory_used_kib, None);
        assert_eq!(c.io, IoCounters::default());
    }

    #[test]
    fn state_codes() {
        assert_eq!(state_from_code(2), VmState::Running, "blocked is running");
        assert_eq!(state_from_code(3), VmState::Paused);
        assert_eq!(state_from_code(7), VmState::Suspended);
        assert_eq!(state_from_code(0), VmState::Unknown);
        assert_eq!(state_from_code(42), VmState::Unknown);
    }

    #[test]
    fn host_cpu_and_memory() {
        let cpu = stats(&[
            ("kernel", 100),
            ("user", 300),
            ("idle", 550),
            ("iowait", 50),
        ]);
        assert_eq!(host_cpu_times(&cpu), Some((400, 1000)));
        assert_eq!(host_cpu_times(&stats(&[("user", 3)])), None);
        let mem = stats(&[
            ("total", 24_684_096),
            ("free", 4_140_600),
            ("buffers", 61_564),
            ("cached", 19_379_780),
        ]);
        assert_eq!(host_memory_used_kib(&mem), Some(1_102_152));
        assert_eq!(host_memory_used_kib(&stats(&[("total", 5)])), None);
    }
}
