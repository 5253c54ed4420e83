//! Host > Libvirt networks: the list, and removing a NAT network (such as libvirt's
//! `default`) after a confirm page that names the VMs using it. Admin only; the audited
//! removal is shared with the API.

use super::super::errors::{html, AppError};
use super::super::session::Authed;
use super::super::{lc, AppState};
use super::storage::{admin_change, see_other, CsrfForm, MessageQuery};
use super::Chrome;
use crate::auth::Role;
use crate::lifecycle::storage::{self as host, NetworkRemovePlan, NetworkRemoved, NetworkView};
use crate::lifecycle::{LcResult, LifecycleError};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;

pub async fn remove(
    state: &web::Data<AppState>,
    who: &Authed,
    name: &str,
) -> Result<LcResult<NetworkRemoved>, AppError> {
    let n = name.to_string();
    admin_change(
        state,
        who,
        "network.remove",
        name,
        move |s| host::remove_network(s.hv.as_ref(), &n),
        |r| {
            if r.vms_affected.is_empty() {
                "stopped and undefined; no VM used it".into()
            } else {
                format!(
                    "stopped and undefined; VMs that used it: {}",
                    r.vms_affected.join(", ")
                )
            }
        },
    )
    .await
}

#[derive(Template)]
#[template(path = "host_networks.html")]
struct NetworksPage {
    chrome: Chrome,
    networks: Vec<NetworkView>,
    message: Option<String>,
}

pub async fn networks_page(
    state: web::Data<AppState>,
    who: Authed,
    q: web::Query<MessageQuery>,
) -> Result<HttpResponse, AppError> {
    who.require(&state, Role::Admin, "networks.view", "")
        .await?;
    let networks = lc(&state, |s| host::networks(s.hv.as_ref())).await?;
    Ok(html(
        StatusCode::OK,
        &NetworksPage {
            chrome: Chrome::new(&who, "libvirt-networks"),
            networks,
            message: q.into_inner().message,
        },
    ))
}

#[derive(Template)]
#[template(path = "host_network_remove.html")]
struct RemovePage {
    chrome: Chrome,
    plan: NetworkRemovePlan,
    error: Option<String>,
}

async fn render_remove(
    state: &web::Data<AppState>,
    who: &Authed,
    name: String,
    status: StatusCode,
    error: Option<String>,
) -> Result<HttpResponse, AppError> {
    let plan = lc(state, move |s| {
        host::network_remove_plan(s.hv.as_ref(), &name)
    })
    .await?;
    Ok(html(
        status,
        &RemovePage {
            chrome: Chrome::new(who, "libvirt-networks"),
            plan,
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
    render_remove(&state, &who, name, StatusCode::OK, None).await
}

pub async fn remove_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let name = path.into_inner();
    match remove(&state, &who, &name).await? {
        Ok(r) => Ok(see_other(
            "/host/libvirt-networks",
            &format!("Network {} stopped and removed.", r.name),
        )),
        Err(LifecycleError::Failed { message }) => {
            render_remove(&state, &who, name, StatusCode::BAD_GATEWAY, Some(message)).await
        }
        Err(e) => Err(e.into()),
    }
}
