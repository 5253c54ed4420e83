//! The usage sampler: every few seconds one bulk libvirt call for the host and all VMs,
//! turned into rates and kept in a bounded history per VM (full rate for the recent
//! past, averaged buckets for the day). Request handlers only read a copy under a short
//! lock; the libvirt call runs on a blocking thread, never on the async runtime.

use crate::domain::usage::history::{History, Point, Tiers};
use crate::domain::usage::rates::{self, HostRates, VmRates};
use crate::domain::usage::{HostCounters, UsageSample, VmCounters};
use crate::hypervisor::Hypervisor;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// The `[usage]` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UsageConfig {
    /// Seconds between samples.
    pub interval_seconds: u64,
    /// Minutes of history kept at every sample.
    pub full_rate_minutes: u64,
    /// Hours of history kept as averages.
    pub downsampled_hours: u64,
    /// Seconds averaged into one point of the longer history.
    pub downsample_seconds: u64,
}

impl Default for UsageConfig {
    fn default() -> Self {
        UsageConfig {
            interval_seconds: 5,
            full_rate_minutes: 60,
            downsampled_hours: 24,
            downsample_seconds: 600,
        }
    }
}

impl UsageConfig {
    /// The first setting out of range, and why.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if !(1..=300).contains(&self.interval_seconds) {
            return Some((
                "usage.interval_seconds",
                "must be between 1 and 300 seconds".into(),
            ));
        }
        if !(1..=1440).contains(&self.full_rate_minutes)
            || self.full_rate_minutes * 60 < self.interval_seconds
        {
            return Some((
                "usage.full_rate_minutes",
                "must be between 1 and 1440 minutes and hold at least one sample".into(),
            ));
        }
        if !(self.interval_seconds..=86_400).contains(&self.downsample_seconds) {
            return Some((
                "usage.downsample_seconds",
                "must be at least usage.interval_seconds and at most 86400".into(),
            ));
        }
        if !(1..=168).contains(&self.downsampled_hours)
            || self.downsampled_hours * 3600 < self.downsample_seconds
        {
            return Some((
                "usage.downsampled_hours",
                "must be between 1 and 168 hours and hold at least one averaged point".into(),
            ));
        }
        None
    }

    pub fn tiers(&self) -> Tiers {
        Tiers {
            full_points: (self.full_rate_minutes * 60 / self.interval_seconds.max(1)) as usize,
            bucket_points: (self.downsampled_hours * 3600 / self.downsample_seconds.max(1))
                as usize,
            bucket_seconds: self.downsample_seconds as u32,
        }
    }
}

/// Which history a chart shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Every sample of the full-rate history.
    Recent,
    /// The averaged points of the longer history.
    Long,
}

struct VmEntry {
    counters: VmCounters,
    latest: Option<VmRates>,
    /// Made at the first rates, so VMs that never run here cost no history.
    history: Option<History>,
}

struct HostEntry {
    counters: HostCounters,
    latest: HostRates,
    history: History,
}

#[derive(Default)]
struct Inner {
    at_ms: Option<u64>,
    host: Option<HostEntry>,
    vms: HashMap<String, VmEntry>,
}

/// What `/metrics` reads: the last counters and rates.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub host: Option<(HostCounters, HostRates)>,
    pub vms: Vec<(VmCounters, Option<VmRates>)>,
}

pub struct Usage {
    cfg: UsageConfig,
    inner: Mutex<Inner>,
    samples: AtomicU64,
    failures: AtomicU64,
    last_duration_us: AtomicU64,
}

