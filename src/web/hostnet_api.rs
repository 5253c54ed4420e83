//! `/api/v1/host/…`: host network and kernel settings plans, apply, confirm, roll back.
//! Same roles (admin), audit entries and rules as the pages.

use super::errors::{ApiError, ApiErrorDetail, ApiFieldError, AppError, ErrorCode};
use super::kit::{csrf_header, engine};
use super::openapi::{BodyErrors, ChangeErrors, RoleReadErrors, TAG_HOST_NETWORK};
use super::session::Authed;
use super::AppState;
use crate::auth::Role;
use crate::domain::hostnet::form::NetForm;
use crate::domain::hostnet::plan::LiveNet;
use crate::domain::hostnet::{Backend, NetConfig};
use crate::domain::sysctl::SysctlForm;
use crate::hostcfg::sysctl::SettingView;
use crate::hostcfg::{ChangeError, Outcome, PendingView, Plan};
use crate::service;
use crate::web::routes::RouteExt;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

/// A change error in JSON; field errors list every field.
fn api_error(e: ChangeError) -> HttpResponse {
    if let ChangeError::Invalid(errs) = &e {
        let first = errs.first();
        return HttpResponse::UnprocessableEntity().json(ApiError {
            error: ApiErrorDetail {
                code: ErrorCode::Invalid,
                message: first.map(|f| f.message.clone()).unwrap_or_default(),
                field: first.map(|f| f.field.to_string()),
                libvirt_code: None,
                errors: None,
                fields: Some(
                    errs.iter()
                        .map(|f| ApiFieldError::of(f.field, &f.message))
                        .collect(),
                ),
            },
        });
    }
    AppError::from(e).json_response()
}

/// A plan as shown before it is applied, with its live steps in words.
#[derive(Serialize, ToSchema)]
pub struct PlanAnswer {
    plan: Plan,
    /// The live changes, in the words the plan page shows.
    steps: Vec<String>,
}

fn plan_json(p: Plan) -> PlanAnswer {
    PlanAnswer {
        steps: p.op_texts(),
        plan: p,
    }
}

/// The host's network: live (links, addresses, routes), what virtdeck manages, the
/// configuration backend and the change waiting for confirmation.
#[derive(Serialize, ToSchema)]
pub struct HostNetwork {
    live: LiveNet,
    managed: NetConfig,
    backend: Backend,
    pending: Option<PendingView>,
}

/// The kernel settings virtdeck knows and manages.
#[derive(Serialize, ToSchema)]
pub struct SysctlSettings {
    settings: Vec<SettingView>,
}

/// The change now waiting for confirmation.
#[derive(Serialize, ToSchema)]
pub struct Applied {
    pending: PendingView,
}

/// The change waiting for confirmation, if any, and how the last one ended.
#[derive(Serialize, ToSchema)]
pub struct PendingChange {
    pending: Option<PendingView>,
    last: Option<Outcome>,
}

/// How a confirmed or rolled back change ended.
#[derive(Serialize, ToSchema)]
pub struct ChangeOutcome {
    outcome: Outcome,
}

#[utoipa::path(
    get,
    path = "/api/v1/host/network",
    operation_id = "get_host_network",
    tag = TAG_HOST_NETWORK,
    summary = "The host's network",
    description = "Role: admin. Live links, addresses and routes, the bonds, bridges and VLANs \
        virtdeck manages, the configuration backend, and the change waiting for confirmation.",
    responses(
        (status = 200, description = "The host's network.", body = HostNetwork),
        RoleReadErrors
    )
)]
pub async fn network(state: web::Data<AppState>, who: Authed) -> Result<HttpResponse, AppError> {
    who.require(&state, Role::Admin, "host.network.view", "")
        .await?;
    let r = engine(&state, |e| {
        Ok((e.live()?, e.managed()?, e.detected_backend()))
    })
    .await;
    match r {
        Ok((live, managed, backend)) => Ok(HttpResponse::Ok().json(HostNetwork {
            live,
            managed: managed.network,
            backend,
            pending: state.host.pending(),
        })),
        Err(e) => Ok(api_error(e)),
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/host/network/plan",
    operation_id = "plan_host_network",
    tag = TAG_HOST_NETWORK,
    summary = "Plan a host network change",
    description = "Role: admin. A bond, bridge, VLAN, the bond + bridge recipe, or a delete, \
        as the Host network form takes it (every field text). Answers the plan: every file \
        with its diff and every live step; nothing is changed until it is applied. Unknown \
        fields are refused.",
    request_body = NetForm,
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "The plan.", body = PlanAnswer),
        (status = 409, description = "Another change waits for confirmation.", body = ApiError),
        (status = 422, description = "Bad input (`invalid`): `field` and `fields` (every \
            problem).", body = ApiError),
        ChangeErrors, BodyErrors
    )
)]
pub async fn network_plan(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    body: web::Json<NetForm>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    Ok(
        match service::host::plan_network(&state.svc, &who.caller(), body.into_inner()).await? {
            Ok(p) => HttpResponse::Ok().json(plan_json(p)),
            Err(e) => api_error(e),
        },
    )
}

