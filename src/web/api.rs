//! `/api/v1`: JSON over the same port, same authentication, roles and audit.

use super::errors::AppError;
use super::session::Authed;
use super::{hv, AppState};
use crate::domain::host::{HostFacts, KvmStatus};
use crate::domain::vm::{VmCounts, VmSummary};
use actix_web::{web, HttpResponse};
use serde::Serialize;

#[derive(Serialize)]
struct WhoAmI<'a> {
    username: &'a str,
    role: crate::auth::Role,
    via: &'a str,
}

pub async fn whoami(who: Authed) -> HttpResponse {
    let via = match who.credential {
        super::session::Credential::Session { .. } => "session",
        super::session::Credential::ApiToken => "token",
    };
    HttpResponse::Ok().json(WhoAmI {
        username: &who.username,
        role: who.role,
        via,
    })
}

#[derive(Serialize)]
struct HostBody {
    host: HostFacts,
    kvm: KvmStatus,
    virt_type: Option<&'static str>,
    virt_type_error: Option<String>,
    vms: VmCounts,
}

pub async fn host(state: web::Data<AppState>, who: Authed) -> Result<HttpResponse, AppError> {
    let (facts, vms) = hv(&state, |h| Ok((h.host_facts()?, h.list_vms()?)))
        .await
        .map_err(|e| who.err(e))?;
    Ok(HttpResponse::Ok().json(HostBody {
        host: facts,
        kvm: state.hv.kvm_status(),
        virt_type: state.virt_type.as_ref().ok().map(|v| v.as_str()),
        virt_type_error: state.virt_type.as_ref().err().cloned(),
        vms: VmCounts::of(&vms),
    }))
}

#[derive(Serialize)]
struct VmList {
    vms: Vec<VmSummary>,
}

pub async fn vms(state: web::Data<AppState>, who: Authed) -> Result<HttpResponse, AppError> {
    let vms = hv(&state, |h| h.list_vms()).await.map_err(|e| who.err(e))?;
    Ok(HttpResponse::Ok().json(VmList { vms }))
}
