//! `/api/v1/pools` changes and `/api/v1/networks` (list, create, start/stop/autostart,
//! remove): the same admin-only, audited operations as the Storage and Libvirt networks
//! pages.

use super::errors::AppError;
use super::kit::{answer, csrf_header};
use super::session::Authed;
use super::{lc, AppState};
use crate::auth::Role;
use crate::domain::libvirt_network::NetworkRequest;
use crate::domain::storage::PoolRequest;
use crate::lifecycle::storage::{self as host, NetworkAction, PoolAction};
use crate::service;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

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

#[derive(Deserialize)]
pub struct DeletePoolQuery {
    #[serde(default)]
    delete_contents: bool,
}

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

#[derive(Serialize)]
struct VolumeList {
    pool: String,
    volumes: Vec<crate::domain::storage::PoolVolume>,
}

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

#[derive(Serialize)]
struct NetworkList {
    networks: Vec<host::NetworkView>,
}

pub async fn networks(state: web::Data<AppState>, who: Authed) -> Result<HttpResponse, AppError> {
    who.require(&state, Role::Admin, "networks.view", "")
        .await?;
    let networks = lc(&state, |s| host::networks(s.hv.as_ref())).await?;
    Ok(HttpResponse::Ok().json(NetworkList { networks }))
}

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
