//! Rates from two samples of cumulative counters: CPU time → percent, bytes → bytes per
//! second. A counter that went backwards, or a VM that started again in between, counts
//! from zero (the VM's counters restarted), never as a negative rate.

use super::{HostCounters, VmCounters};

/// The figures kept in the history and drawn in the charts, in this order.
pub const SERIES: usize = 6;
/// Index of each figure in a history point.
pub const CPU: usize = 0;
pub const MEMORY: usize = 1;
pub const DISK_READ: usize = 2;
pub const DISK_WRITE: usize = 3;
pub const NET_RX: usize = 4;
pub const NET_TX: usize = 5;

/// One VM's usage over one interval.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct VmRates {
    /// Percent of the VM's own vCPUs (100 = every vCPU busy all the time).
    pub cpu_percent: f64,
    /// Percent of all the host's CPUs.
    pub cpu_percent_of_host: f64,
    pub memory_used_mib: Option<f64>,
    pub disk_read_bytes_per_s: f64,
    pub disk_write_bytes_per_s: f64,
    pub disk_reads_per_s: f64,
    pub disk_writes_per_s: f64,
    pub net_rx_bytes_per_s: f64,
    pub net_tx_bytes_per_s: f64,
}

impl VmRates {
    /// The history point: NaN where there is no figure.
    pub fn point(&self) -> [f32; SERIES] {
        [
            self.cpu_percent as f32,
            self.memory_used_mib.map_or(f32::NAN, |m| m as f32),
            self.disk_read_bytes_per_s as f32,
            self.disk_write_bytes_per_s as f32,
            self.net_rx_bytes_per_s as f32,
            self.net_tx_bytes_per_s as f32,
        ]
    }
}

/// The host's usage over one interval; disk and network are the sums over its VMs.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct HostRates {
    pub cpu_percent: Option<f64>,
    pub memory_used_mib: Option<f64>,
    pub disk_read_bytes_per_s: f64,
    pub disk_write_bytes_per_s: f64,
    pub net_rx_bytes_per_s: f64,
    pub net_tx_bytes_per_s: f64,
}

impl HostRates {
    pub fn point(&self) -> [f32; SERIES] {
        [
            self.cpu_percent.map_or(f32::NAN, |c| c as f32),
            self.memory_used_mib.map_or(f32::NAN, |m| m as f32),
            self.disk_read_bytes_per_s as f32,
            self.disk_write_bytes_per_s as f32,
            self.net_rx_bytes_per_s as f32,
            self.net_tx_bytes_per_s as f32,
        ]
    }
}

/// How much a cumulative counter grew. After a restart (or when it went backwards) the
/// counter began again at zero within the interval, so all of its value is new.
pub fn delta(prev: u64, cur: u64, restarted: bool) -> u64 {
    if restarted || cur < prev {
        cur
    } else {
        cur - prev
    }
}

/// A VM's rates between two samples `elapsed_s` apart; `None` when the VM is not running
/// now (no CPU time) or no time passed. `prev` is `None` for a VM not seen before: its
/// rates cannot be known yet.
pub fn vm_rates(
    prev: Option<&VmCounters>,
    cur: &VmCounters,
    elapsed_s: f64,
    host_cpus: u32,
) -> Option<VmRates> {
    let cur_cpu = cur.cpu_time_ns?;
    let prev = prev?;
    if elapsed_s <= 0.0 || !elapsed_s.is_finite() {
        return None;
    }
    // Not running before (no CPU time), or running again under another id: a restart.
    let restarted = prev.cpu_time_ns.is_none() || prev.run_id != cur.run_id;
    let d = |p: u64, c: u64| delta(p, c, restarted) as f64;
    let cpu_ns = d(prev.cpu_time_ns.unwrap_or(0), cur_cpu);
    let elapsed_ns = elapsed_s * 1e9;
    let share = |cpus: u32| {
        if cpus == 0 {
            0.0
        } else {
            cpu_ns / (elapsed_ns * f64::from(cpus)) * 100.0
        }
    };
    let (p, c) = (&prev.io, &cur.io);
    Some(VmRates {
        cpu_percent: share(cur.vcpus),
        cpu_percent_of_host: share(host_cpus),
        memory_used_mib: cur.memory_used_kib.map(|k| k as f64 / 1024.0),
        disk_read_bytes_per_s: d(p.disk_read_bytes, c.disk_read_bytes) / elapsed_s,
        disk_write_bytes_per_s: d(p.disk_write_bytes, c.disk_write_bytes) / elapsed_s,
        disk_reads_per_s: d(p.disk_reads, c.disk_reads) / elapsed_s,
        disk_writes_per_s: d(p.disk_writes, c.disk_writes) / elapsed_s,
        net_rx_bytes_per_s: d(p.net_rx_bytes, c.net_rx_bytes) / elapsed_s,
        net_tx_bytes_per_s: d(p.net_tx_bytes, c.net_tx_bytes) / elapsed_s,
    })
}

