//! `/api/v1/pools` changes and `/api/v1/networks` (list, create, start/stop/autostart,
//! remove): the same admin-only, audited operations as the Storage and Libvirt networks
//! pages.

use super::errors::{ApiError, AppError};
use super::kit::{answer, csrf_header};
use super::openapi::{
    BodyErrors, ChangeErrors, NetworkActionName, PoolActionName, RoleReadErrors, TAG_NETWORKS,
    TAG_STORAGE,
};
use super::session::Authed;
use super::{lc, AppState};
use crate::auth::Role;
use crate::domain::libvirt_network::NetworkRequest;
use crate::domain::storage::{PoolRequest, PoolStatus};
use crate::lifecycle::storage::{
    self as host, NetworkAction, NetworkRemoved, NetworkView, PoolAction, PoolDeleted,
};
use crate::service;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// One pool with its state, autostart and capacity.
async fn pool_answer(
    state: &web::Data<AppState>,
    name: String,
    created: bool,
) -> Result<HttpResponse, AppError> {
    let pool = lc(state, move |s| host::pool(s.hv.as_ref(), &name)).await?;
    let location = created.then(|| format!("/api/v1/pools/{}", pool.name));
    Ok(shown(location, pool))
}

/// `200` with `body`, or `201` with it and `Location` when something was just made.
fn shown(created_at: Option<String>, body: impl Serialize) -> HttpResponse {
    match created_at {
        Some(location) => HttpResponse::Created()
            .insert_header(("location", location))
            .json(body),
        None => HttpResponse::Ok().json(body),
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/pools",
    operation_id = "define_pool",
    tag = TAG_STORAGE,
    summary = "Define a storage pool",
    description = "Role: admin. A directory, LVM volume group (existing, or built on devices \
        after `confirm_wipe` repeats its name) or NFS pool; built, started and (by default) \
        autostarted. Any failed step undoes the earlier ones.",
    request_body = PoolRequest,
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 201, description = "The new pool.", body = PoolStatus,
            headers(("Location" = String, description = "`/api/v1/pools/{name}`"))),
        (status = 409, description = "The pool cannot be defined now.", body = ApiError),
        (status = 422, description = "Bad input (`invalid`), with `errors`.", body = ApiError),
        (status = 502, description = "A libvirt step failed; earlier steps were undone.",
            body = ApiError),
        ChangeErrors, BodyErrors
    )
)]
pub async fn define_pool(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    body: web::Json<PoolRequest>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let r = service::storage::define_pool(&state.svc, &who.caller(), body.into_inner()).await?;
    match r {
        Ok(d) => pool_answer(&state, d.name, true).await,
        Err(e) => answer::<()>(Err(e), |_| HttpResponse::Ok().finish()),
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/pools/{name}/{action}",
    operation_id = "pool_action",
    tag = TAG_STORAGE,
    summary = "Start, stop, refresh or (un)autostart a pool",
    description = "Role: admin. Answers the pool after the action.",
    params(
        ("name" = String, Path, description = "The pool's name."),
        ("action" = PoolActionName, Path, description = "What to do.")
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "The pool.", body = PoolStatus),
        (status = 404, description = "There is no such pool or action.", body = ApiError),
        (status = 409, description = "The pool's state does not allow it (e.g. VMs use it).",
            body = ApiError),
        (status = 502, description = "libvirt refused the action.", body = ApiError),
        ChangeErrors
    )
)]
pub async fn pool_action(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let (name, action) = path.into_inner();
    let action = PoolAction::parse(&action).ok_or_else(|| {
        AppError::not_found(
            "There is no such pool action: use start, stop, refresh, autostart or no-autostart.",
        )
    })?;
    let r = service::storage::pool_action(&state.svc, &who.caller(), &name, action).await?;
    if let Err(e) = r {
        return answer::<()>(Err(e), |_| HttpResponse::Ok().finish());
    }
    pool_answer(&state, name, false).await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeletePoolQuery {
    /// Delete every volume in the pool and its directory (or volume group) too.
    #[serde(default)]
    delete_contents: bool,
}

#[utoipa::path(
    delete,
    path = "/api/v1/pools/{name}",
    operation_id = "delete_pool",
    tag = TAG_STORAGE,
    summary = "Remove a storage pool",
    description = "Role: admin. Stops and undefines the pool; with `delete_contents=true` \
        deletes its volumes and its directory or volume group too. Refused while VMs use it.",
    params(("name" = String, Path, description = "The pool's name."), DeletePoolQuery),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "What was removed.", body = PoolDeleted),
        (status = 404, description = "There is no such pool.", body = ApiError),
        (status = 409, description = "VMs use the pool.", body = ApiError),
        (status = 502, description = "libvirt refused a step.", body = ApiError),
        ChangeErrors, BodyErrors
    )
)]
pub async fn delete_pool(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    q: web::Query<DeletePoolQuery>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let r = service::storage::delete_pool(
        &state.svc,
        &who.caller(),
        &path.into_inner(),
        q.delete_contents,
    )
    .await?;
    answer(r, |d| HttpResponse::Ok().json(d))
}

/// The volumes of one pool.
#[derive(Serialize, ToSchema)]
pub struct VolumeList {
    pool: String,
    volumes: Vec<crate::domain::storage::PoolVolume>,
}

