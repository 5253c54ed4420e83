//! The fleet over `/api/v1`: what peers call (`/api/v1/fleet/hello`, `/fleet/pair` with a
//! pairing code, `/api/v1/peer/*` with a peer credential) and what users call (fleet
//! hosts and VMs, invitations, pairing, unpairing).

use super::errors::{ApiError, AppError, ErrorKind};
use super::kit::{answer, csrf_header};
use super::openapi::{BodyErrors, ChangeErrors, PeerErrors, ReadErrors, TAG_FLEET, TAG_PEER};
use super::routes::RouteExt;
use super::session::{remote_addr, Authed, PeerAuthed};
use super::{lc, AppState};
use crate::domain::fleet::HostSummary;
use crate::domain::listing::ListQuery;
use crate::service::fleet::{
    self, Contact, FleetHost, FleetVm, Hello, Invitation, PairAnswer, PairRefused, PairRequest,
    SizeAsk, SizeFit,
};
use crate::service::migration::{self, ArrivalEnd, ArrivalPlan, ArrivalRequest, DrainStarted, Fit};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// An empty object: the call was done.
#[derive(Serialize, ToSchema)]
pub struct Empty {}

/// Every host of the fleet: this one first (asked now), then every peer from the cache.
#[derive(Serialize, ToSchema)]
pub struct FleetHosts {
    hosts: Vec<FleetHost>,
}

/// One page of the fleet's VMs, filtered like the local list.
#[derive(Serialize, ToSchema)]
pub struct FleetVms {
    vms: Vec<FleetVm>,
    /// This page's number (1-based).
    page: usize,
    pages: usize,
    /// VMs that match the filter, on every page.
    matching: usize,
}

/// What unpairing did.
#[derive(Serialize, ToSchema)]
pub struct Unpaired {
    /// Whether the peer was told, in a sentence.
    detail: String,
}

/// A migration that started.
#[derive(Serialize, ToSchema)]
pub struct MigrationStarted {
    /// The job's id (`/api/v1/jobs/{id}`).
    job: i64,
    vm: String,
    /// The destination peer.
    to: String,
}

/// Where a VM of the asked size fits, by each host's own rule.
#[derive(Serialize, ToSchema)]
pub struct FitHosts {
    hosts: Vec<SizeFit>,
}

/// The drain has ended.
#[derive(Serialize, ToSchema)]
pub struct DrainEnded {
    /// Always false.
    draining: bool,
}

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
#[utoipa::path(
    get,
    path = "/api/v1/fleet/hello",
    operation_id = "fleet_hello",
    tag = TAG_PEER,
    summary = "A host's fleet name",
    description = "No authentication. The host's fleet name and version; a first contact shows \
        them with the host's certificate. No secret in it.",
    security(()),
    responses((status = 200, description = "The host.", body = Hello), (status = 500,
        description = "Something went wrong inside virtdeck.", body = ApiError))
)]
async fn hello(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(Hello {
        name: state.fleet_name(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// The invited side of a pairing: authenticated by the single-use code only.
#[utoipa::path(
    post,
    path = "/api/v1/fleet/pair",
    operation_id = "accept_pairing",
    tag = TAG_PEER,
    summary = "Accept a pairing (host to host)",
    description = "Authenticated by the single-use pairing code in the body only: the invited \
        host's side of a pairing. Answers the credential the asking host will present.",
    security(()),
    request_body = PairRequest,
    responses(
        (status = 200, description = "Paired.", body = PairAnswer),
        (status = 403, description = "A used, expired or mistyped code.", body = ApiError),
        (status = 409, description = "A peer of that name or address is paired already.",
            body = ApiError),
        (status = 422, description = "A bad name, URL or fingerprint.", body = ApiError),
        (status = 500, description = "Something went wrong inside virtdeck.", body = ApiError),
        BodyErrors
    )
)]
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

#[utoipa::path(
    get,
    path = "/api/v1/peer/summary",
    operation_id = "peer_summary",
    tag = TAG_PEER,
    summary = "This host's summary, for a peer",
    description = "Peer credential only. Name, versions, units and VMs, as the fleet view shows \
        them.",
    security(("peer" = [])),
    responses((status = 200, description = "The summary.", body = HostSummary), PeerErrors)
)]
async fn peer_summary(
    state: web::Data<AppState>,
    _peer: PeerAuthed,
) -> Result<HttpResponse, AppError> {
    let summary = lc(&state, |s| s.host_summary()).await?;
    Ok(HttpResponse::Ok().json(summary))
}

