//! `/api/v1`: JSON over the same port, same authentication, roles and audit.

use super::errors::{AppError, ErrorKind};
use super::kit::{answer, csrf_header, invalid};
use super::session::Authed;
use super::{hv, lc, AppState};
use crate::domain::host::{HostFacts, KvmStatus};
use crate::domain::vm::{VmAction, VmCounts};
use crate::lifecycle::{
    self, Capacity, CloneRequest, CreateVmRequest, LifecycleError, SizeRequest, SnapshotRequest,
    VmView,
};
use crate::service;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

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
    capacity: Option<Capacity>,
}

pub async fn host(state: web::Data<AppState>, _who: Authed) -> Result<HttpResponse, AppError> {
    let (facts, vms) = hv(&state, |h| Ok((h.host_facts()?, h.list_vms()?))).await?;
    let capacity = lc(&state, |s| {
        lifecycle::capacity(s.hv.as_ref(), &s.store, &s.lifecycle)
    })
    .await
    .ok();
    Ok(HttpResponse::Ok().json(HostBody {
        host: facts,
        kvm: state.hv.kvm_status(),
        virt_type: state.virt_type.as_ref().ok().map(|v| v.as_str()),
        virt_type_error: state.virt_type.as_ref().err().cloned(),
        vms: VmCounts::of(&vms),
        capacity,
    }))
}

#[derive(Serialize)]
struct VmList<'a> {
    vms: &'a [VmView],
}

#[derive(Deserialize)]
pub struct VmsQuery {
    /// Only the VMs with this tag.
    tag: Option<String>,
}

pub async fn vms(
    state: web::Data<AppState>,
    _who: Authed,
    q: web::Query<VmsQuery>,
) -> Result<HttpResponse, AppError> {
    let list = lc(&state, |s| {
        s.vm_list.get(s.hv.as_ref(), &s.store, &s.lifecycle)
    })
    .await?;
    let tag = q.tag.as_deref();
    if tag.is_none() {
        return Ok(HttpResponse::Ok().json(VmList { vms: &list.vms }));
    }
    let shown: Vec<VmView> = list
        .vms
        .iter()
        .filter(|v| crate::domain::vm_labels::matches(&v.tags, tag))
        .cloned()
        .collect();
    Ok(HttpResponse::Ok().json(VmList { vms: &shown }))
}

/// The session's CSRF token must come in `X-CSRF-Token` for state-changing calls.
pub async fn create_vm(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    body: web::Json<CreateVmRequest>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let mut body = body.into_inner();
    body.kickstart_base_url = Some(super::kickstarts::base_url(&req, &state));
    match service::vms::create(&state.svc, &who.caller(), body).await? {
        Ok(created) => Ok(HttpResponse::Created()
            .insert_header(("location", format!("/api/v1/vms/{}", created.name)))
            .json(created)),
        Err(LifecycleError::Invalid(errors)) => Ok(invalid(&errors)),
        Err(e) => Err(e.into()),
    }
}

