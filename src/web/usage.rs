//! Usage charts on the pages: sparklines for the VM list, larger charts on the VM and
//! host pages, and the JSON parts `static/usage.js` fetches every few seconds to keep
//! them live. Reads only the sampler's history (no libvirt call per request).

use super::errors::AppError;
use super::session::Authed;
use super::AppState;
use crate::domain::usage::chart::{self, Chart, Line, Unit};
use crate::domain::usage::history::Point;
use crate::domain::usage::rates;
use crate::usage::Window;
use crate::web::routes::RouteExt;
use actix_web::http::header;
use actix_web::{web, HttpResponse};
use std::collections::{BTreeMap, HashMap};

/// The VM list's CPU sparklines, by VM name.
pub struct Sparks {
    svgs: HashMap<String, String>,
    /// e.g. "last 1 hour".
    pub window: String,
    pub every_seconds: u64,
}

impl Sparks {
    /// The SVG for one VM (empty when unknown).
    pub fn of(&self, name: &str) -> &str {
        self.svgs.get(name).map(String::as_str).unwrap_or("")
    }
}

/// One chart on a page; `key` names it in the live JSON parts.
pub struct ChartView {
    pub key: String,
    pub heading: &'static str,
    pub svg: String,
}

/// The usage section of the VM or host page.
pub struct Charts {
    /// Where `usage.js` fetches fresh charts.
    pub src: String,
    pub every_seconds: u64,
    pub recent: Vec<ChartView>,
    pub long: Vec<ChartView>,
    pub recent_label: String,
    pub long_label: String,
    /// Why the charts stay empty on this host, said above them.
    pub note: Option<&'static str>,
}

/// Said on the demo host, whose charts never fill.
const DEMO_NOTE: &str = "The demo host is simulated: libvirt's test driver keeps no CPU, \
     disk or network counters, so these charts stay empty here. On a real host \
     (qemu:///system) they fill within a minute of a VM running.";

fn unix_now() -> u32 {
    super::now().clamp(0, i64::from(u32::MAX)) as u32
}

fn window_label(minutes: u64) -> String {
    if minutes % 60 == 0 {
        let h = minutes / 60;
        format!("last {h} hour{}", if h == 1 { "" } else { "s" })
    } else {
        format!("last {minutes} minutes")
    }
}

struct Frame {
    from: u32,
    to: u32,
    max_gap_seconds: u32,
    window: String,
}

fn frame(state: &AppState, window: Window, now: u32) -> Frame {
    let c = state.usage.config();
    let (span_s, gap_s, minutes) = match window {
        Window::Recent => (
            c.full_rate_minutes * 60,
            c.interval_seconds * 3,
            c.full_rate_minutes,
        ),
        Window::Long => (
            c.downsampled_hours * 3600,
            c.downsample_seconds * 2,
            c.downsampled_hours * 60,
        ),
    };
    let clamp = |s: u64| s.min(u64::from(u32::MAX)) as u32;
    Frame {
        from: now.saturating_sub(clamp(span_s)),
        to: now,
        max_gap_seconds: clamp(gap_s),
        window: window_label(minutes),
    }
}

fn line(label: &str, points: &[Point], series: usize) -> Line {
    Line {
        label: label.to_string(),
        points: points.iter().map(|p| (p.t, p.v[series])).collect(),
    }
}