#[utoipa::path(
    get,
    path = "/api/v1/host/sysctl",
    operation_id = "get_sysctl",
    tag = TAG_HOST_NETWORK,
    summary = "Kernel settings",
    description = "Role: admin. The kernel settings virtdeck knows (recommended values) and \
        those it manages, with their live values.",
    responses(
        (status = 200, description = "The settings.", body = SysctlSettings),
        RoleReadErrors
    )
)]
pub async fn sysctl(state: web::Data<AppState>, who: Authed) -> Result<HttpResponse, AppError> {
    who.require(&state, Role::Admin, "host.sysctl.view", "")
        .await?;
    Ok(match engine(&state, |e| e.sysctl_view()).await {
        Ok(settings) => HttpResponse::Ok().json(SysctlSettings { settings }),
        Err(e) => api_error(e),
    })
}

#[utoipa::path(
    post,
    path = "/api/v1/host/sysctl/plan",
    operation_id = "plan_sysctl",
    tag = TAG_HOST_NETWORK,
    summary = "Plan a kernel settings change",
    description = "Role: admin. `set` a key to a value, `remove` a managed key, or apply the \
        `recommended` values. Answers the plan.",
    request_body = SysctlForm,
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "The plan.", body = PlanAnswer),
        (status = 409, description = "Another change waits for confirmation.", body = ApiError),
        (status = 422, description = "An unknown or read-only key, or a bad value \
            (`invalid`, with `fields`).", body = ApiError),
        ChangeErrors, BodyErrors
    )
)]
pub async fn sysctl_plan(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    body: web::Json<SysctlForm>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    Ok(
        match service::host::plan_sysctl(&state.svc, &who.caller(), body.into_inner()).await? {
            Ok(p) => HttpResponse::Ok().json(plan_json(p)),
            Err(e) => api_error(e),
        },
    )
}

#[utoipa::path(
    post,
    path = "/api/v1/host/changes/{id}/apply",
    operation_id = "apply_change",
    tag = TAG_HOST_NETWORK,
    summary = "Apply a plan",
    description = "Role: admin. Writes the plan's files and makes its live changes; the change \
        must then be confirmed (from the new network) before its deadline, or it is rolled \
        back by itself. A step that fails undoes everything done before it.",
    params(("id" = String, Path, description = "The plan's id.")),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "The change, waiting for confirmation.", body = Applied),
        (status = 404, description = "An unknown or used plan.", body = ApiError),
        (status = 409, description = "Another change waits, or the host changed since the \
            plan was made (build it again).", body = ApiError),
        (status = 502, description = "A step failed; everything done before it was undone.",
            body = ApiError),
        ChangeErrors
    )
)]
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
            Ok(pending) => HttpResponse::Ok().json(Applied { pending }),
            Err(e) => api_error(e),
        },
    )
}

#[utoipa::path(
    get,
    path = "/api/v1/host/changes/pending",
    operation_id = "get_pending_change",
    tag = TAG_HOST_NETWORK,
    summary = "The change waiting for confirmation",
    description = "Role: admin. The applied change waiting for confirmation (null when none), \
        and how the last one ended.",
    responses(
        (status = 200, description = "The pending change.", body = PendingChange),
        RoleReadErrors
    )
)]
pub async fn pending(state: web::Data<AppState>, who: Authed) -> Result<HttpResponse, AppError> {
    who.require(&state, Role::Admin, "host.change.view", "")
        .await?;
    Ok(HttpResponse::Ok().json(PendingChange {
        pending: state.host.pending(),
        last: state.host.last_outcome(),
    }))
}

#[derive(serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConfirmQuery {
    /// Confirm a change applied from another sign-in (session or API token).
    #[serde(default)]
    other_sign_in: bool,
}

#[utoipa::path(
    post,
    path = "/api/v1/host/changes/confirm",
    operation_id = "confirm_change",
    tag = TAG_HOST_NETWORK,
    summary = "Confirm the applied change",
    description = "Role: admin. Keeps the change. A change applied from another sign-in needs \
        `other_sign_in=true`.",
    params(ConfirmQuery),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "How the change ended.", body = ChangeOutcome),
        (status = 409, description = "There is nothing to confirm, or it was applied from \
            another sign-in.", body = ApiError),
        ChangeErrors, BodyErrors
    )
)]
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
            Ok(outcome) => HttpResponse::Ok().json(ChangeOutcome { outcome }),
            Err(e) => api_error(e),
        },
    )
}

#[utoipa::path(
    post,
    path = "/api/v1/host/changes/rollback",
    operation_id = "rollback_change",
    tag = TAG_HOST_NETWORK,
    summary = "Roll back the applied change",
    description = "Role: admin. Restores the previous files and live state.",
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "How the change ended.", body = ChangeOutcome),
        (status = 409, description = "There is nothing to roll back.", body = ApiError),
        (status = 502, description = "A step of the rollback failed.", body = ApiError),
        ChangeErrors
    )
)]
pub async fn rollback(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    Ok(
        match service::host::rollback(&state.svc, &who.caller()).await? {
            Ok(outcome) => HttpResponse::Ok().json(ChangeOutcome { outcome }),
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