#[utoipa::path(
    post,
    path = "/api/v1/peer/unpair",
    operation_id = "peer_unpair",
    tag = TAG_PEER,
    summary = "A peer unpairs",
    description = "Peer credential only. The calling peer is removed here; its credential stops \
        working.",
    security(("peer" = [])),
    responses((status = 200, description = "Unpaired.", body = Empty), PeerErrors)
)]
async fn peer_unpair(
    req: HttpRequest,
    state: web::Data<AppState>,
    peer: PeerAuthed,
) -> Result<HttpResponse, AppError> {
    fleet::peer_unpaired(&state.svc, peer.peer, &remote_addr(&req)).await?;
    Ok(HttpResponse::Ok().json(Empty {}))
}

#[utoipa::path(
    get,
    path = "/api/v1/fleet/hosts",
    operation_id = "list_fleet_hosts",
    tag = TAG_FLEET,
    summary = "The fleet's hosts",
    description = "Role: viewer. This host first (asked now), then every peer from the cache \
        (never waits for a peer), each with whether it answered and its summary.",
    responses((status = 200, description = "The hosts.", body = FleetHosts), ReadErrors)
)]
async fn hosts(state: web::Data<AppState>, _who: Authed) -> Result<HttpResponse, AppError> {
    let hosts = lc(&state, |s| fleet::fleet_hosts(s)).await?;
    Ok(HttpResponse::Ok().json(FleetHosts { hosts }))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(default)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Part of the name, matched without regard to case.
    search: String,
    /// `running`, `shut_off`, … (as in the VM list); empty for all.
    state: String,
    /// 1-based; out-of-range pages show the nearest page.
    page: String,
    /// VMs per page (one of the choices the list offers).
    per_page: String,
}

#[utoipa::path(
    get,
    path = "/api/v1/fleet/vms",
    operation_id = "list_fleet_vms",
    tag = TAG_FLEET,
    summary = "The fleet's VMs",
    description = "Role: viewer. The VMs of every host that answered, filtered and paged like \
        the local list; `url` is the VM's page on its own host.",
    params(ListParams),
    responses((status = 200, description = "One page of VMs.", body = FleetVms), ReadErrors,
        BodyErrors)
)]
async fn vms(
    state: web::Data<AppState>,
    _who: Authed,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, AppError> {
    let p = params.into_inner();
    let query = ListQuery::from_params(&p.search, &p.state, &p.page, &p.per_page);
    let hosts = lc(&state, |s| fleet::fleet_hosts(s)).await?;
    let (rows, page) = fleet::fleet_vms(&hosts, &query);
    Ok(HttpResponse::Ok().json(FleetVms {
        vms: rows,
        page: page.number,
        pages: page.pages,
        matching: page.matching,
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/fleet/invitations",
    operation_id = "create_invitation",
    tag = TAG_FLEET,
    summary = "Invite a peer",
    description = "Role: admin. A single-use pairing code for another host's admin, with this \
        host's name and certificate fingerprint, shown once.",
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 201, description = "The invitation.", body = Invitation),
        ChangeErrors
    )
)]
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

/// The address of a host to pair with.
#[derive(Debug, Deserialize, ToSchema)]
struct CheckBody {
    url: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/fleet/peers/check",
    operation_id = "check_peer",
    tag = TAG_FLEET,
    summary = "First contact with a host",
    description = "Role: admin. What the host at `url` shows: its name, certificate \
        fingerprint and version. Nothing is sent to it but a GET of `/api/v1/fleet/hello`.",
    request_body = CheckBody,
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "What the host shows.", body = Contact),
        (status = 422, description = "A bad URL (`field: url`).", body = ApiError),
        (status = 502, description = "The host did not answer as a virtdeck host.",
            body = ApiError),
        ChangeErrors, BodyErrors
    )
)]
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

/// A pairing, with the fingerprint the check showed and the admin confirmed.
#[derive(Debug, Deserialize, ToSchema)]
struct PairBody {
    url: String,
    code: String,
    /// The fingerprint the check showed, confirmed by the admin.
    fingerprint: String,
}

