//! Host > Libvirt networks: the list; creating a NAT or isolated network; starting,
//! stopping (after a confirm page naming the VMs that use it) and autostart; removing a
//! NAT or isolated network (such as libvirt's `default`) after a confirm page. Admin only;
//! the audited changes are shared with the API.

use super::super::errors::{html, AppError};
use super::super::flash::{self, Flash};
use super::super::session::Authed;
use super::super::{lc, AppState};
use super::storage::CsrfForm;
use super::Chrome;
use crate::auth::Role;
use crate::domain::libvirt_network::NetworkRequest;
use crate::lifecycle::storage::{self as host, NetworkAction, NetworkRemovePlan, NetworkView};
use crate::lifecycle::{FieldError, LifecycleError};
use crate::service;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

/// The list page, where every change of this module answers.
const PAGE: &str = "/host/libvirt-networks";

// ---- the list and the create form ----

/// The "New network" form as typed, kept on error. A field left out of a post is empty
/// (an unticked checkbox is absent: autostart off), unlike the fresh form's defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct NetworkForm {
    pub csrf: String,
    pub name: String,
    /// `nat` or `isolated`.
    pub mode: String,
    pub address: String,
    pub prefix: String,
    pub dhcp_start: String,
    pub dhcp_end: String,
    /// The "start at boot" checkbox: present when ticked.
    pub autostart: Option<String>,
}

impl NetworkForm {
    /// The form as a fresh page shows it: NAT, /24, starting with the host.
    fn fresh() -> Self {
        NetworkForm {
            mode: "nat".into(),
            prefix: "24".into(),
            autostart: Some("1".into()),
            ..Default::default()
        }
    }

    fn to_request(&self) -> NetworkRequest {
        NetworkRequest {
            name: self.name.clone(),
            mode: self.mode.clone(),
            address: self.address.clone(),
            prefix: self.prefix.clone(),
            dhcp_start: self.dhcp_start.clone(),
            dhcp_end: self.dhcp_end.clone(),
            autostart: Some(self.autostart.is_some()),
        }
    }
}

#[derive(Template)]
#[template(path = "host_networks.html")]
struct NetworksPage {
    chrome: Chrome,
    networks: Vec<NetworkView>,
    message: Option<String>,
    /// A start/stop/autostart that was refused or failed.
    action_error: Option<String>,
    form: NetworkForm,
    errors: Vec<FieldError>,
    form_error: Option<String>,
}

impl NetworksPage {
    fn error_for(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|e| e.field == field)
            .map(|e| e.message.as_str())
    }
}

/// What the page shows besides the list.
#[derive(Default)]
struct PageParts {
    message: Option<String>,
    action_error: Option<String>,
    form: NetworkForm,
    errors: Vec<FieldError>,
    form_error: Option<String>,
}

async fn render_networks(
    state: &web::Data<AppState>,
    who: &Authed,
    status: StatusCode,
    parts: PageParts,
) -> Result<HttpResponse, AppError> {
    let networks = lc(state, |s| host::networks(s.hv.as_ref())).await?;
    Ok(html(
        status,
        &NetworksPage {
            chrome: Chrome::new(who, "libvirt-networks"),
            networks,
            message: parts.message,
            action_error: parts.action_error,
            form: parts.form,
            errors: parts.errors,
            form_error: parts.form_error,
        },
    ))
}

pub async fn networks_page(
    state: web::Data<AppState>,
    who: Authed,
) -> Result<HttpResponse, AppError> {
    who.require(&state, Role::Admin, "networks.view", "")
        .await?;
    let parts = PageParts {
        message: flash::take(&who).map(|f| f.notice),
        form: NetworkForm::fresh(),
        ..Default::default()
    };
    render_networks(&state, &who, StatusCode::OK, parts).await
}