impl Usage {
    pub fn new(cfg: UsageConfig) -> Usage {
        Usage {
            cfg,
            inner: Mutex::new(Inner::default()),
            samples: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_duration_us: AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> &UsageConfig {
        &self.cfg
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one sample made at `at_ms` (unix milliseconds): rates against the previous
    /// one, a history point for the host and each running VM; VMs libvirt no longer
    /// lists are forgotten.
    pub fn record(&self, sample: UsageSample, at_ms: u64) {
        let tiers = self.cfg.tiers();
        let mut inner = self.lock();
        let elapsed_s = match inner.at_ms {
            Some(prev) if at_ms > prev => Some((at_ms - prev) as f64 / 1000.0),
            Some(_) => return, // the clock went back: skip rather than invent rates
            None => None,
        };
        let t = (at_ms / 1000).min(u64::from(u32::MAX)) as u32;
        let host_cpus = sample.host.cpus;
        let mut all_rates = Vec::new();
        let mut seen = HashMap::with_capacity(sample.vms.len());
        for c in sample.vms {
            let prev = inner.vms.remove(&c.name);
            let r = elapsed_s.and_then(|e| {
                rates::vm_rates(prev.as_ref().map(|p| &p.counters), &c, e, host_cpus)
            });
            let mut history = prev.and_then(|p| p.history);
            if let Some(r) = &r {
                all_rates.push(*r);
                history
                    .get_or_insert_with(|| History::new(tiers))
                    .push(Point { t, v: r.point() });
            }
            seen.insert(
                c.name.clone(),
                VmEntry {
                    counters: c,
                    latest: r,
                    history,
                },
            );
        }
        inner.vms = seen;
        let prev_host = inner.host.take();
        let host_rates = rates::host_rates(
            prev_host.as_ref().map(|h| &h.counters),
            &sample.host,
            &all_rates,
        );
        let mut history = prev_host
            .map(|h| h.history)
            .unwrap_or_else(|| History::new(tiers));
        if elapsed_s.is_some() {
            history.push(Point {
                t,
                v: host_rates.point(),
            });
        }
        inner.host = Some(HostEntry {
            counters: sample.host,
            latest: host_rates,
            history,
        });
        inner.at_ms = Some(at_ms);
        self.samples.fetch_add(1, Ordering::Relaxed);
    }

    fn since(&self, window: Window, now: u32) -> u32 {
        let span = match window {
            Window::Recent => self.cfg.full_rate_minutes * 60,
            Window::Long => self.cfg.downsampled_hours * 3600,
        };
        now.saturating_sub(span.min(u64::from(u32::MAX)) as u32)
    }

    fn points(h: &History, window: Window, since: u32) -> Vec<Point> {
        match window {
            Window::Recent => h.recent(since),
            Window::Long => h.averaged(since),
        }
    }

    /// A VM's history points in the window ending `now` (unix seconds); empty when the
    /// VM has not run since virtdeck started.
    pub fn vm_points(&self, name: &str, window: Window, now: u32) -> Vec<Point> {
        let since = self.since(window, now);
        self.lock()
            .vms
            .get(name)
            .and_then(|e| e.history.as_ref())
            .map(|h| Self::points(h, window, since))
            .unwrap_or_default()
    }

    /// Recent CPU points of many VMs at once (the VM list's sparklines), one lock.
    pub fn cpu_points(&self, names: &[&str], now: u32) -> HashMap<String, Vec<(u32, f32)>> {
        let since = self.since(Window::Recent, now);
        let inner = self.lock();
        names
            .iter()
            .map(|n| {
                let pts = inner
                    .vms
                    .get(*n)
                    .and_then(|e| e.history.as_ref())
                    .map(|h| {
                        h.recent(since)
                            .iter()
                            .map(|p| (p.t, p.v[rates::CPU]))
                            .collect()
                    })
                    .unwrap_or_default();
                (n.to_string(), pts)
            })
            .collect()
    }

    pub fn host_points(&self, window: Window, now: u32) -> Vec<Point> {
        let since = self.since(window, now);
        self.lock()
            .host
            .as_ref()
            .map(|h| Self::points(&h.history, window, since))
            .unwrap_or_default()
    }

    /// The last counters and rates, for `/metrics`.
    pub fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        let mut vms: Vec<_> = inner
            .vms
            .values()
            .map(|e| (e.counters.clone(), e.latest))
            .collect();
        vms.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        Snapshot {
            host: inner.host.as_ref().map(|h| (h.counters.clone(), h.latest)),
            vms,
        }
    }

    /// VMs with a history, and the bytes their histories hold at most.
    pub fn footprint(&self) -> (usize, usize) {
        let inner = self.lock();
        let histories = inner.vms.values().filter_map(|e| e.history.as_ref());
        let (n, bytes) = histories.fold((0, 0), |(n, b), h| (n + 1, b + h.capacity_bytes()));
        let host = inner
            .host
            .as_ref()
            .map_or(0, |h| h.history.capacity_bytes());
        (n, bytes + host)
    }

    pub fn samples_total(&self) -> u64 {
        self.samples.load(Ordering::Relaxed)
    }

    pub fn failures_total(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// How long the last bulk call took.
    pub fn last_duration(&self) -> Duration {
        Duration::from_micros(self.last_duration_us.load(Ordering::Relaxed))
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Samples every `interval_seconds` until `usage` is dropped (the server stopped).
pub fn spawn_sampler(usage: &Arc<Usage>, hv: Arc<dyn Hypervisor>) {
    let weak: Weak<Usage> = Arc::downgrade(usage);
    let every = Duration::from_secs(usage.cfg.interval_seconds.max(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut warned = false;
        loop {
            tick.tick().await;
            if weak.strong_count() == 0 {
                return;
            }
            let h = hv.clone();
            let started = Instant::now();
            let r = tokio::task::spawn_blocking(move || h.usage_sample()).await;
            let Some(usage) = weak.upgrade() else { return };
            usage
                .last_duration_us
                .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            match r {
                Ok(Ok(sample)) => {
                    usage.record(sample, unix_ms());
                    warned = false;
                }
                Ok(Err(e)) => {
                    usage.failures.fetch_add(1, Ordering::Relaxed);
                    if !warned {
                        tracing::warn!(error = %e, "cannot read usage statistics; charts pause until it works again");
                        warned = true;
                    }
                }
                Err(e) => {
                    usage.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "the usage sampler's thread failed");
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::usage::IoCounters;
    use crate::domain::vm::VmState;

    fn vm(name: &str, run_id: u32, cpu_s: f64, rx: u64) -> VmCounters {
        VmCounters {
            name: name.into(),
            state: VmState::Running,
            run_id: Some(run_id),
            vcpus: 1,
            cpu_time_ns: Some((cpu_s * 1e9) as u64),
            memory_max_kib: Some(262_144),
            memory_used_kib: Some(131_072),
            io: IoCounters {
                net_rx_bytes: rx,
                ..Default::default()
            },
        }
    }

    fn off(name: &str) -> VmCounters {
        VmCounters {
            name: name.into(),
            state: VmState::ShutOff,
            run_id: None,
            vcpus: 0,
            cpu_time_ns: None,
            memory_max_kib: None,
            memory_used_kib: None,
            io: IoCounters::default(),
        }
    }

    fn host(busy: u64, total: u64) -> HostCounters {
        HostCounters {
            cpus: 2,
            cpu_busy_ns: Some(busy),
            cpu_total_ns: Some(total),
            memory_total_kib: 4 << 20,
            memory_used_kib: Some(1 << 20),
        }
    }

    fn sample(h: HostCounters, vms: Vec<VmCounters>) -> UsageSample {
        UsageSample { host: h, vms }
    }

    #[test]
    fn rates_history_and_forgetting_vanished_vms() {
        let u = Usage::new(UsageConfig::default());
        u.record(
            sample(
                host(0, 0),
                vec![vm("a", 1, 0.0, 0), off("b"), vm("c", 2, 0.0, 0)],
            ),
            1_000_000,
        );
        assert!(
            u.vm_points("a", Window::Recent, 1_000).is_empty(),
            "no rates yet"
        );
        u.record(
            sample(
                host(500, 2000),
                vec![vm("a", 1, 2.5, 5_000), off("b"), vm("c", 2, 0.5, 0)],
            ),
            1_005_000,
        );
        let a = u.vm_points("a", Window::Recent, 1_005);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].t, 1_005);
        assert_eq!(a[0].v[rates::CPU], 50.0, "2.5 s of CPU in 5 s on one vCPU");
        assert_eq!(a[0].v[rates::NET_RX], 1_000.0);
        assert_eq!(a[0].v[rates::MEMORY], 128.0);
        let h = u.host_points(Window::Recent, 1_005);
        assert_eq!(h[0].v[rates::CPU], 25.0);
        assert_eq!(h[0].v[rates::NET_RX], 1_000.0, "the sum over VMs");
        assert!(u.vm_points("b", Window::Recent, 1_005).is_empty());
        let snap = u.snapshot();
        assert_eq!(snap.vms.len(), 3);
        assert!(snap.vms[1].1.is_none(), "a shut-off VM has no rates");
        // c is undefined: gone from the next sample, gone from the history.
        u.record(
            sample(host(600, 3000), vec![vm("a", 1, 3.0, 5_000), off("b")]),
            1_010_000,
        );
        assert!(u.vm_points("c", Window::Recent, 1_010).is_empty());
        assert_eq!(u.snapshot().vms.len(), 2);
        assert_eq!(u.footprint().0, 1, "only a keeps a history");
        let spark = u.cpu_points(&["a", "zz"], 1_010);
        assert_eq!(spark["a"].len(), 2);
        assert!(spark["zz"].is_empty());
        assert_eq!(u.samples_total(), 3);
    }

    #[test]
    fn the_long_window_averages() {
        let u = Usage::new(UsageConfig {
            downsample_seconds: 60,
            ..Default::default()
        });
        for i in 0..=12u64 {
            u.record(
                sample(host(0, 0), vec![vm("a", 1, i as f64, 0)]),
                (1_200 + i * 10) * 1000,
            );
        }
        // 1 s of CPU every 10 s: 10 % throughout; averaged into minute buckets.
        let long = u.vm_points("a", Window::Long, 1_400);
        assert_eq!(
            long.iter().map(|p| p.t).collect::<Vec<_>>(),
            [1_200, 1_260, 1_320]
        );
        assert!(long.iter().all(|p| (p.v[rates::CPU] - 10.0).abs() < 1e-3));
    }

    #[test]
    fn a_clock_going_back_is_skipped() {
        let u = Usage::new(UsageConfig::default());
        u.record(sample(host(0, 0), vec![vm("a", 1, 0.0, 0)]), 10_000);
        u.record(sample(host(0, 0), vec![vm("a", 1, 1.0, 0)]), 5_000);
        assert_eq!(u.samples_total(), 1);
    }

    #[test]
    fn settings() {
        let c = UsageConfig::default();
        assert_eq!(c.problem(), None);
        assert_eq!(c.tiers().full_points, 720);
        assert_eq!(c.tiers().bucket_points, 144);
        let bad = UsageConfig {
            interval_seconds: 0,
            ..Default::default()
        };
        assert_eq!(bad.problem().unwrap().0, "usage.interval_seconds");
        let bad = UsageConfig {
            downsample_seconds: 2,
            ..Default::default()
        };
        assert_eq!(bad.problem().unwrap().0, "usage.downsample_seconds");
        let bad = UsageConfig {
            downsampled_hours: 0,
            ..Default::default()
        };
        assert_eq!(bad.problem().unwrap().0, "usage.downsampled_hours");
    }

    #[test]
    fn a_thousand_running_vms_stay_small() {
        let u = Usage::new(UsageConfig::default());
        let names: Vec<String> = (0..1000).map(|i| format!("vm{i:04}")).collect();
        for step in 0..3u64 {
            let vms = names
                .iter()
                .map(|n| vm(n, 1, step as f64, step * 100))
                .collect();
            u.record(sample(host(0, 0), vms), (1_000 + step * 5) * 1000);
        }
        let (n, bytes) = u.footprint();
        assert_eq!(n, 1000);
        assert!(bytes < 26 * 1024 * 1024, "{bytes} bytes of history");
    }
}