/// A paired peer.
#[derive(Serialize, ToSchema)]
struct PeerOut {
    name: String,
    url: String,
    fingerprint: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/fleet/peers",
    operation_id = "pair_peer",
    tag = TAG_FLEET,
    summary = "Pair with a host",
    description = "Role: admin. Pairs with the host at `url` using its admin's pairing code, \
        pinning `fingerprint` (from the check, confirmed by the admin); a host showing another \
        certificate is refused before anything is sent.",
    request_body = PairBody,
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 201, description = "The peer.", body = PeerOut,
            headers(("Location" = String, description = "`/api/v1/fleet/peers/{name}`"))),
        (status = 409, description = "Paired already.", body = ApiError),
        (status = 422, description = "A used, expired or mistyped code (`field: code`), or a \
            bad URL.", body = ApiError),
        (status = 502, description = "The host showed another certificate or did not answer.",
            body = ApiError),
        ChangeErrors, BodyErrors
    )
)]
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

#[utoipa::path(
    delete,
    path = "/api/v1/fleet/peers/{name}",
    operation_id = "unpair_peer",
    tag = TAG_FLEET,
    summary = "Unpair a peer",
    description = "Role: admin. Unpairs on both hosts: the peer is told; if it cannot be, its \
        credential stops working here anyway.",
    params(("name" = String, Path, description = "The peer's name.")),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "Unpaired.", body = Unpaired),
        (status = 404, description = "There is no such peer.", body = ApiError),
        (status = 409, description = "A migration with the peer runs.", body = ApiError),
        ChangeErrors
    )
)]
async fn unpair(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    answer(
        fleet::unpair(&state.svc, &who.caller(), &path.into_inner()).await?,
        |detail| HttpResponse::Ok().json(Unpaired { detail }),
    )
}

#[utoipa::path(
    post,
    path = "/api/v1/peer/fit",
    operation_id = "peer_fit",
    tag = TAG_PEER,
    summary = "Whether a VM can come here",
    description = "Peer credential only. The destination's answer before a migration: its \
        reasons when the VM does not fit (name, units, networks, bridges, machine type, boot \
        files, pool space).",
    request_body = ArrivalRequest,
    security(("peer" = [])),
    responses((status = 200, description = "The fit.", body = Fit), PeerErrors, BodyErrors)
)]
async fn peer_fit(
    state: web::Data<AppState>,
    _peer: PeerAuthed,
    body: web::Json<ArrivalRequest>,
) -> Result<HttpResponse, AppError> {
    let req = body.into_inner();
    let fit = lc(&state, move |s| migration::fit(s, &req.needs, req.running)).await?;
    Ok(HttpResponse::Ok().json(fit))
}

#[utoipa::path(
    post,
    path = "/api/v1/peer/arrivals",
    operation_id = "peer_arrival",
    tag = TAG_PEER,
    summary = "Hold a migrating VM's place",
    description = "Peer credential only. Holds the VM's units here and makes the volumes \
        QEMU copies its non-shared disks into; answers where libvirt is reached.",
    request_body = ArrivalRequest,
    security(("peer" = [])),
    responses(
        (status = 201, description = "The arrival's plan.", body = ArrivalPlan),
        (status = 409, description = "The VM does not fit here.", body = ApiError),
        (status = 502, description = "A volume could not be made.", body = ApiError),
        PeerErrors, BodyErrors
    )
)]
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

#[utoipa::path(
    post,
    path = "/api/v1/peer/arrivals/{name}/end",
    operation_id = "peer_arrival_end",
    tag = TAG_PEER,
    summary = "How a migration ended",
    description = "Peer credential only. The source says how the move ended: the arrival is \
        kept as the VM's row, or released with the volumes made for it.",
    params(("name" = String, Path, description = "The VM's name.")),
    request_body = ArrivalEnd,
    security(("peer" = [])),
    responses(
        (status = 200, description = "Settled.", body = Empty),
        (status = 404, description = "No such arrival from this peer.", body = ApiError),
        PeerErrors, BodyErrors
    )
)]
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
    Ok(HttpResponse::Ok().json(Empty {}))
}

/// Where to move a VM.
#[derive(Debug, Deserialize, ToSchema)]
struct MigrateBody {
    /// The destination peer's name.
    to: String,
    /// Move it running (default); false moves a shut-off VM's definition.
    #[serde(default = "live_by_default")]
    #[schema(default = true)]
    live: bool,
}