pub async fn vm(
    state: web::Data<AppState>,
    _who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let name = path.into_inner();
    let detail = lc(&state, move |s| {
        lifecycle::detail(s.hv.as_ref(), &s.store, &s.lifecycle, &name)
    })
    .await?;
    Ok(HttpResponse::Ok().json(detail))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchVm {
    autostart: Option<bool>,
    /// Resize (VM shut off): a named size, units, and/or explicit vCPUs and memory.
    flavor: Option<String>,
    units: Option<u32>,
    vcpus: Option<u32>,
    memory_mib: Option<u64>,
    /// Free tags (replace the VM's tags; `[]` removes them).
    tags: Option<Vec<String>>,
    /// Notes (the definition's description; `""` removes them).
    notes: Option<String>,
}

pub async fn patch_vm(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    body: web::Json<PatchVm>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let name = path.into_inner();
    let body = body.into_inner();
    let resize = body.flavor.is_some()
        || body.units.is_some()
        || body.vcpus.is_some()
        || body.memory_mib.is_some();
    let labels = body.tags.is_some() || body.notes.is_some();
    if body.autostart.is_none() && !resize && !labels {
        return Err(
            AppError::new(
                ErrorKind::Unprocessable,
                "Nothing to change: send \"autostart\", \"tags\", \"notes\", or a size (\"flavor\", \"units\", \"vcpus\", \"memory_mib\").",
            )
            .field("autostart"),
        );
    }
    if labels {
        service::vms::set_labels(&state.svc, &who.caller(), &name, body.tags, body.notes).await??;
    }
    if resize {
        let req = SizeRequest {
            flavor: body.flavor,
            units: body.units,
            vcpus: body.vcpus,
            memory_mib: body.memory_mib,
        };
        let r = service::vms::resize(&state.svc, &who.caller(), &name, req).await?;
        if let Err(e) = r {
            return answer::<()>(Err(e), |_| HttpResponse::Ok().finish());
        }
    }
    if let Some(on) = body.autostart {
        service::vms::set_autostart(&state.svc, &who.caller(), &name, on).await??;
    }
    vm(state, who, web::Path::from(name)).await
}

#[derive(Deserialize)]
pub struct DeleteQuery {
    #[serde(default)]
    delete_volumes: bool,
}

pub async fn delete_vm(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    q: web::Query<DeleteQuery>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let deleted = service::vms::delete(
        &state.svc,
        &who.caller(),
        &path.into_inner(),
        q.delete_volumes,
    )
    .await??;
    Ok(HttpResponse::Ok().json(deleted))
}

pub async fn vm_action(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let (name, action) = path.into_inner();
    let action = VmAction::parse(&action).ok_or_else(|| {
        AppError::not_found(
            "There is no such action: use start, shutdown, reboot, force-off, pause or resume.",
        )
    })?;
    service::vms::act(&state.svc, &who.caller(), &name, action).await??;
    vm(state, who, web::Path::from(name)).await
}

#[derive(Serialize)]
struct PoolList {
    pools: Vec<crate::domain::inventory::PoolInfo>,
}

pub async fn pools(state: web::Data<AppState>, _who: Authed) -> Result<HttpResponse, AppError> {
    let pools = hv(&state, |h| h.pools()).await?;
    Ok(HttpResponse::Ok().json(PoolList { pools }))
}

pub async fn clone_vm(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    body: web::Json<CloneRequest>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let r = service::vms::clone(
        &state.svc,
        &who.caller(),
        &path.into_inner(),
        body.into_inner(),
    )
    .await?;
    answer(r, super::kit::accepted)
}

#[derive(Serialize)]
struct SnapshotList {
    snapshots: Vec<crate::domain::snapshot::SnapshotInfo>,
}

pub async fn snapshots(
    state: web::Data<AppState>,
    _who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let name = path.into_inner();
    let snapshots = lc(&state, move |s| lifecycle::snapshots(s.hv.as_ref(), &name)).await?;
    Ok(HttpResponse::Ok().json(SnapshotList { snapshots }))
}

pub async fn create_snapshot(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    body: web::Json<SnapshotRequest>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let name = path.into_inner();
    let r =
        service::vms::create_snapshot(&state.svc, &who.caller(), &name, body.into_inner()).await?;
    answer(r, |s| {
        HttpResponse::Created()
            .insert_header((
                "location",
                format!("/api/v1/vms/{name}/snapshots/{}", s.name),
            ))
            .json(s)
    })
}

pub async fn revert_snapshot(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let (name, snapshot) = path.into_inner();
    let r = service::vms::revert_snapshot(&state.svc, &who.caller(), &name, &snapshot).await?;
    if let Err(e) = r {
        return Err(e.into());
    }
    vm(state, who, web::Path::from(name)).await
}

pub async fn delete_snapshot(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let (name, snapshot) = path.into_inner();
    let r = service::vms::delete_snapshot(&state.svc, &who.caller(), &name, &snapshot).await?;
    answer(r, |()| HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    /// start, shutdown, force-off, snapshot or tag.
    action: String,
    /// The VMs, by name; or `filter` for every VM it matches.
    #[serde(default)]
    vms: Vec<String>,
    filter: Option<BulkFilter>,
    /// The tag a "tag" action adds.
    tag: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkFilter {
    /// VMs with this tag.
    tag: Option<String>,
    /// VMs in this state (running, shut_off, paused…).
    state: Option<String>,
    /// VMs with this text in their name.
    q: Option<String>,
}

/// One action on many VMs: `202` with the batch and one job per VM, each VM's outcome at
/// `GET /api/v1/bulk/{batch}`.
pub async fn bulk(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    body: web::Json<BulkRequest>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let body = body.into_inner();
    let action = match service::bulk::BulkAction::parse(&body.action, body.tag.as_deref()) {
        Ok(a) => a,
        Err(e) => return answer::<()>(Err(e), |_| HttpResponse::Ok().finish()),
    };
    let vms = match body.filter {
        None => body.vms,
        Some(f) => {
            let query = crate::domain::listing::ListQuery::from_params(
                f.q.as_deref().unwrap_or(""),
                f.state.as_deref().unwrap_or(""),
                "",
                "",
            )
            .with_tag(f.tag.as_deref().unwrap_or(""));
            let list = lc(&state, |s| {
                s.vm_list.get(s.hv.as_ref(), &s.store, &s.lifecycle)
            })
            .await?;
            crate::domain::listing::matching(&list.vms, &query, |v| {
                (v.summary.name.as_str(), v.summary.state)
            })
            .into_iter()
            .filter(|v| crate::domain::vm_labels::matches(&v.tags, Some(&query.tag)))
            .filter(|v| !v.template)
            .map(|v| v.summary.name.clone())
            .collect()
        }
    };
    let started = service::bulk::start(&state.svc, &who.caller(), action, vms).await?;
    answer(started, |b| {
        HttpResponse::Accepted()
            .insert_header(("location", format!("/api/v1/bulk/{}", b.batch)))
            .json(b)
    })
}

#[derive(Serialize)]
struct BulkOutcome {
    batch: i64,
    action: String,
    running: usize,
    succeeded: usize,
    failed: usize,
    jobs: Vec<crate::store::jobs::JobRow>,
}

pub async fn bulk_outcome(
    state: web::Data<AppState>,
    _who: Authed,
    path: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    let batch = path.into_inner();
    let jobs = super::db(&state, move |s| s.batch_jobs(batch)).await?;
    if jobs.is_empty() {
        return Err(AppError::not_found("There is no such bulk action."));
    }
    let count = |s: &str| jobs.iter().filter(|j| j.state == s).count();
    let (running, succeeded) = (count("running"), count("succeeded"));
    Ok(HttpResponse::Ok().json(BulkOutcome {
        batch,
        action: jobs[0].source.clone(),
        running,
        succeeded,
        failed: jobs.len() - running - succeeded,
        jobs,
    }))
}
