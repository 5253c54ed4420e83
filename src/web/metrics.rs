//! virtdeck's own counters (requests by route and status, login failures, job
//! durations), the middleware that counts requests, and `GET /metrics` in the Prometheus
//! text format (Bearer token of any role).

use super::{lc, AppState};
use crate::domain::usage::prometheus::{Exposition, Kind, CONTENT_TYPE};
use crate::lifecycle;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, HttpResponse};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Distinct request label sets kept at most (routes are patterns, so this is a guard).
const MAX_REQUEST_SERIES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct RequestKey {
    method: &'static str,
    route: String,
    status: u16,
}

/// Counters over the life of the process.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<HashMap<RequestKey, u64>>,
    login_wrong_password: AtomicU64,
    login_locked: AtomicU64,
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

impl Metrics {
    /// Counts one answered request. `route` is the route pattern (e.g. `/vms/{name}`),
    /// never the raw path, so VM names do not multiply the series.
    pub fn request(&self, method: &Method, route: &str, status: u16) {
        let key = RequestKey {
            method: method_label(method),
            route: route.to_string(),
            status,
        };
        let mut map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() < MAX_REQUEST_SERIES || map.contains_key(&key) {
            *map.entry(key).or_insert(0) += 1;
        }
        drop(map);
        // The sign-in form answers 401 for a wrong name or password, 429 when locked.
        if *method == Method::POST && route == "/login" {
            match status {
                401 => self.login_wrong_password.fetch_add(1, Ordering::Relaxed),
                429 => self.login_locked.fetch_add(1, Ordering::Relaxed),
                _ => 0,
            };
        }
    }

    fn write(&self, ops: &crate::service::OpMetrics, e: &mut Exposition) {
        e.family(
            "virtdeck_http_requests_total",
            "HTTP requests answered, by method, route pattern and status.",
            Kind::Counter,
        );
        let requests: BTreeMap<RequestKey, u64> = self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        for (k, v) in &requests {
            let status = k.status.to_string();
            e.sample(
                &[
                    ("method", k.method),
                    ("route", &k.route),
                    ("status", &status),
                ],
                *v as f64,
            );
        }
        e.family(
            "virtdeck_login_failures_total",
            "Failed sign-ins: wrong user name or password, or refused while locked.",
            Kind::Counter,
        )
        .sample(
            &[("reason", "wrong_password")],
            self.login_wrong_password.load(Ordering::Relaxed) as f64,
        )
        .sample(
            &[("reason", "locked")],
            self.login_locked.load(Ordering::Relaxed) as f64,
        );
        e.family(
            "virtdeck_job_duration_seconds",
            "How long VM changes took (create, clone, resize, snapshots, actions, delete).",
            Kind::Histogram,
        );
        for ((job, result), h) in ops.snapshot() {
            e.histogram(&[("job", job), ("result", result)], &h);
        }
    }
}

/// Middleware: counts every answered request by route pattern and status.
pub async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let route = req
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().clone();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let res = next.call(req).await;
    if let Some(state) = state {
        let status = match &res {
            Ok(r) => r.status().as_u16(),
            Err(e) => e.as_response_error().status_code().as_u16(),
        };
        state.metrics.request(&method, &route, status);
    }
    res
}

fn unauthorized(message: &str) -> HttpResponse {
    HttpResponse::Unauthorized()
        .insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"virtdeck\""))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .content_type("text/plain; charset=utf-8")
        .body(format!("{message}\n"))
}

