//! Fleet: every host with its capacity and VMs (viewers and up), and Fleet peers (admin):
//! invite, check a host's certificate, pair, unpair.

use super::super::errors::{html, AppError};
use super::super::flash::{self, Flash};
use super::super::routes::RouteExt;
use super::super::session::Authed;
use super::super::{lc, AppState};
use super::storage::CsrfForm;
use super::{format_time, Chrome};
use crate::adapters::http_fetch::peer::fingerprint_for_people;
use crate::auth::Role;
use crate::domain::listing::{ListQuery, Page, StateFilter};
use crate::lifecycle::FieldError;
use crate::service::fleet::{self, Contact, FleetHost, FleetVm};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

const PEERS: &str = "/fleet/peers";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.get("/fleet", fleet_page)
        .get("/fleet/peers", peers_page)
        .post("/fleet/invite", invite_form)
        .post("/fleet/peers/check", check_form)
        .post("/fleet/peers", pair_form)
        .post("/fleet/peers/{name}/unpair", unpair_form)
        .post("/fleet/drain", drain_form)
        .post("/fleet/drain/end", end_drain_form)
        .get("/vms/{name}/migrate", migrate_page)
        .post("/vms/{name}/migrate", migrate_form);
}

// ---- the fleet page ----

struct HostRow {
    host: FleetHost,
    /// "now", "12 s ago", "never".
    age: String,
    /// The host's recent CPU as a small SVG chart (escaped text only).
    spark: String,
}

/// A host's recent CPU use as a sparkline.
fn cpu_spark(h: &FleetHost) -> String {
    use crate::domain::usage::chart::{sparkline, Chart, Line, Unit};
    let points = h
        .summary
        .as_ref()
        .map(|s| s.cpu_percent.clone())
        .unwrap_or_default();
    let (from, to) = (
        points.first().map(|p| p.0).unwrap_or(0),
        points.last().map(|p| p.0).unwrap_or(0),
    );
    // Points further apart than a few of their own steps are not joined.
    let step = if points.len() > 1 {
        (to - from) / (points.len() as u32 - 1)
    } else {
        0
    };
    sparkline(&Chart {
        title: format!("CPU of {} (percent of all CPUs)", h.name),
        window: "recently".into(),
        unit: Unit::Percent,
        lines: vec![Line {
            label: String::new(),
            points,
        }],
        from,
        to,
        max_gap_seconds: (step * 3).max(60),
        floor_max: 100.0,
    })
}

#[derive(Template)]
#[template(path = "fleet.html")]
struct FleetPage {
    chrome: Chrome,
    message: Option<String>,
    /// Who started emptying this host, and when.
    draining: Option<String>,
    fit: FitPart,
    hosts: Vec<HostRow>,
    vms: Vec<FleetVm>,
    page: Page,
    query: ListQuery,
    refresh_seconds: u64,
}

impl FleetPage {
    fn state_choices(&self) -> [StateFilter; 5] {
        StateFilter::ALL
    }

    fn page_href(&self, n: usize) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        if !self.query.search.is_empty() {
            q.append_pair("search", &self.query.search);
        }
        if self.query.state != StateFilter::Any {
            q.append_pair("state", self.query.state.key());
        }
        q.append_pair("page", &n.to_string());
        format!("/fleet?{}", q.finish())
    }
}