fn live_by_default() -> bool {
    true
}

/// `POST /api/v1/vms/{name}/migrate {"to": "peer", "live": true}` → 202 with the job.
#[utoipa::path(
    post,
    path = "/api/v1/vms/{name}/migrate",
    operation_id = "migrate_vm",
    tag = TAG_FLEET,
    summary = "Migrate a VM to a peer",
    description = "Role: operator. libvirt's live migration, peer to peer, with the units held \
        on the destination first; non-shared disks are copied by QEMU. The job's `step` shows \
        what is left, the speed and the expected downtime; cancelling the job aborts the move \
        (the VM keeps running here).",
    params(("name" = String, Path, description = "The VM's name.")),
    request_body = MigrateBody,
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 202, description = "The migration's job.", body = MigrationStarted,
            headers(("Location" = String, description = "`/api/v1/jobs/{id}`"))),
        (status = 404, description = "There is no such VM.", body = ApiError),
        (status = 409, description = "The destination's reasons (name taken, units, network, \
            bridge, machine type, boot files, pool space), before anything starts.",
            body = ApiError),
        (status = 422, description = "An unknown peer (`field: to`).", body = ApiError),
        (status = 502, description = "The peer could not be asked.", body = ApiError),
        ChangeErrors, BodyErrors
    )
)]
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
                .json(MigrationStarted {
                    job: job.id,
                    vm: job.vm,
                    to: job.source,
                })
        },
    )
}

#[utoipa::path(
    post,
    path = "/api/v1/peer/fit-size",
    operation_id = "peer_fit_size",
    tag = TAG_PEER,
    summary = "Whether a VM of a size fits here",
    description = "Peer credential only. Units a VM of this size takes here, free units, and \
        whether it fits.",
    request_body = SizeAsk,
    security(("peer" = [])),
    responses((status = 200, description = "The fit.", body = SizeFit), PeerErrors, BodyErrors)
)]
async fn peer_fit_size(
    state: web::Data<AppState>,
    _peer: PeerAuthed,
    body: web::Json<fleet::SizeAsk>,
) -> Result<HttpResponse, AppError> {
    let size = body.into_inner();
    let fit = lc(&state, move |s| fleet::fit_size_here(s, size)).await?;
    Ok(HttpResponse::Ok().json(fit))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(default)]
#[into_params(parameter_in = Query)]
struct FitParams {
    /// vCPUs of the VM to place.
    vcpus: String,
    /// Memory of the VM to place, in MiB.
    memory_mib: String,
}

/// `GET /api/v1/fleet/fit?vcpus=4&memory_mib=8192`: every host, by its own rule.
#[utoipa::path(
    get,
    path = "/api/v1/fleet/fit",
    operation_id = "fleet_fit",
    tag = TAG_FLEET,
    summary = "Where a VM of a size fits",
    description = "Role: viewer. Every host, by its own rule (hosts split units differently).",
    params(FitParams),
    responses(
        (status = 200, description = "Each host's fit.", body = FitHosts),
        (status = 422, description = "A bad size (`invalid`, with `errors`).", body = ApiError),
        ReadErrors, BodyErrors
    )
)]
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
    Ok(HttpResponse::Ok().json(FitHosts { hosts }))
}

#[utoipa::path(
    post,
    path = "/api/v1/fleet/drain",
    operation_id = "start_drain",
    tag = TAG_FLEET,
    summary = "Drain this host",
    description = "Role: admin. Moves every running VM to the peers where most units are free, \
        one migration job each.",
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 202, description = "The VMs it will try to move.", body = DrainStarted),
        (status = 409, description = "A drain runs already, or no peer can take the VMs.",
            body = ApiError),
        ChangeErrors
    )
)]
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

#[utoipa::path(
    delete,
    path = "/api/v1/fleet/drain",
    operation_id = "end_drain",
    tag = TAG_FLEET,
    summary = "Stop draining",
    description = "Role: admin. Starts no further migrations; running ones go on.",
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "The drain has ended.", body = DrainEnded),
        (status = 409, description = "No drain runs.", body = ApiError),
        ChangeErrors
    )
)]
async fn end_drain(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    answer(
        migration::end_drain(&state.svc, &who.caller()).await?,
        |()| HttpResponse::Ok().json(DrainEnded { draining: false }),
    )
}