fn write_usage(state: &AppState, e: &mut Exposition) {
    let snap = state.usage.snapshot();
    if let Some((h, r)) = &snap.host {
        e.family("virtdeck_host_cpus", "CPUs of the host.", Kind::Gauge)
            .sample(&[], f64::from(h.cpus));
        e.family(
            "virtdeck_host_memory_bytes",
            "Memory of the host.",
            Kind::Gauge,
        )
        .sample(&[], h.memory_total_kib as f64 * 1024.0);
        if let Some(used) = h.memory_used_kib {
            e.family(
                "virtdeck_host_memory_used_bytes",
                "Memory in use on the host, not counting buffers and page cache.",
                Kind::Gauge,
            )
            .sample(&[], used as f64 * 1024.0);
        }
        if let Some(busy) = h.cpu_busy_ns {
            e.family(
                "virtdeck_host_cpu_busy_seconds_total",
                "CPU time the host spent working (not idle or waiting for I/O), all CPUs.",
                Kind::Counter,
            )
            .sample(&[], busy as f64 / 1e9);
        }
        if let Some(pct) = r.cpu_percent {
            e.family(
                "virtdeck_host_cpu_usage_ratio",
                "Share of all host CPUs busy over the last sampling interval (0 to 1).",
                Kind::Gauge,
            )
            .sample(&[], pct / 100.0);
        }
    }
    e.family(
        "virtdeck_vm_state",
        "1 for each VM with its current state as a label.",
        Kind::Gauge,
    );
    for (c, _) in &snap.vms {
        // The API's words: running, paused, shut_off, …
        let state = c.state.label().replace(' ', "_");
        e.sample(&[("vm", &c.name), ("state", &state)], 1.0);
    }
    let running: Vec<_> = snap
        .vms
        .iter()
        .filter(|(c, _)| c.cpu_time_ns.is_some())
        .collect();
    type Get = fn(&crate::domain::usage::VmCounters) -> Option<f64>;
    let per_vm: [(&str, &str, Kind, Get); 10] = [
        (
            "virtdeck_vm_vcpus",
            "vCPUs of the running VM.",
            Kind::Gauge,
            |c| Some(f64::from(c.vcpus)),
        ),
        (
            "virtdeck_vm_memory_max_bytes",
            "Memory the running VM may use.",
            Kind::Gauge,
            |c| c.memory_max_kib.map(|k| k as f64 * 1024.0),
        ),
        (
            "virtdeck_vm_memory_used_bytes",
            "Memory the running VM uses (the guest's view when it reports one, else QEMU's resident memory).",
            Kind::Gauge,
            |c| c.memory_used_kib.map(|k| k as f64 * 1024.0),
        ),
        (
            "virtdeck_vm_cpu_seconds_total",
            "CPU time the VM used since it started.",
            Kind::Counter,
            |c| c.cpu_time_ns.map(|n| n as f64 / 1e9),
        ),
        (
            "virtdeck_vm_disk_read_bytes_total",
            "Bytes the VM read from its disks since it started.",
            Kind::Counter,
            |c| Some(c.io.disk_read_bytes as f64),
        ),
        (
            "virtdeck_vm_disk_written_bytes_total",
            "Bytes the VM wrote to its disks since it started.",
            Kind::Counter,
            |c| Some(c.io.disk_write_bytes as f64),
        ),
        (
            "virtdeck_vm_disk_reads_total",
            "Read requests the VM made to its disks since it started.",
            Kind::Counter,
            |c| Some(c.io.disk_reads as f64),
        ),
        (
            "virtdeck_vm_disk_writes_total",
            "Write requests the VM made to its disks since it started.",
            Kind::Counter,
            |c| Some(c.io.disk_writes as f64),
        ),
        (
            "virtdeck_vm_network_receive_bytes_total",
            "Bytes the VM received on its network interfaces since it started.",
            Kind::Counter,
            |c| Some(c.io.net_rx_bytes as f64),
        ),
        (
            "virtdeck_vm_network_transmit_bytes_total",
            "Bytes the VM sent on its network interfaces since it started.",
            Kind::Counter,
            |c| Some(c.io.net_tx_bytes as f64),
        ),
    ];
    for (name, help, kind, get) in per_vm {
        e.family(name, help, kind);
        for (c, _) in &running {
            if let Some(v) = get(c) {
                e.sample(&[("vm", &c.name)], v);
            }
        }
    }
    e.family(
        "virtdeck_vm_cpu_usage_ratio",
        "Share of the VM's own vCPUs busy over the last sampling interval (can pass 1 with QEMU's own threads).",
        Kind::Gauge,
    );
    for (c, r) in &running {
        if let Some(r) = r {
            e.sample(&[("vm", &c.name)], r.cpu_percent / 100.0);
        }
    }
    let (histories, bytes) = state.usage.footprint();
    e.family(
        "virtdeck_usage_samples_total",
        "Usage samples taken (one bulk libvirt call each).",
        Kind::Counter,
    )
    .sample(&[], state.usage.samples_total() as f64);
    e.family(
        "virtdeck_usage_sample_failures_total",
        "Usage samples that libvirt could not answer.",
        Kind::Counter,
    )
    .sample(&[], state.usage.failures_total() as f64);
    e.family(
        "virtdeck_usage_sample_duration_seconds",
        "How long the last usage sample took.",
        Kind::Gauge,
    )
    .sample(&[], state.usage.last_duration().as_secs_f64());
    e.family(
        "virtdeck_usage_history_vms",
        "VMs with a usage history in memory.",
        Kind::Gauge,
    )
    .sample(&[], histories as f64);
    e.family(
        "virtdeck_usage_history_bytes",
        "Memory reserved for usage histories.",
        Kind::Gauge,
    )
    .sample(&[], bytes as f64);
}

