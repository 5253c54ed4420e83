//! Host setup pages (admins only): the host network, kernel settings, the pending change
//! with its countdown, and the export. The audited operations here are shared with the
//! API (`web::hostnet_api`).

use super::super::errors::{html, AppError};
use super::super::kit::engine;
use super::super::session::Authed;
use super::super::{audit, AppState};
use super::Chrome;
use crate::auth::Role;
use crate::domain::hostnet::form::NetForm;
use crate::domain::hostnet::plan::LiveNet;
use crate::domain::hostnet::{Backend, BondMode, FieldError, NetConfig};
use crate::domain::sysctl::SysctlForm;
use crate::hostcfg::sysctl::SettingView;
use crate::hostcfg::{ChangeError, Outcome, PendingView, Plan};
use crate::service;
use crate::web::routes::RouteExt;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

/// A form posted from a page: its CSRF token and the other fields as a JSON object, so
/// the typed form can refuse unknown fields.
fn split_form(pairs: Vec<(String, String)>) -> (Option<String>, serde_json::Value) {
    let mut csrf = None;
    let mut map = serde_json::Map::new();
    for (k, v) in pairs {
        if k == "csrf" {
            csrf = Some(v);
        } else {
            map.insert(k, serde_json::Value::String(v));
        }
    }
    (csrf, serde_json::Value::Object(map))
}

fn typed<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, AppError> {
    serde_json::from_value(v).map_err(|e| {
        AppError::bad_request(format!(
            "The form could not be read: {e}. Reload the page and try again."
        ))
    })
}

// ------------------------------------------------------------------ network page

#[derive(Template)]
#[template(path = "host_network.html")]
struct NetworkPage {
    chrome: Chrome,
    tab: &'static str,
    pending: Option<PendingView>,
    last: Option<Outcome>,
    message: Option<String>,
    live: LiveNet,
    managed: NetConfig,
    detected: Backend,
    backends: [Backend; 4],
    modes: [BondMode; 7],
    root: String,
    /// The form that was sent, with its errors; the others are prefilled.
    forms: Vec<(String, serde_json::Value)>,
    active: String,
    errors: Vec<FieldError>,
}

impl NetworkPage {
    fn val(&self, kind: &str, field: &str) -> String {
        self.forms
            .iter()
            .find(|(k, _)| k == kind)
            .and_then(|(_, v)| v.get(field))
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    }

    fn err(&self, kind: &str, field: &str) -> Option<&str> {
        (self.active == kind)
            .then(|| {
                self.errors
                    .iter()
                    .find(|e| e.field == field)
                    .map(|e| e.message.as_str())
            })
            .flatten()
    }