/// The host's CPU percent between two samples (busy time over all time); `None` when
/// libvirt gives no CPU times or they did not move.
pub fn host_cpu_percent(prev: &HostCounters, cur: &HostCounters) -> Option<f64> {
    let (pb, pt) = (prev.cpu_busy_ns?, prev.cpu_total_ns?);
    let (cb, ct) = (cur.cpu_busy_ns?, cur.cpu_total_ns?);
    if ct <= pt || cb < pb {
        return None;
    }
    Some(((cb - pb) as f64 / (ct - pt) as f64 * 100.0).clamp(0.0, 100.0))
}

/// The host's rates: its own CPU and memory, and the sums of its VMs' disk and network.
pub fn host_rates(prev: Option<&HostCounters>, cur: &HostCounters, vms: &[VmRates]) -> HostRates {
    let sum = |f: fn(&VmRates) -> f64| vms.iter().map(f).sum::<f64>();
    HostRates {
        cpu_percent: prev.and_then(|p| host_cpu_percent(p, cur)),
        memory_used_mib: cur.memory_used_kib.map(|k| k as f64 / 1024.0),
        disk_read_bytes_per_s: sum(|r| r.disk_read_bytes_per_s),
        disk_write_bytes_per_s: sum(|r| r.disk_write_bytes_per_s),
        net_rx_bytes_per_s: sum(|r| r.net_rx_bytes_per_s),
        net_tx_bytes_per_s: sum(|r| r.net_tx_bytes_per_s),
    }
}

#[cfg(test)]
mod tests {
    use super::super::IoCounters;
    use super::*;
    use crate::domain::vm::VmState;

    fn vm(run_id: u32, cpu_s: f64, disk_read: u64, net_tx: u64) -> VmCounters {
        VmCounters {
            name: "web01".into(),
            state: VmState::Running,
            run_id: Some(run_id),
            vcpus: 2,
            cpu_time_ns: Some((cpu_s * 1e9) as u64),
            memory_max_kib: Some(2048 * 1024),
            memory_used_kib: Some(512 * 1024),
            io: IoCounters {
                disk_read_bytes: disk_read,
                net_tx_bytes: net_tx,
                ..Default::default()
            },
        }
    }

    #[test]
    fn cpu_time_becomes_percent_of_the_vcpus_and_of_the_host() {
        // 1 s of CPU time in 5 s on 2 vCPUs: 10 % of the VM, 2.5 % of an 8-CPU host.
        let r = vm_rates(Some(&vm(3, 10.0, 0, 0)), &vm(3, 11.0, 0, 0), 5.0, 8).unwrap();
        assert!((r.cpu_percent - 10.0).abs() < 1e-9, "{r:?}");
        assert!((r.cpu_percent_of_host - 2.5).abs() < 1e-9, "{r:?}");
        assert_eq!(r.memory_used_mib, Some(512.0));
    }