#[utoipa::path(
    get,
    path = "/api/v1/pools/{pool}/volumes",
    operation_id = "list_volumes",
    tag = TAG_STORAGE,
    summary = "List a pool's volumes",
    description = "Role: admin.",
    params(("pool" = String, Path, description = "The pool's name.")),
    responses(
        (status = 200, description = "The volumes.", body = VolumeList),
        (status = 404, description = "There is no such pool.", body = ApiError),
        RoleReadErrors
    )
)]
pub async fn pool_volumes(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let name = path.into_inner();
    who.require(&state, Role::Admin, "storage.view", &name)
        .await?;
    let n = name.clone();
    let volumes = lc(&state, move |s| {
        host::pool(s.hv.as_ref(), &n)?;
        Ok(s.hv.pool_volumes(&n)?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(VolumeList {
        pool: name,
        volumes,
    }))
}

/// Every libvirt network.
#[derive(Serialize, ToSchema)]
pub struct NetworkList {
    networks: Vec<host::NetworkView>,
}

#[utoipa::path(
    get,
    path = "/api/v1/networks",
    operation_id = "list_networks",
    tag = TAG_NETWORKS,
    summary = "List libvirt networks",
    description = "Role: admin. Each network with its state, addresses, DHCP range and the VMs \
        with a NIC on it.",
    responses((status = 200, description = "The networks.", body = NetworkList), RoleReadErrors)
)]
pub async fn networks(state: web::Data<AppState>, who: Authed) -> Result<HttpResponse, AppError> {
    who.require(&state, Role::Admin, "networks.view", "")
        .await?;
    let networks = lc(&state, |s| host::networks(s.hv.as_ref())).await?;
    Ok(HttpResponse::Ok().json(NetworkList { networks }))
}

#[utoipa::path(
    delete,
    path = "/api/v1/networks/{name}",
    operation_id = "delete_network",
    tag = TAG_NETWORKS,
    summary = "Remove a libvirt network",
    description = "Role: admin. NAT and isolated networks only (not a host bridge's); VMs \
        with a NIC on it keep the NIC, without a network.",
    params(("name" = String, Path, description = "The network's name.")),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "What was removed.", body = NetworkRemoved),
        (status = 404, description = "There is no such network.", body = ApiError),
        (status = 409, description = "The network cannot be removed.", body = ApiError),
        (status = 502, description = "libvirt refused a step.", body = ApiError),
        ChangeErrors
    )
)]
pub async fn remove_network(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let r = service::storage::remove_network(&state.svc, &who.caller(), &path.into_inner()).await?;
    answer(r, |d| HttpResponse::Ok().json(d))
}

/// One network as the list shows it.
async fn network_answer(
    state: &web::Data<AppState>,
    name: String,
    created: bool,
) -> Result<HttpResponse, AppError> {
    let network = lc(state, move |s| host::network(s.hv.as_ref(), &name)).await?;
    let location = created.then(|| format!("/api/v1/networks/{}", network.network.name));
    Ok(shown(location, network))
}

#[utoipa::path(
    get,
    path = "/api/v1/networks/{name}",
    operation_id = "get_network",
    tag = TAG_NETWORKS,
    summary = "One libvirt network",
    description = "Role: admin.",
    params(("name" = String, Path, description = "The network's name.")),
    responses(
        (status = 200, description = "The network.", body = NetworkView),
        (status = 404, description = "There is no such network.", body = ApiError),
        RoleReadErrors
    )
)]
pub async fn network(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let name = path.into_inner();
    who.require(&state, Role::Admin, "networks.view", &name)
        .await?;
    network_answer(&state, name, false).await
}

#[utoipa::path(
    post,
    path = "/api/v1/networks",
    operation_id = "create_network",
    tag = TAG_NETWORKS,
    summary = "Create a libvirt network",
    description = "Role: admin. A NAT or isolated network with an address, a prefix and an \
        optional DHCP range; started and (by default) autostarted.",
    request_body = NetworkRequest,
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 201, description = "The new network.", body = NetworkView,
            headers(("Location" = String, description = "`/api/v1/networks/{name}`"))),
        (status = 409, description = "The network cannot be created now.", body = ApiError),
        (status = 422, description = "Bad input (`invalid`), with `errors`.", body = ApiError),
        (status = 502, description = "A libvirt step failed; earlier steps were undone.",
            body = ApiError),
        ChangeErrors, BodyErrors
    )
)]
pub async fn create_network(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    body: web::Json<NetworkRequest>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let r = service::storage::create_network(&state.svc, &who.caller(), body.into_inner()).await?;
    match r {
        Ok(c) => network_answer(&state, c.name, true).await,
        Err(e) => answer::<()>(Err(e), |_| HttpResponse::Ok().finish()),
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/networks/{name}/{action}",
    operation_id = "network_action",
    tag = TAG_NETWORKS,
    summary = "Start, stop or (un)autostart a libvirt network",
    description = "Role: admin. Answers the network after the action.",
    params(
        ("name" = String, Path, description = "The network's name."),
        ("action" = NetworkActionName, Path, description = "What to do.")
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "The network.", body = NetworkView),
        (status = 404, description = "There is no such network or action.", body = ApiError),
        (status = 409, description = "The network's state does not allow it.", body = ApiError),
        (status = 502, description = "libvirt refused the action.", body = ApiError),
        ChangeErrors
    )
)]
pub async fn network_action(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let (name, action) = path.into_inner();
    let action = NetworkAction::parse(&action).ok_or_else(|| {
        AppError::not_found(
            "There is no such network action: use start, stop, autostart or no-autostart.",
        )
    })?;
    let r = service::storage::network_action(&state.svc, &who.caller(), &name, action).await?;
    if let Err(e) = r {
        return answer::<()>(Err(e), |_| HttpResponse::Ok().finish());
    }
    network_answer(&state, name, false).await
}