/// CPU, memory, disk and network charts of one history.
fn charts(
    subject: &str,
    prefix: &str,
    points: &[Point],
    f: &Frame,
    cpu_note: &str,
) -> Vec<ChartView> {
    let make = |title: String, unit, lines, floor_max| Chart {
        title,
        window: f.window.clone(),
        unit,
        lines,
        from: f.from,
        to: f.to,
        max_gap_seconds: f.max_gap_seconds,
        floor_max,
    };
    let specs: [(&str, &'static str, Chart); 4] = [
        (
            "cpu",
            "CPU",
            make(
                format!("CPU of {subject} ({cpu_note})"),
                Unit::Percent,
                vec![line("", points, rates::CPU)],
                100.0,
            ),
        ),
        (
            "memory",
            "Memory used",
            make(
                format!("Memory used by {subject}"),
                Unit::Mib,
                vec![line("", points, rates::MEMORY)],
                1.0,
            ),
        ),
        (
            "disk",
            "Disk",
            make(
                format!("Disk traffic of {subject}"),
                Unit::BytesPerSecond,
                vec![
                    line("read", points, rates::DISK_READ),
                    line("write", points, rates::DISK_WRITE),
                ],
                1024.0,
            ),
        ),
        (
            "network",
            "Network",
            make(
                format!("Network traffic of {subject}"),
                Unit::BytesPerSecond,
                vec![
                    line("received", points, rates::NET_RX),
                    line("sent", points, rates::NET_TX),
                ],
                1024.0,
            ),
        ),
    ];
    specs
        .into_iter()
        .map(|(key, heading, c)| ChartView {
            key: format!("{prefix}:{key}"),
            heading,
            svg: chart::chart(&c),
        })
        .collect()
}

fn section(
    state: &AppState,
    src: String,
    subject: &str,
    cpu_note: &str,
    points: impl Fn(Window, u32) -> Vec<Point>,
) -> Charts {
    let now = unix_now();
    let (fr, fl) = (
        frame(state, Window::Recent, now),
        frame(state, Window::Long, now),
    );
    let recent = charts(
        subject,
        "recent",
        &points(Window::Recent, now),
        &fr,
        cpu_note,
    );
    let long = charts(subject, "long", &points(Window::Long, now), &fl, cpu_note);
    Charts {
        src,
        every_seconds: state.usage.config().interval_seconds,
        recent,
        long,
        recent_label: fr.window,
        long_label: fl.window,
        note: crate::adapters::libvirt::is_test_uri(state.hv.uri()).then_some(DEMO_NOTE),
    }
}

/// The VM page's charts.
pub fn vm_charts(state: &AppState, name: &str) -> Charts {
    section(
        state,
        format!("/vms/{}/usage", url_segment(name)),
        name,
        "percent of its vCPUs",
        |w, now| state.usage.vm_points(name, w, now),
    )
}

/// The host page's charts.
pub fn host_charts(state: &AppState) -> Charts {
    section(
        state,
        "/host/usage".into(),
        "the host",
        "percent of all CPUs; disk and network: all VMs",
        |w, now| state.usage.host_points(w, now),
    )
}

/// CPU sparklines (recent window) for the named VMs.
pub fn sparks(state: &AppState, names: &[&str]) -> Sparks {
    let now = unix_now();
    let f = frame(state, Window::Recent, now);
    let points = state.usage.cpu_points(names, now);
    let svgs = points
        .into_iter()
        .map(|(name, pts)| {
            let c = Chart {
                title: format!("CPU of {name} (percent of its vCPUs)"),
                window: f.window.clone(),
                unit: Unit::Percent,
                lines: vec![Line {
                    label: String::new(),
                    points: pts,
                }],
                from: f.from,
                to: f.to,
                max_gap_seconds: f.max_gap_seconds,
                floor_max: 100.0,
            };
            (name, chart::sparkline(&c))
        })
        .collect();
    Sparks {
        svgs,
        window: f.window,
        every_seconds: state.usage.config().interval_seconds,
    }
}

/// Percent-encodes a VM name for a path segment.
fn url_segment(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn json_parts(parts: BTreeMap<String, String>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(parts)
}

fn chart_parts(c: Charts) -> BTreeMap<String, String> {
    c.recent
        .into_iter()
        .chain(c.long)
        .map(|v| (v.key, v.svg))
        .collect()
}

/// `GET /usage/vms`: every known VM's sparkline, keyed `spark:NAME`.
pub async fn vm_list_parts(
    state: web::Data<AppState>,
    _who: Authed,
) -> Result<HttpResponse, AppError> {
    let snapshot = state.usage.snapshot();
    let names: Vec<&str> = snapshot.vms.iter().map(|(c, _)| c.name.as_str()).collect();
    let sparks = sparks(&state, &names);
    Ok(json_parts(
        sparks
            .svgs
            .into_iter()
            .map(|(n, svg)| (format!("spark:{n}"), svg))
            .collect(),
    ))
}

/// `GET /vms/{name}/usage`: the VM page's charts.
pub async fn vm_parts(
    state: web::Data<AppState>,
    _who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    Ok(json_parts(chart_parts(vm_charts(&state, &path))))
}

/// `GET /host/usage`: the host page's charts.
pub async fn host_parts(
    state: web::Data<AppState>,
    _who: Authed,
) -> Result<HttpResponse, AppError> {
    Ok(json_parts(chart_parts(host_charts(&state))))
}

/// The usage routes and `GET /metrics`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.get("/usage/vms", vm_list_parts)
        .get("/vms/{name}/usage", vm_parts)
        .get("/host/usage", host_parts)
        .get("/metrics", super::metrics::metrics);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_paths_are_encoded() {
        assert_eq!(url_segment("web-01.a_b"), "web-01.a_b");
        assert_eq!(url_segment("a b/c?"), "a%20b%2Fc%3F");
    }

    #[test]
    fn window_labels() {
        assert_eq!(window_label(60), "last 1 hour");
        assert_eq!(window_label(1440), "last 24 hours");
        assert_eq!(window_label(15), "last 15 minutes");
    }
}
