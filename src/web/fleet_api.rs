//! The fleet over `/api/v1`: what peers call (`/api/v1/fleet/hello`, `/fleet/pair` with a
//! pairing code, `/api/v1/peer/*` with a peer credential) and what users call (fleet
//! hosts and VMs, invitations, pairing, unpairing).

use super::errors::{AppError, ErrorKind};
use super::kit::{answer, csrf_header};
use super::routes::RouteExt;
use super::session::{remote_addr, Authed, PeerAuthed};
use super::{lc, AppState};
use crate::domain::listing::ListQuery;
use crate::service::fleet::{self, Hello, PairRefused, PairRequest};
use crate::service::migration::{self, ArrivalEnd, ArrivalRequest};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.get("/api/v1/fleet/hello", hello)
        .post("/api/v1/fleet/pair", accept_pairing)
        .get("/api/v1/peer/summary", peer_summary)
        .post("/api/v1/peer/unpair", peer_unpair)
        .get("/api/v1/fleet/hosts", hosts)
        .get("/api/v1/fleet/vms", vms)
        .post("/api/v1/fleet/invitations", invite)
        .post("/api/v1/fleet/peers/check", check_peer)
        .post("/api/v1/fleet/peers", pair)
        .delete("/api/v1/fleet/peers/{name}", unpair)
        .post("/api/v1/peer/fit", peer_fit)
        .post("/api/v1/peer/arrivals", peer_arrival)
        .post("/api/v1/peer/arrivals/{name}/end", peer_arrival_end)
        .post("/api/v1/vms/{name}/migrate", migrate)
        .post("/api/v1/peer/fit-size", peer_fit_size)
        .get("/api/v1/fleet/fit", where_fits)
        .post("/api/v1/fleet/drain", drain)
        .delete("/api/v1/fleet/drain", end_drain);
}

/// Anyone may ask a host its fleet name (a first contact shows it with the certificate).
async fn hello(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(Hello {
        name: state.fleet_name(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// The invited side of a pairing: authenticated by the single-use code only.
async fn accept_pairing(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<PairRequest>,
) -> Result<HttpResponse, AppError> {
    match fleet::accept_pairing(&state.svc, &remote_addr(&req), body.into_inner()).await {
        Ok(answer) => Ok(HttpResponse::Ok().json(answer)),
        Err(e @ PairRefused::Code) => Err(AppError::new(ErrorKind::Forbidden, e.to_string())),
        Err(e @ PairRefused::Invalid(_)) => {
            Err(AppError::new(ErrorKind::Unprocessable, e.to_string()))
        }
        Err(e @ PairRefused::Conflict(_)) => Err(AppError::new(ErrorKind::Conflict, e.to_string())),
        Err(PairRefused::Store(e)) => Err(AppError::internal(anyhow::anyhow!(e))),
    }
}

async fn peer_summary(
    state: web::Data<AppState>,
    _peer: PeerAuthed,
) -> Result<HttpResponse, AppError> {
    let summary = lc(&state, |s| s.host_summary()).await?;
    Ok(HttpResponse::Ok().json(summary))
}

async fn peer_unpair(
    req: HttpRequest,
    state: web::Data<AppState>,
    peer: PeerAuthed,
) -> Result<HttpResponse, AppError> {
    fleet::peer_unpaired(&state.svc, peer.peer, &remote_addr(&req)).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({})))
}

async fn hosts(state: web::Data<AppState>, _who: Authed) -> Result<HttpResponse, AppError> {
    let hosts = lc(&state, |s| fleet::fleet_hosts(s)).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "hosts": hosts })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ListParams {
    search: String,
    state: String,
    page: String,
    per_page: String,
}

async fn vms(
    state: web::Data<AppState>,
    _who: Authed,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, AppError> {
    let p = params.into_inner();
    let query = ListQuery::from_params(&p.search, &p.state, &p.page, &p.per_page);
    let hosts = lc(&state, |s| fleet::fleet_hosts(s)).await?;
    let (rows, page) = fleet::fleet_vms(&hosts, &query);
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "vms": rows,
        "page": page.number,
        "pages": page.pages,
        "matching": page.matching,
    })))
}

async fn invite(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    answer(fleet::invite(&state.svc, &who.caller()).await?, |i| {
        HttpResponse::Created().json(i)
    })
}

#[derive(Debug, Deserialize)]
struct CheckBody {
    url: String,
}

async fn check_peer(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    body: web::Json<CheckBody>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    answer(
        fleet::first_contact(&state.svc, &who.caller(), &body.url).await?,
        |c| HttpResponse::Ok().json(c),
    )
}

