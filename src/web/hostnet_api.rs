//! `/api/v1/host/…`: host network and kernel settings plans, apply, confirm, roll back.
//! Same roles (admin), audit entries and rules as the pages.

use super::errors::AppError;
use super::kit::csrf_header;
use super::kit::engine;
use super::session::Authed;
use super::AppState;
use crate::auth::Role;
use crate::domain::hostnet::form::NetForm;
use crate::domain::sysctl::SysctlForm;
use crate::hostcfg::{ChangeError, Plan};
use crate::service;
use crate::web::routes::RouteExt;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

/// A change error in JSON; field errors list every field.
fn api_error(e: ChangeError) -> HttpResponse {
    if let ChangeError::Invalid(errs) = &e {
        let first = errs.first();
        return HttpResponse::UnprocessableEntity().json(json!({
            "error": {
                "code": "invalid",
                "message": first.map(|f| f.message.clone()).unwrap_or_default(),
                "field": first.map(|f| f.field),
                "fields": errs,
            }
        }));
    }
    AppError::from(e).json_response()
}

fn plan_json(p: &Plan) -> serde_json::Value {
    json!({ "plan": p, "steps": p.op_texts() })
}

pub async fn network(state: web::Data<AppState>, who: Authed) -> Result<HttpResponse, AppError> {
    who.require(&state, Role::Admin, "host.network.view", "")
        .await?;
    let r = engine(&state, |e| {
        Ok((e.live()?, e.managed()?, e.detected_backend()))
    })
    .await;
    match r {
        Ok((live, managed, backend)) => Ok(HttpResponse::Ok().json(json!({
            "live": live,
            "managed": managed.network,
            "backend": backend,
            "pending": state.host.pending(),
        }))),
        Err(e) => Ok(api_error(e)),
    }
}

pub async fn network_plan(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    body: web::Json<NetForm>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    Ok(
        match service::host::plan_network(&state.svc, &who.caller(), body.into_inner()).await? {
            Ok(p) => HttpResponse::Ok().json(plan_json(&p)),
            Err(e) => api_error(e),
        },
    )
}

pub async fn sysctl(state: web::Data<AppState>, who: Authed) -> Result<HttpResponse, AppError> {
    who.require(&state, Role::Admin, "host.sysctl.view", "")
        .await?;
    Ok(match engine(&state, |e| e.sysctl_view()).await {
        Ok(s) => HttpResponse::Ok().json(json!({ "settings": s })),
        Err(e) => api_error(e),
    })
}

pub async fn sysctl_plan(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    body: web::Json<SysctlForm>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    Ok(
        match service::host::plan_sysctl(&state.svc, &who.caller(), body.into_inner()).await? {
            Ok(p) => HttpResponse::Ok().json(plan_json(&p)),
            Err(e) => api_error(e),
        },
    )
}

pub async fn apply(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    Ok(
        match service::host::apply(
            &state.svc,
            &who.caller(),
            path.into_inner(),
            who.credential_sha256.clone(),
        )
        .await?
        {
            Ok(p) => HttpResponse::Ok().json(json!({ "pending": p })),
            Err(e) => api_error(e),
        },
    )
}

pub async fn pending(state: web::Data<AppState>, who: Authed) -> Result<HttpResponse, AppError> {
    who.require(&state, Role::Admin, "host.change.view", "")
        .await?;
    Ok(HttpResponse::Ok().json(json!({
        "pending": state.host.pending(),
        "last": state.host.last_outcome(),
    })))
}

#[derive(serde::Deserialize)]
pub struct ConfirmQuery {
    /// Confirm a change applied from another sign-in (session or API token).
    #[serde(default)]
    other_sign_in: bool,
}

pub async fn confirm(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    q: web::Query<ConfirmQuery>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    Ok(
        match service::host::confirm(
            &state.svc,
            &who.caller(),
            who.credential_sha256.clone(),
            q.other_sign_in,
        )
        .await?
        {
            Ok(o) => HttpResponse::Ok().json(json!({ "outcome": o })),
            Err(e) => api_error(e),
        },
    )
}

pub async fn rollback(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    Ok(
        match service::host::rollback(&state.svc, &who.caller()).await? {
            Ok(o) => HttpResponse::Ok().json(json!({ "outcome": o })),
            Err(e) => api_error(e),
        },
    )
}

/// The `/api/v1/host/…` routes, inside the `/api/v1` scope.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.get("/host/network", network)
        .post("/host/network/plan", network_plan)
        .get("/host/sysctl", sysctl)
        .post("/host/sysctl/plan", sysctl_plan)
        .get("/host/changes/pending", pending)
        .post("/host/changes/confirm", confirm)
        .post("/host/changes/rollback", rollback)
        .post("/host/changes/{id}/apply", apply);
}