    #[test]
    fn bytes_become_bytes_per_second() {
        let r = vm_rates(
            Some(&vm(3, 1.0, 1_000, 50)),
            &vm(3, 1.0, 11_000, 250),
            2.0,
            4,
        )
        .unwrap();
        assert_eq!(r.disk_read_bytes_per_s, 5_000.0);
        assert_eq!(r.net_tx_bytes_per_s, 100.0);
        assert_eq!(r.cpu_percent, 0.0);
    }

    #[test]
    fn a_restart_counts_from_zero_not_negative() {
        // Same counters but a new run id: everything counted since the restart.
        let r = vm_rates(
            Some(&vm(3, 50.0, 9_000, 0)),
            &vm(4, 60.0, 1_000, 0),
            10.0,
            4,
        )
        .unwrap();
        assert!((r.cpu_percent - 300.0).abs() < 1e-9, "{r:?}");
        assert_eq!(r.disk_read_bytes_per_s, 100.0);
        // A counter that went backwards without a new id: the same.
        let r = vm_rates(
            Some(&vm(3, 50.0, 9_000, 0)),
            &vm(3, 50.5, 1_000, 0),
            10.0,
            4,
        )
        .unwrap();
        assert_eq!(r.disk_read_bytes_per_s, 100.0);
        assert!((r.cpu_percent - 2.5).abs() < 1e-9);
        assert_eq!(delta(10, 4, false), 4);
        assert_eq!(delta(4, 10, false), 6);
        assert_eq!(delta(4, 10, true), 10);
    }

    #[test]
    fn a_vm_that_was_off_counts_since_its_start() {
        let mut off = vm(0, 0.0, 0, 0);
        off.cpu_time_ns = None;
        off.run_id = None;
        let r = vm_rates(Some(&off), &vm(9, 2.0, 0, 0), 4.0, 4).unwrap();
        assert!((r.cpu_percent - 25.0).abs() < 1e-9);
    }

    #[test]
    fn no_rates_without_a_previous_sample_time_or_cpu_time() {
        assert_eq!(vm_rates(None, &vm(1, 1.0, 0, 0), 5.0, 4), None);
        assert_eq!(
            vm_rates(Some(&vm(1, 1.0, 0, 0)), &vm(1, 2.0, 0, 0), 0.0, 4),
            None
        );
        let mut off = vm(1, 0.0, 0, 0);
        off.cpu_time_ns = None;
        assert_eq!(vm_rates(Some(&vm(1, 1.0, 0, 0)), &off, 5.0, 4), None);
    }

    #[test]
    fn host_cpu_percent_and_sums() {
        let h = |busy, total| HostCounters {
            cpus: 2,
            cpu_busy_ns: Some(busy),
            cpu_total_ns: Some(total),
            memory_total_kib: 4096 * 1024,
            memory_used_kib: Some(1024 * 1024),
        };
        assert_eq!(host_cpu_percent(&h(100, 1000), &h(400, 2000)), Some(30.0));
        assert_eq!(
            host_cpu_percent(&h(100, 1000), &h(100, 1000)),
            None,
            "no time passed"
        );
        let vms = [
            VmRates {
                net_rx_bytes_per_s: 10.0,
                ..Default::default()
            },
            VmRates {
                net_rx_bytes_per_s: 5.0,
                disk_write_bytes_per_s: 7.0,
                ..Default::default()
            },
        ];
        let r = host_rates(Some(&h(0, 0)), &h(50, 100), &vms);
        assert_eq!(r.cpu_percent, Some(50.0));
        assert_eq!(r.memory_used_mib, Some(1024.0));
        assert_eq!(r.net_rx_bytes_per_s, 15.0);
        assert_eq!(r.disk_write_bytes_per_s, 7.0);
        assert!(r.point()[CPU] == 50.0 && r.point()[NET_RX] == 15.0);
        assert!(host_rates(None, &h(50, 100), &[]).point()[CPU].is_nan());
    }
}