#[derive(Debug, Deserialize)]
struct PairBody {
    url: String,
    code: String,
    /// The fingerprint the check showed, confirmed by the admin.
    fingerprint: String,
}

#[derive(Serialize)]
struct PeerOut {
    name: String,
    url: String,
    fingerprint: String,
}

async fn pair(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    body: web::Json<PairBody>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let b = body.into_inner();
    let paired = fleet::pair(&state.svc, &who.caller(), &b.url, &b.code, &b.fingerprint)
        .await?
        .map(|p| PeerOut {
            name: p.name,
            url: p.url,
            fingerprint: p.fingerprint_sha256,
        });
    answer(paired, |p| {
        HttpResponse::Created()
            .insert_header(("location", format!("/api/v1/fleet/peers/{}", p.name)))
            .json(p)
    })
}

async fn unpair(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    answer(
        fleet::unpair(&state.svc, &who.caller(), &path.into_inner()).await?,
        |told| HttpResponse::Ok().json(serde_json::json!({ "detail": told })),
    )
}

async fn peer_fit(
    state: web::Data<AppState>,
    _peer: PeerAuthed,
    body: web::Json<ArrivalRequest>,
) -> Result<HttpResponse, AppError> {
    let req = body.into_inner();
    let fit = lc(&state, move |s| migration::fit(s, &req.needs, req.running)).await?;
    Ok(HttpResponse::Ok().json(fit))
}

async fn peer_arrival(
    state: web::Data<AppState>,
    peer: PeerAuthed,
    body: web::Json<ArrivalRequest>,
) -> Result<HttpResponse, AppError> {
    let req = body.into_inner();
    let plan = lc(&state, move |s| {
        migration::receive(s, &peer.peer, &peer.remote_addr, &req)
    })
    .await?;
    Ok(HttpResponse::Created().json(plan))
}

async fn peer_arrival_end(
    state: web::Data<AppState>,
    peer: PeerAuthed,
    path: web::Path<String>,
    body: web::Json<ArrivalEnd>,
) -> Result<HttpResponse, AppError> {
    let (name, end) = (path.into_inner(), body.into_inner());
    lc(&state, move |s| {
        migration::arrival_ended(s, &peer.peer, &peer.remote_addr, &name, &end)
    })
    .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({})))
}

#[derive(Debug, Deserialize)]
struct MigrateBody {
    to: String,
    #[serde(default = "live_by_default")]
    live: bool,
}

fn live_by_default() -> bool {
    true
}

/// `POST /api/v1/vms/{name}/migrate {"to": "peer", "live": true}` → 202 with the job.
async fn migrate(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    body: web::Json<MigrateBody>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let b = body.into_inner();
    answer(
        migration::migrate(&state.svc, &who.caller(), &path.into_inner(), &b.to, b.live).await?,
        |job| {
            HttpResponse::Accepted()
                .insert_header(("location", format!("/api/v1/jobs/{}", job.id)))
                .json(serde_json::json!({ "job": job.id, "vm": job.vm, "to": job.source }))
        },
    )
}

async fn peer_fit_size(
    state: web::Data<AppState>,
    _peer: PeerAuthed,
    body: web::Json<fleet::SizeAsk>,
) -> Result<HttpResponse, AppError> {
    let size = body.into_inner();
    let fit = lc(&state, move |s| fleet::fit_size_here(s, size)).await?;
    Ok(HttpResponse::Ok().json(fit))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FitParams {
    vcpus: String,
    memory_mib: String,
}

/// `GET /api/v1/fleet/fit?vcpus=4&memory_mib=8192`: every host, by its own rule.
async fn where_fits(
    state: web::Data<AppState>,
    _who: Authed,
    params: web::Query<FitParams>,
) -> Result<HttpResponse, AppError> {
    let size = match fleet::SizeAsk::parse(&params.vcpus, &params.memory_mib) {
        Ok(s) => s,
        Err(errors) => return Ok(super::kit::invalid(&errors)),
    };
    let hosts = lc(&state, move |s| fleet::where_fits(s, size)).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "hosts": hosts })))
}

async fn drain(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    answer(migration::drain(&state.svc, &who.caller()).await?, |d| {
        HttpResponse::Accepted().json(d)
    })
}

async fn end_drain(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    answer(
        migration::end_drain(&state.svc, &who.caller()).await?,
        |()| HttpResponse::Ok().json(serde_json::json!({ "draining": false })),
    )
}