fn write_consoles(state: &AppState, e: &mut Exposition) {
    let stats = &state.consoles.stats;
    e.family(
        "virtdeck_console_sessions_open",
        "Console sessions (VNC and serial) open now.",
        Kind::Gauge,
    )
    .sample(&[], state.consoles.sessions.len() as f64);
    e.family(
        "virtdeck_console_sessions_opened_total",
        "Console sessions that reached a VM.",
        Kind::Counter,
    )
    .sample(&[], stats.sessions_opened() as f64);
    e.family(
        "virtdeck_console_bytes_total",
        "Bytes the console proxies passed, by direction.",
        Kind::Counter,
    )
    .sample(&[("direction", "to_vm")], stats.bytes_to_vm() as f64)
    .sample(&[("direction", "from_vm")], stats.bytes_from_vm() as f64);
}

fn write_capacity(c: &lifecycle::Capacity, e: &mut Exposition) {
    let gauges: [(&str, &str, f64); 5] = [
        (
            "virtdeck_host_capacity_units",
            "Compute units the host is split into.",
            f64::from(c.usage.total),
        ),
        (
            "virtdeck_host_used_units",
            "Compute units claimed by VMs.",
            f64::from(c.usage.used),
        ),
        (
            "virtdeck_host_free_units",
            "Compute units free for new VMs.",
            f64::from(c.usage.free),
        ),
        (
            "virtdeck_host_unit_vcpus",
            "vCPUs in one compute unit.",
            f64::from(c.unit_size.vcpus),
        ),
        (
            "virtdeck_host_unit_memory_bytes",
            "Memory in one compute unit.",
            c.unit_size.memory_mib as f64 * 1024.0 * 1024.0,
        ),
    ];
    for (name, help, v) in gauges {
        e.family(name, help, Kind::Gauge).sample(&[], v);
    }
}

/// `GET /metrics`: Prometheus text format, for a Bearer API token of any role.
pub async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let Some(token) = super::session::bearer(&req) else {
        return unauthorized("Send an API token: Authorization: Bearer TOKEN.");
    };
    match super::session::api_token_user(&state, &token, super::now()).await {
        Ok(Some(_)) => {}
        Ok(None) => return unauthorized("The API token is not valid."),
        Err(e) => {
            tracing::error!(error = %e.message, "cannot check an API token");
            return HttpResponse::ServiceUnavailable()
                .content_type("text/plain; charset=utf-8")
                .body("virtdeck cannot read its database; the server log has the details.\n");
        }
    }
    let capacity = lc(&state, |s| {
        lifecycle::capacity(s.hv.as_ref(), &s.store, &s.lifecycle)
    })
    .await;
    let started = Instant::now();
    let mut e = Exposition::new();
    match &capacity {
        Ok(c) => write_capacity(c, &mut e),
        Err(err) => tracing::warn!(error = %err, "capacity is missing from /metrics"),
    }
    write_usage(&state, &mut e);
    write_consoles(&state, &mut e);
    state.metrics.write(&state.ops, &mut e);
    e.family(
        "virtdeck_metrics_render_seconds",
        "How long writing this page took (after reading capacity).",
        Kind::Gauge,
    )
    .sample(&[], started.elapsed().as_secs_f64());
    HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(e.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_pattern_and_login_failures_by_status() {
        let m = Metrics::default();
        m.request(&Method::GET, "/vms/{name}", 200);
        m.request(&Method::GET, "/vms/{name}", 200);
        m.request(&Method::POST, "/login", 401);
        m.request(&Method::POST, "/login", 429);
        m.request(&Method::POST, "/login", 303);
        m.request(&Method::from_bytes(b"BREW").unwrap(), "unmatched", 404);
        let ops = crate::service::OpMetrics::default();
        ops.observe(crate::service::Action::VmCreate, "ok", 1.5);
        ops.observe(crate::service::Action::VmCreate, "failed", 0.05);
        let mut e = Exposition::new();
        m.write(&ops, &mut e);
        let text = e.finish();
        for line in [
            "virtdeck_http_requests_total{method=\"GET\",route=\"/vms/{name}\",status=\"200\"} 2",
            "virtdeck_http_requests_total{method=\"other\",route=\"unmatched\",status=\"404\"} 1",
            "virtdeck_login_failures_total{reason=\"wrong_password\"} 1",
            "virtdeck_login_failures_total{reason=\"locked\"} 1",
            "virtdeck_job_duration_seconds_count{job=\"vm.create\",result=\"ok\"} 1",
            "virtdeck_job_duration_seconds_bucket{job=\"vm.create\",result=\"failed\",le=\"0.1\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