    fn addresses(&self, link: &str) -> String {
        self.live
            .addresses
            .iter()
            .filter(|a| a.link == link)
            .map(|a| a.address.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn is_managed(&self, link: &str) -> bool {
        self.managed.kind_of(link).is_some()
    }

    fn kind_of(&self, link: &str) -> &'static str {
        match self.managed.kind_of(link) {
            Some(crate::domain::hostnet::Kind::Bond) => "bond",
            Some(crate::domain::hostnet::Kind::Bridge) => "bridge",
            _ => "vlan",
        }
    }
}

#[derive(Deserialize)]
pub struct EditQuery {
    edit: Option<String>,
}

fn root_display(state: &AppState) -> String {
    let r = state.cfg.host.root.display().to_string();
    if r.ends_with('/') {
        r
    } else {
        format!("{r}/")
    }
}

async fn render_network(
    state: &web::Data<AppState>,
    who: &Authed,
    edit: Option<String>,
    sent: Option<(NetForm, Vec<FieldError>)>,
    message: Option<String>,
    status: StatusCode,
) -> Result<HttpResponse, AppError> {
    let (live, managed) = engine(state, |e| Ok((e.live()?, e.managed()?)))
        .await
        .map_err(AppError::from)?;
    // Network cards (veth in containers) not in use by a bond or bridge; the one with
    // the default route first, since its address is the one that moves to the bridge.
    let mut nics: Vec<String> = live
        .links
        .iter()
        .filter(|l| matches!(l.kind.as_deref(), None | Some("veth")))
        .filter(|l| l.name != "lo" && l.master.is_none())
        .filter(|l| managed.network.kind_of(&l.name).is_none())
        .map(|l| l.name.clone())
        .collect();
    let routed = live.default_routes().first().map(|(l, _)| l.to_string());
    if let Some(pos) = routed.and_then(|r| nics.iter().position(|n| *n == r)) {
        let n = nics.remove(pos);
        nics.insert(0, n);
    }
    let mut forms: Vec<(String, NetForm)> = vec![
        ("recipe".into(), NetForm::recipe_from(&nics, &live)),
        (
            "bridge".into(),
            NetForm {
                kind: "bridge".into(),
                forward_delay_s: "0".into(),
                ageing_s: "300".into(),
                ipv4: "off".into(),
                ipv6: "off".into(),
                ..Default::default()
            },
        ),
        (
            "bond".into(),
            NetForm {
                kind: "bond".into(),
                mode: "active-backup".into(),
                miimon_ms: "100".into(),
                ..Default::default()
            },
        ),
        (
            "vlan".into(),
            NetForm {
                kind: "vlan".into(),
                ..Default::default()
            },
        ),
    ];
    if let Some(f) = edit.and_then(|n| NetForm::for_edit(&managed.network, &n)) {
        if let Some(slot) = forms.iter_mut().find(|(k, _)| *k == f.kind) {
            slot.1 = f;
        }
    }
    let (active, errors) = match sent {
        Some((f, errs)) => {
            let kind = f.kind.clone();
            match forms.iter_mut().find(|(k, _)| *k == kind) {
                Some(slot) => slot.1 = f,
                None => forms.push((kind.clone(), f)),
            }
            (kind, errs)
        }
        None => (String::new(), Vec::new()),
    };
    let page = NetworkPage {
        chrome: Chrome::new(who, "hostsetup"),
        tab: "network",
        pending: state.host.pending(),
        last: state.host.last_outcome(),
        message,
        live,
        managed: managed.network,
        detected: state.host.detected_backend(),
        backends: Backend::ALL,
        modes: BondMode::ALL,
        root: root_display(state),
        forms: forms
            .into_iter()
            .map(|(k, f)| (k, serde_json::to_value(f).unwrap_or_default()))
            .collect(),
        active,
        errors,
    };
    Ok(html(status, &page))
}

pub async fn network_page(
    state: web::Data<AppState>,
    who: Authed,
    q: web::Query<EditQuery>,
) -> Result<HttpResponse, AppError> {
    who.require(&state, Role::Admin, "host.network.view", "")
        .await?;
    render_network(
        &state,
        &who,
        q.into_inner().edit,
        None,
        None,
        StatusCode::OK,
    )
    .await
}

#[derive(Template)]
#[template(path = "host_plan.html")]
struct PlanPage {
    chrome: Chrome,
    tab: &'static str,
    pending: Option<PendingView>,
    last: Option<Outcome>,
    message: Option<String>,
    plan: Plan,
    root: String,
    confirm_seconds: u64,
    back: &'static str,
    /// Why Apply will be refused here (the demo host), said before it is pressed.
    apply_refused: Option<String>,
}

fn plan_page(state: &AppState, who: &Authed, plan: Plan, back: &'static str) -> HttpResponse {
    html(
        StatusCode::OK,
        &PlanPage {
            chrome: Chrome::new(who, "hostsetup"),
            tab: "plan",
            pending: state.host.pending(),
            last: None,
            message: None,
            plan,
            root: root_display(state),
            confirm_seconds: state.cfg.host.confirm_seconds,
            back,
            apply_refused: state.host.settings.apply_refused.clone(),
        },
    )
}

pub async fn network_plan_form(
    state: web::Data<AppState>,
    who: Authed,
    form: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, AppError> {
    let (csrf, fields) = split_form(form.into_inner());
    who.check_csrf(csrf.as_deref())?;
    let f: NetForm = typed(fields)?;
    match service::host::plan_network(&state.svc, &who.caller(), f.clone()).await? {
        Ok(plan) => Ok(plan_page(&state, &who, plan, "/host/network")),
        Err(ChangeError::Invalid(errs)) => {
            render_network(
                &state,
                &who,
                None,
                Some((f, errs)),
                None,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(e) => {
            let status = AppError::from(e.clone()).kind;
            render_network(
                &state,
                &who,
                None,
                None,
                Some(e.to_string()),
                status.status(),
            )
            .await
        }
    }
}

#[derive(Deserialize)]
pub struct ApplyForm {
    csrf: Option<String>,
    plan_id: String,
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to.to_string()))
        .finish()
}

pub async fn apply_form(
    state: web::Data<AppState>,
    who: Authed,
    form: web::Form<ApplyForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let kind = state.host.plan(&form.plan_id).map(|p| p.kind);
    match service::host::apply(
        &state.svc,
        &who.caller(),
        form.plan_id.clone(),
        who.credential_sha256.clone(),
    )
    .await?
    {
        Ok(_) => Ok(see_other("/host/changes/pending")),
        Err(e) => {
            let status = AppError::from(e.clone()).kind.status();
            match kind {
                Some(crate::hostcfg::ChangeKind::Sysctl) => {
                    render_sysctl(&state, &who, None, Some(e.to_string()), status).await
                }
                _ => render_network(&state, &who, None, None, Some(e.to_string()), status).await,
            }
        }
    }
}

#[derive(Template)]
#[template(path = "host_pending.html")]
struct PendingPage {
    chrome: Chrome,
    tab: &'static str,
    pending: Option<PendingView>,
    /// The change was applied from another sign-in than this page's.
    other_sign_in: bool,
    last: Option<Outcome>,
    message: Option<String>,
}

async fn render_pending(
    state: &AppState,
    who: &Authed,
    message: Option<String>,
    status: StatusCode,
) -> HttpResponse {
    html(
        status,
        &PendingPage {
            chrome: Chrome::new(who, "hostsetup"),
            tab: "pending",
            pending: state.host.pending(),
            other_sign_in: state
                .host
                .pending_from_other_sign_in(&who.credential_sha256),
            last: state.host.last_outcome(),
            message,
        },
    )
}

pub async fn pending_page(
    state: web::Data<AppState>,
    who: Authed,
) -> Result<HttpResponse, AppError> {
    who.require(&state, Role::Admin, "host.change.view", "")
        .await?;
    Ok(render_pending(&state, &who, None, StatusCode::OK).await)
}

#[derive(Deserialize)]
pub struct ConfirmForm {
    csrf: Option<String>,
    other_sign_in: Option<String>,
}

pub async fn confirm_form(
    state: web::Data<AppState>,
    who: Authed,
    form: web::Form<ConfirmForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    match service::host::confirm(
        &state.svc,
        &who.caller(),
        who.credential_sha256.clone(),
        form.other_sign_in.is_some(),
    )
    .await?
    {
        Ok(_) => Ok(see_other("/host/changes/pending")),
        Err(e) => Ok(render_pending(&state, &who, Some(e.to_string()), StatusCode::CONFLICT).await),
    }
}

pub async fn rollback_form(
    state: web::Data<AppState>,
    who: Authed,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    match service::host::rollback(&state.svc, &who.caller()).await? {
        Ok(_) => Ok(see_other("/host/changes/pending")),
        Err(e) => Ok(render_pending(&state, &who, Some(e.to_string()), StatusCode::CONFLICT).await),
    }
}

// ------------------------------------------------------------------ kernel settings

#[derive(Template)]
#[template(path = "host_sysctl.html")]
struct SysctlPage {
    chrome: Chrome,
    tab: &'static str,
    pending: Option<PendingView>,
    last: Option<Outcome>,
    message: Option<String>,
    settings: Vec<SettingView>,
    root: String,
    form: SysctlForm,
    errors: Vec<FieldError>,
}

impl SysctlPage {
    fn err(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|e| e.field == field)
            .map(|e| e.message.as_str())
    }
}

async fn render_sysctl(
    state: &web::Data<AppState>,
    who: &Authed,
    sent: Option<(SysctlForm, Vec<FieldError>)>,
    message: Option<String>,
    status: StatusCode,
) -> Result<HttpResponse, AppError> {
    let settings = engine(state, |e| e.sysctl_view())
        .await
        .map_err(AppError::from)?;
    let (form, errors) = sent.unwrap_or_default();
    Ok(html(
        status,
        &SysctlPage {
            chrome: Chrome::new(who, "hostsetup"),
            tab: "sysctl",
            pending: state.host.pending(),
            last: state.host.last_outcome(),
            message,
            settings,
            root: root_display(state),
            form,
            errors,
        },
    ))
}

pub async fn sysctl_page(
    state: web::Data<AppState>,
    who: Authed,
) -> Result<HttpResponse, AppError> {
    who.require(&state, Role::Admin, "host.sysctl.view", "")
        .await?;
    render_sysctl(&state, &who, None, None, StatusCode::OK).await
}

pub async fn sysctl_plan_form(
    state: web::Data<AppState>,
    who: Authed,
    form: web::Form<Vec<(String, String)>>,
) -> Result<HttpResponse, AppError> {
    let (csrf, fields) = split_form(form.into_inner());
    who.check_csrf(csrf.as_deref())?;
    let f: SysctlForm = typed(fields)?;
    match service::host::plan_sysctl(&state.svc, &who.caller(), f.clone()).await? {
        Ok(plan) => Ok(plan_page(&state, &who, plan, "/host/sysctl")),
        Err(ChangeError::Invalid(errs)) => {
            render_sysctl(
                &state,
                &who,
                Some((f, errs)),
                None,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(e) => {
            let status = AppError::from(e.clone()).kind.status();
            render_sysctl(&state, &who, None, Some(e.to_string()), status).await
        }
    }
}

// ------------------------------------------------------------------ export

/// The host plan as a shell script (kickstart %post) that rebuilds this host's setup.
pub async fn export_script(
    state: web::Data<AppState>,
    who: Authed,
) -> Result<HttpResponse, AppError> {
    who.require(&state, Role::Admin, "host.export", "").await?;
    let files = engine(&state, |e| e.managed_files())
        .await
        .map_err(AppError::from)?;
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "this host".into());
    let libvirt = super::super::hv(&state, |h| {
        let mut pools = Vec::new();
        for p in h.pool_statuses()?.into_iter().filter(|p| p.persistent) {
            let xml = h.pool_xml(&p.name)?;
            pools.push(crate::domain::host_export::ExportPool {
                name: p.name,
                kind: p.kind,
                autostart: p.autostart,
                xml,
            });
        }
        let default_network_present = h.network_statuses()?.iter().any(|n| n.name == "default");
        Ok(crate::domain::host_export::libvirt_sections(
            &pools,
            default_network_present,
        ))
    })
    .await?;
    let script = crate::domain::host_export::script(&host, &files, &libvirt);
    audit::record(
        &state,
        &who.username,
        &who.remote_addr,
        "host.export",
        "",
        "ok",
        &format!(
            "{} file(s), {} libvirt section(s)",
            files.len(),
            libvirt.len()
        ),
    )
    .await;
    Ok(HttpResponse::Ok()
        .content_type("text/x-shellscript; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"virtdeck-host-plan.sh\"",
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(script))
}

/// Routes of the host setup pages and their API, added to the app by `web::server`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.get("/host/network", network_page)
        .post("/host/network/plan", network_plan_form)
        .get("/host/sysctl", sysctl_page)
        .post("/host/sysctl/plan", sysctl_plan_form)
        .post("/host/changes/apply", apply_form)
        .get("/host/changes/pending", pending_page)
        .post("/host/changes/confirm", confirm_form)
        .post("/host/changes/rollback", rollback_form)
        .get("/host/export.sh", export_script);
}