pub async fn create_form(
    state: web::Data<AppState>,
    who: Authed,
    form: web::Form<NetworkForm>,
) -> Result<HttpResponse, AppError> {
    let form = form.into_inner();
    who.check_csrf(Some(&form.csrf))?;
    let (status, errors, form_error) =
        match service::storage::create_network(&state.svc, &who.caller(), form.to_request()).await?
        {
            Ok(c) => {
                let mut m = format!(
                    "Network {} created and started: {} on {}",
                    c.name,
                    if c.mode == "nat" { "NAT" } else { "isolated" },
                    c.address
                );
                match &c.dhcp {
                    Some(r) => m.push_str(&format!(", DHCP {r}")),
                    None => m.push_str(", no DHCP"),
                }
                if c.autostart {
                    m.push_str("; it starts with the host");
                }
                m.push('.');
                return Ok(flash::redirect(&who, PAGE, Flash::notice(m)));
            }
            Err(e) => super::super::kit::form_failure(e)?,
        };
    let parts = PageParts {
        form,
        errors,
        form_error,
        ..Default::default()
    };
    render_networks(&state, &who, status, parts).await
}

/// Start, stop, autostart, no-autostart (the buttons of a row; stop comes from its
/// confirm page).
pub async fn action_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<(String, String)>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let (name, action) = path.into_inner();
    let action = NetworkAction::parse(&action)
        .ok_or_else(|| AppError::not_found("There is no such network action."))?;
    let (status, message) =
        match service::storage::network_action(&state.svc, &who.caller(), &name, action).await? {
            Ok(c) => {
                let mut m = action.done(&c.name);
                if !c.vms_affected.is_empty() {
                    m.push_str(&format!(
                        " VMs with a NIC on it: {}.",
                        c.vms_affected.join(", ")
                    ));
                }
                return Ok(flash::redirect(&who, PAGE, Flash::notice(m)));
            }
            Err(e) => match super::super::kit::form_failure(e)? {
                (status, errors, None) => (
                    status,
                    errors
                        .into_iter()
                        .next()
                        .map(|e| e.message)
                        .unwrap_or_default(),
                ),
                (status, _, Some(message)) => (status, message),
            },
        };
    let parts = PageParts {
        action_error: Some(message),
        form: NetworkForm::fresh(),
        ..Default::default()
    };
    render_networks(&state, &who, status, parts).await
}

// ---- confirm pages: remove and stop ----

#[derive(Template)]
#[template(path = "host_network_remove.html")]
struct RemovePage {
    chrome: Chrome,
    plan: NetworkRemovePlan,
    /// `remove` or `stop`.
    action: &'static str,
    error: Option<String>,
}

async fn render_confirm(
    state: &web::Data<AppState>,
    who: &Authed,
    name: String,
    action: &'static str,
    status: StatusCode,
    error: Option<String>,
) -> Result<HttpResponse, AppError> {
    let plan = lc(state, move |s| {
        if action == "stop" {
            host::network_stop_plan(s.hv.as_ref(), &name)
        } else {
            host::network_remove_plan(s.hv.as_ref(), &name)
        }
    })
    .await?;
    Ok(html(
        status,
        &RemovePage {
            chrome: Chrome::new(who, "libvirt-networks"),
            plan,
            action,
            error,
        },
    ))
}

pub async fn remove_page(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let name = path.into_inner();
    who.require(&state, Role::Admin, "network.remove", &name)
        .await?;
    render_confirm(&state, &who, name, "remove", StatusCode::OK, None).await
}

pub async fn stop_page(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let name = path.into_inner();
    who.require(&state, Role::Admin, "network.stop", &name)
        .await?;
    render_confirm(&state, &who, name, "stop", StatusCode::OK, None).await
}

pub async fn remove_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let name = path.into_inner();
    match service::storage::remove_network(&state.svc, &who.caller(), &name).await? {
        Ok(r) => Ok(flash::redirect(
            &who,
            PAGE,
            Flash::notice(format!("Network {} stopped and removed.", r.name)),
        )),
        Err(e @ LifecycleError::Failed { .. }) => {
            let status = super::super::errors::kind_of(&e).status();
            render_confirm(&state, &who, name, "remove", status, Some(e.to_string())).await
        }
        Err(e) => Err(e.into()),
    }
}