/// How old a host's part of the page is.
fn age(answered_at: Option<i64>, now: i64) -> String {
    match answered_at {
        None => "never".into(),
        Some(t) if now - t < 2 => "now".into(),
        Some(t) if now - t < 120 => format!("{} s ago", now - t),
        Some(t) if now - t < 7200 => format!("{} min ago", (now - t) / 60),
        Some(t) => format_time(t),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ListParams {
    search: String,
    state: String,
    page: String,
    fit_vcpus: String,
    fit_memory_mib: String,
}

/// "Where does it fit?": the size as typed, and each host's answer.
#[derive(Default)]
struct FitPart {
    vcpus: String,
    memory_mib: String,
    errors: Vec<FieldError>,
    answers: Vec<crate::service::fleet::SizeFit>,
}

impl FitPart {
    fn error_for(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|e| e.field == field)
            .map(|e| e.message.as_str())
    }
}

async fn fleet_page(
    state: web::Data<AppState>,
    who: Authed,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, AppError> {
    let p = params.into_inner();
    let query = ListQuery::from_params(&p.search, &p.state, &p.page, "");
    let mut fit = FitPart {
        vcpus: p.fit_vcpus.clone(),
        memory_mib: p.fit_memory_mib.clone(),
        ..Default::default()
    };
    if !p.fit_vcpus.is_empty() || !p.fit_memory_mib.is_empty() {
        match fleet::SizeAsk::parse(&p.fit_vcpus, &p.fit_memory_mib) {
            Ok(size) => fit.answers = lc(&state, move |s| fleet::where_fits(s, size)).await?,
            Err(errors) => fit.errors = errors,
        }
    }
    let draining = super::super::db(&state, |s| s.draining()).await?;
    let hosts = lc(&state, |s| fleet::fleet_hosts(s)).await?;
    let (vms, page) = fleet::fleet_vms(&hosts, &query);
    let now = crate::service::now();
    Ok(html(
        StatusCode::OK,
        &FleetPage {
            chrome: Chrome::new(&who, "fleet"),
            message: flash::take(&who).map(|f| f.notice),
            draining,
            fit,
            hosts: hosts
                .into_iter()
                .map(|h| HostRow {
                    age: age(h.answered_at, now),
                    spark: cpu_spark(&h),
                    host: h,
                })
                .collect(),
            vms,
            page,
            query,
            refresh_seconds: state.cfg.fleet.refresh_seconds,
        },
    ))
}

// ---- peers ----

struct PeerLine {
    name: String,
    url: String,
    fingerprint: String,
    paired: String,
    paired_by: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct AddForm {
    csrf: String,
    url: String,
    code: String,
}

#[derive(Template)]
#[template(path = "fleet_peers.html")]
struct PeersPage {
    chrome: Chrome,
    message: Option<String>,
    action_error: Option<String>,
    own_name: String,
    own_url: Option<String>,
    own_fingerprint: Option<String>,
    code_minutes: u64,
    peers: Vec<PeerLine>,
    form: AddForm,
    errors: Vec<FieldError>,
    form_error: Option<String>,
}

impl PeersPage {
    fn error_for(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|e| e.field == field)
            .map(|e| e.message.as_str())
    }
}

#[derive(Default)]
struct Parts {
    message: Option<String>,
    action_error: Option<String>,
    form: AddForm,
    errors: Vec<FieldError>,
    form_error: Option<String>,
}

async fn render_peers(
    state: &web::Data<AppState>,
    who: &Authed,
    status: StatusCode,
    parts: Parts,
) -> Result<HttpResponse, AppError> {
    let rows = super::super::db(state, |s| s.peers()).await?;
    Ok(html(
        status,
        &PeersPage {
            chrome: Chrome::new(who, "fleet"),
            message: parts.message,
            action_error: parts.action_error,
            own_name: state.fleet_name(),
            own_url: state.fleet_url(),
            own_fingerprint: state
                .fleet_fingerprint()
                .map(|f| fingerprint_for_people(&f)),
            code_minutes: state.cfg.fleet.pairing_code_minutes,
            peers: rows
                .into_iter()
                .map(|p| PeerLine {
                    fingerprint: fingerprint_for_people(&p.fingerprint_sha256),
                    paired: format_time(p.paired_at),
                    name: p.name,
                    url: p.url,
                    paired_by: p.paired_by,
                })
                .collect(),
            form: parts.form,
            errors: parts.errors,
            form_error: parts.form_error,
        },
    ))
}

async fn peers_page(state: web::Data<AppState>, who: Authed) -> Result<HttpResponse, AppError> {
    who.require(&state, Role::Admin, "fleet.peers.view", "")
        .await?;
    let parts = Parts {
        message: flash::take(&who).map(|f| f.notice),
        ..Default::default()
    };
    render_peers(&state, &who, StatusCode::OK, parts).await
}

async fn invite_form(
    state: web::Data<AppState>,
    who: Authed,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    match fleet::invite(&state.svc, &who.caller()).await? {
        Ok(i) => Ok(flash::redirect(
            &who,
            PEERS,
            Flash::notice(format!(
                "Pairing code for {}: {} — enter it on the other host's Fleet peers page \
                 (Add a peer) before {}. It works once; it is not shown again.",
                i.name,
                i.code,
                format_time(i.expires_at)
            )),
        )),
        Err(e) => {
            let (status, _, message) = super::super::kit::form_failure(e)?;
            let parts = Parts {
                action_error: message,
                ..Default::default()
            };
            render_peers(&state, &who, status, parts).await
        }
    }
}

#[derive(Template)]
#[template(path = "fleet_pair_confirm.html")]
struct ConfirmPage {
    chrome: Chrome,
    contact: Contact,
    fingerprint: String,
    code: String,
}

/// Step one of adding a peer: connect, show the certificate the host presented.
async fn check_form(
    state: web::Data<AppState>,
    who: Authed,
    form: web::Form<AddForm>,
) -> Result<HttpResponse, AppError> {
    let form = form.into_inner();
    who.check_csrf(Some(&form.csrf))?;
    match fleet::first_contact(&state.svc, &who.caller(), &form.url).await? {
        Ok(contact) => Ok(html(
            StatusCode::OK,
            &ConfirmPage {
                chrome: Chrome::new(&who, "fleet"),
                fingerprint: fingerprint_for_people(&contact.fingerprint),
                contact,
                code: form.code.trim().to_string(),
            },
        )),
        Err(e) => {
            let (status, errors, form_error) = super::super::kit::form_failure(e)?;
            let parts = Parts {
                form,
                errors,
                form_error,
                ..Default::default()
            };
            render_peers(&state, &who, status, parts).await
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PairForm {
    csrf: String,
    url: String,
    code: String,
    fingerprint: String,
}

/// Step two: the admin confirmed the fingerprint; pair with it pinned.
async fn pair_form(
    state: web::Data<AppState>,
    who: Authed,
    form: web::Form<PairForm>,
) -> Result<HttpResponse, AppError> {
    let f = form.into_inner();
    who.check_csrf(Some(&f.csrf))?;
    match fleet::pair(&state.svc, &who.caller(), &f.url, &f.code, &f.fingerprint).await? {
        Ok(peer) => Ok(flash::redirect(
            &who,
            PEERS,
            Flash::notice(format!(
                "Paired with {}: both hosts now hold each other, and {} is on the Fleet page.",
                peer.name, peer.name
            )),
        )),
        Err(e) => {
            let (status, errors, form_error) = super::super::kit::form_failure(e)?;
            let parts = Parts {
                form: AddForm {
                    csrf: String::new(),
                    url: f.url,
                    code: f.code,
                },
                errors,
                form_error,
                ..Default::default()
            };
            render_peers(&state, &who, status, parts).await
        }
    }
}

async fn unpair_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let name = path.into_inner();
    match fleet::unpair(&state.svc, &who.caller(), &name).await? {
        Ok(told) => Ok(flash::redirect(
            &who,
            PEERS,
            Flash::notice(format!("Unpaired {name}: {told}.")),
        )),
        Err(e) => {
            let (status, _, message) = super::super::kit::form_failure(e)?;
            let parts = Parts {
                action_error: message,
                ..Default::default()
            };
            render_peers(&state, &who, status, parts).await
        }
    }
}

// ---- migrate a VM ----

#[derive(Template)]
#[template(path = "vm_migrate.html")]
struct MigratePage {
    chrome: Chrome,
    vm: String,
    running: bool,
    units: u32,
    disks: Vec<String>,
    destinations: Vec<crate::service::migration::Destination>,
    error: Option<String>,
}

impl MigratePage {
    fn any_fits(&self) -> bool {
        self.destinations.iter().any(|d| d.fits)
    }
}

async fn render_migrate(
    state: &web::Data<AppState>,
    who: &Authed,
    name: String,
    status: StatusCode,
    error: Option<String>,
) -> Result<HttpResponse, AppError> {
    let n = name.clone();
    let (departure, destinations) = lc(state, move |s| {
        crate::service::migration::destinations(s, &n)
    })
    .await?;
    Ok(html(
        status,
        &MigratePage {
            chrome: Chrome::new(who, "vms"),
            vm: name,
            running: departure.running,
            units: departure.needs.units,
            disks: departure
                .needs
                .disks
                .iter()
                .map(|d| d.path.clone())
                .collect(),
            destinations,
            error,
        },
    ))
}

async fn migrate_page(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let name = path.into_inner();
    who.require(&state, Role::Operator, "vm.migrate", &name)
        .await?;
    render_migrate(&state, &who, name, StatusCode::OK, None).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MigrateForm {
    csrf: String,
    to: String,
    live: Option<String>,
}

async fn migrate_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    form: web::Form<MigrateForm>,
) -> Result<HttpResponse, AppError> {
    let f = form.into_inner();
    who.check_csrf(Some(&f.csrf))?;
    let name = path.into_inner();
    let live = f.live.is_some();
    match crate::service::migration::migrate(&state.svc, &who.caller(), &name, &f.to, live).await? {
        Ok(job) => Ok(flash::redirect(
            &who,
            "/jobs",
            Flash::notice(format!(
                "Moving {name} to {} (job {}): it keeps running here until the move ends.",
                job.source, job.id
            )),
        )),
        Err(e) => {
            let (status, errors, message) = super::super::kit::form_failure(e)?;
            let text = message.or_else(|| errors.into_iter().next().map(|e| e.message));
            render_migrate(&state, &who, name, status, text).await
        }
    }
}

// ---- drain ----

async fn drain_form(
    state: web::Data<AppState>,
    who: Authed,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let notice = match crate::service::migration::drain(&state.svc, &who.caller()).await? {
        Ok(d) => format!(
            "This host is being emptied: no new VM is made here, and its {} VMs move to peers \
             one at a time (see Jobs). It stays draining until you end it here.",
            d.vms.len()
        ),
        Err(e) => e.to_string(),
    };
    Ok(flash::redirect(&who, "/fleet", Flash::notice(notice)))
}

async fn end_drain_form(
    state: web::Data<AppState>,
    who: Authed,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let notice = match crate::service::migration::end_drain(&state.svc, &who.caller()).await? {
        Ok(()) => "The drain has ended: new VMs are made and accepted here again.".to_string(),
        Err(e) => e.to_string(),
    };
    Ok(flash::redirect(&who, "/fleet", Flash::notice(notice)))
}
