//! `/api/v1`: JSON over the same port, same authentication, roles and audit.

use super::errors::{ApiError, AppError, ErrorKind};
use super::kit::{answer, csrf_header, invalid, JobView};
use super::openapi::{
    BodyErrors, ChangeErrors, ReadErrors, VmActionName, TAG_HOST, TAG_SNAPSHOTS, TAG_STORAGE,
    TAG_VMS,
};
use super::session::Authed;
use super::{hv, lc, AppState};
use crate::domain::guest_caps::GuestCapabilities;
use crate::domain::host::{HostFacts, KvmStatus};
use crate::domain::snapshot::SnapshotInfo;
use crate::domain::vm::{VmAction, VmCounts};
use crate::lifecycle::{
    self, Capacity, CloneRequest, CreateVmRequest, Created, Deleted, LifecycleError, SizeRequest,
    SnapshotRequest, VmDetail, VmView,
};
use crate::service;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Who the request is made as.
#[derive(Serialize, ToSchema)]
pub struct WhoAmI {
    username: String,
    role: crate::auth::Role,
    /// How the request proved who it is.
    via: Via,
}

/// How a request proved who it is.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// The session cookie of a signed-in browser.
    Session,
    /// An API token (`Authorization: Bearer …`).
    Token,
}

#[utoipa::path(
    get,
    path = "/api/v1/whoami",
    operation_id = "whoami",
    tag = "account",
    summary = "Who am I",
    description = "Role: any signed-in user or API token. The user the request is made as, \
        their role, and whether a session or a token was used.",
    responses((status = 200, description = "The caller.", body = WhoAmI), ReadErrors)
)]
pub async fn whoami(who: Authed) -> HttpResponse {
    let via = match who.credential {
        super::session::Credential::Session { .. } => Via::Session,
        super::session::Credential::ApiToken => Via::Token,
    };
    HttpResponse::Ok().json(WhoAmI {
        username: who.username,
        role: who.role,
        via,
    })
}

/// The host: its facts, KVM, the virtualization type in use, VM counts and capacity.
#[derive(Serialize, ToSchema)]
pub struct HostBody {
    host: HostFacts,
    kvm: KvmStatus,
    /// `kvm` or `qemu` (TCG); null when the `virt_type` setting cannot be honoured.
    #[schema(value_type = Option<String>)]
    virt_type: Option<&'static str>,
    /// Why the `virt_type` setting cannot be honoured.
    virt_type_error: Option<String>,
    vms: VmCounts,
    /// Units and who holds them; null when it cannot be read.
    capacity: Option<Capacity>,
    /// What new VMs can have here: UEFI, Secure Boot, an emulated TPM, CPU modes and
    /// named CPU models (the values of a create's `cpu`); null when it cannot be read.
    guest: Option<GuestCapabilities>,
}

#[utoipa::path(
    get,
    path = "/api/v1/host",
    operation_id = "get_host",
    tag = TAG_HOST,
    summary = "The host",
    description = "Role: viewer. Host facts (CPU, memory, libvirt and QEMU versions), the KVM \
        probe's finding, the virtualization type in use, VM counts, and `capacity`: the unit \
        model, the size of one unit, used and free units, every VM's claim (`managed: false` \
        for VMs defined outside virtdeck, counted by their real size) and per-pool GiB per unit; \
        `guest`: UEFI, Secure Boot, TPM and the named CPU models new VMs can have.",
    responses((status = 200, description = "The host.", body = HostBody), ReadErrors)
)]
pub async fn host(state: web::Data<AppState>, _who: Authed) -> Result<HttpResponse, AppError> {
    let o = super::kit::host_overview(&state).await?;
    Ok(HttpResponse::Ok().json(HostBody {
        host: o.facts,
        kvm: state.hv.kvm_status(),
        virt_type: state.virt_type.as_ref().ok().map(|v| v.as_str()),
        virt_type_error: state.virt_type.as_ref().err().cloned(),
        vms: VmCounts::of(&o.vms),
        capacity: o.capacity.ok(),
        guest: o.guest,
    }))
}

/// Every VM of the host.
#[derive(Serialize, ToSchema)]
pub struct VmList<'a> {
    #[schema(value_type = Vec<VmView>)]
    vms: &'a [VmView],
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VmsQuery {
    /// Only the VMs with this tag.
    tag: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/vms",
    operation_id = "list_vms",
    tag = TAG_VMS,
    summary = "List VMs",
    description = "Role: viewer. Every VM of the host with its units, disks, MACs, tags and the \
        guest addresses libvirt knows (`a.b.c.d/prefix`); `tag` keeps the VMs with that tag.",
    params(VmsQuery),
    responses((status = 200, description = "The VMs.", body = VmList), ReadErrors)
)]
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
#[utoipa::path(
    post,
    path = "/api/v1/vms",
    operation_id = "create_vm",
    tag = TAG_VMS,
    summary = "Create a VM",
    description = "Role: operator. Admits the VM's units, makes its disk, defines it and (with \
        `start`) starts it; any failed step undoes every earlier one. A size is a `flavor`, \
        `units`, or `vcpus` + `memory_mib`. See docs/api.md, Creating a VM.",
    request_body = CreateVmRequest,
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 201, description = "The VM was made.", body = Created,
            headers(("Location" = String, description = "`/api/v1/vms/{name}`"))),
        (status = 409, description = "The units do not fit (`conflict`).", body = ApiError),
        (status = 422, description = "Bad input (`invalid`): `field` is the first problem, \
            `errors` every one.", body = ApiError),
        (status = 502, description = "A libvirt step failed; what had been done was undone \
            (`hypervisor_failed`).", body = ApiError),
        ChangeErrors, BodyErrors
    )
)]
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

#[utoipa::path(
    get,
    path = "/api/v1/vms/{name}",
    operation_id = "get_vm",
    tag = TAG_VMS,
    summary = "One VM",
    description = "Role: viewer. The VM as listed, plus its parsed `devices` (disks, NICs, VNC, \
        serial log, kernel), its libvirt `xml`, and `cloud_init` when it was made from a cloud \
        image.",
    params(("name" = String, Path, description = "The VM's name.")),
    responses(
        (status = 200, description = "The VM.", body = VmDetail),
        (status = 404, description = "There is no such VM.", body = ApiError),
        ReadErrors
    )
)]
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

/// A change of a VM: autostart, and/or a new size (the VM shut off).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchVm {
    /// Start the VM when the host boots.
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
    /// Boot order, first first (from the next start).
    boot: Option<Vec<crate::domain::vm_devices::BootDev>>,
    /// The firmware's boot menu.
    boot_menu: Option<bool>,
    /// An i6300esb watchdog that resets a hung guest.
    watchdog: Option<bool>,
    /// A virtio random number generator (the host's /dev/urandom).
    rng: Option<bool>,
    /// The virtio memory balloon.
    balloon: Option<bool>,
    /// Keep the serial console's output in a file on the host.
    serial_log: Option<bool>,
    /// The CPU from the next start: `default`, `host-passthrough`, `host-model` or a named
    /// model from `GET /api/v1/host` (`guest.cpu_models`); 422 at `cpu` if the host has
    /// no such model. Hosts with different CPUs migrate VMs only with a named model.
    cpu: Option<String>,
}

#[utoipa::path(
    patch,
    path = "/api/v1/vms/{name}",
    operation_id = "patch_vm",
    tag = TAG_VMS,
    summary = "Change autostart, size, tags, notes or devices",
    description = "Role: operator. `autostart`, and/or a new size for a shut-off VM: `flavor`, \
        `units`, optionally with `vcpus`/`memory_mib` inside the units; `tags` and/or `notes`, \
        kept in the VM's definition (up to 16 tags of lower-case letters, digits, `-`, `_`, \
        `.`; notes up to 4,000 characters; 422 at the field); `boot` (order of `hd`, `cdrom`, \
        `network`), `boot_menu`, `watchdog`, `rng`, `balloon`, `serial_log`, `cpu`, written into \
        the definition and \
        applying from the next start. Answers the VM.",
    params(("name" = String, Path, description = "The VM's name.")),
    request_body = PatchVm,
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "The VM after the change.", body = VmDetail),
        (status = 404, description = "There is no such VM.", body = ApiError),
        (status = 409, description = "The size does not fit, or the VM runs.", body = ApiError),
        (status = 422, description = "Nothing to change, or a bad size.", body = ApiError),
        (status = 502, description = "libvirt refused the change.", body = ApiError),
        ChangeErrors, BodyErrors
    )
)]
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
    let devices = crate::lifecycle::devices::DeviceChange {
        boot: body.boot,
        boot_menu: body.boot_menu,
        watchdog: body.watchdog,
        rng: body.rng,
        balloon: body.balloon,
        serial_log: body.serial_log,
        cpu: body.cpu,
    };
    if body.autostart.is_none() && !resize && !labels && devices.is_empty() {
        return Err(
            AppError::new(
                ErrorKind::Unprocessable,
                "Nothing to change: send \"autostart\", \"tags\", \"notes\", a size (\"flavor\", \"units\", \"vcpus\", \"memory_mib\"), or devices (\"boot\", \"boot_menu\", \"watchdog\", \"rng\", \"balloon\", \"serial_log\", \"cpu\").",
            )
            .field("autostart"),
        );
    }
    let mut devices = devices;
    // The size goes first (it is the change most often refused: units, a running VM),
    // with the CPU, which it checks before anything changes; so a refusal leaves the VM
    // as it was.
    if resize {
        let req = SizeRequest {
            flavor: body.flavor,
            units: body.units,
            vcpus: body.vcpus,
            memory_mib: body.memory_mib,
        };
        let cpu = devices.cpu.take();
        let r = service::vms::resize(&state.svc, &who.caller(), &name, req, cpu).await?;
        if let Err(e) = r {
            return answer::<()>(Err(e), |_| HttpResponse::Ok().finish());
        }
    }
    if !devices.is_empty() {
        service::vms::set_devices(&state.svc, &who.caller(), &name, devices).await??;
    }
    if labels {
        service::vms::set_labels(&state.svc, &who.caller(), &name, body.tags, body.notes).await??;
    }
    if let Some(on) = body.autostart {
        service::vms::set_autostart(&state.svc, &who.caller(), &name, on).await??;
    }
    vm(state, who, web::Path::from(name)).await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Delete the VM's disk volumes too: an operator's only those virtdeck made for the
    /// VM, an admin's every disk volume but ISO images and volumes other VMs use.
    #[serde(default)]
    delete_volumes: bool,
}

#[utoipa::path(
    delete,
    path = "/api/v1/vms/{name}",
    operation_id = "delete_vm",
    tag = TAG_VMS,
    summary = "Delete a VM",
    description = "Role: operator. Stops and undefines the VM and releases its units; with \
        `delete_volumes=true` deletes its disk volumes too (an operator's only those virtdeck \
        made for it; an admin's every disk volume but ISO images and volumes other VMs use). \
        A cloud-init seed is always deleted.",
    params(("name" = String, Path, description = "The VM's name."), DeleteQuery),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "What was deleted and kept.", body = Deleted),
        (status = 404, description = "There is no such VM.", body = ApiError),
        (status = 409, description = "The VM cannot be deleted now (e.g. a template with \
            linked clones).", body = ApiError),
        (status = 502, description = "A libvirt step failed.", body = ApiError),
        ChangeErrors, BodyErrors
    )
)]
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

#[utoipa::path(
    post,
    path = "/api/v1/vms/{name}/{action}",
    operation_id = "vm_action",
    tag = TAG_VMS,
    summary = "Start, shut down, reboot, force off, pause or resume",
    description = "Role: operator. Answers the VM after the action.",
    params(
        ("name" = String, Path, description = "The VM's name."),
        ("action" = VmActionName, Path, description = "What to do.")
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "The VM after the action.", body = VmDetail),
        (status = 404, description = "There is no such VM or action.", body = ApiError),
        (status = 409, description = "The VM's state does not allow it (or a template is \
            started).", body = ApiError),
        (status = 502, description = "libvirt refused the action.", body = ApiError),
        ChangeErrors
    )
)]
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

/// Every storage pool with its volumes.
#[derive(Serialize, ToSchema)]
pub struct PoolList {
    pools: Vec<crate::domain::inventory::PoolInfo>,
}

#[utoipa::path(
    get,
    path = "/api/v1/pools",
    operation_id = "list_pools",
    tag = TAG_STORAGE,
    summary = "List storage pools",
    description = "Role: viewer. Storage pools with capacity and volumes.",
    responses((status = 200, description = "The pools.", body = PoolList), ReadErrors)
)]
pub async fn pools(state: web::Data<AppState>, _who: Authed) -> Result<HttpResponse, AppError> {
    let pools = hv(&state, |h| h.pools()).await?;
    Ok(HttpResponse::Ok().json(PoolList { pools }))
}

#[utoipa::path(
    post,
    path = "/api/v1/vms/{name}/clone",
    operation_id = "clone_vm",
    tag = TAG_VMS,
    summary = "Clone a shut-off VM",
    description = "Role: operator. Every disk volume is copied in full; the copy gets a new \
        UUID and MACs and takes the source's units. Name, state, units and disk space are \
        checked before the answer; the copy runs in the background as a job.",
    params(("name" = String, Path, description = "The source VM's name.")),
    request_body = CloneRequest,
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 202, description = "The clone's job.", body = JobView,
            headers(("Location" = String, description = "`/api/v1/jobs/{id}`"))),
        (status = 404, description = "There is no such VM.", body = ApiError),
        (status = 409, description = "The source runs, or the units or space do not fit.",
            body = ApiError),
        (status = 422, description = "A bad or taken name.", body = ApiError),
        ChangeErrors, BodyErrors
    )
)]
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

/// A VM's snapshots.
#[derive(Serialize, ToSchema)]
pub struct SnapshotList {
    snapshots: Vec<crate::domain::snapshot::SnapshotInfo>,
}

#[utoipa::path(
    get,
    path = "/api/v1/vms/{name}/snapshots",
    operation_id = "list_snapshots",
    tag = TAG_SNAPSHOTS,
    summary = "List a VM's snapshots",
    description = "Role: viewer.",
    params(("name" = String, Path, description = "The VM's name.")),
    responses(
        (status = 200, description = "The snapshots.", body = SnapshotList),
        (status = 404, description = "There is no such VM.", body = ApiError),
        ReadErrors
    )
)]
pub async fn snapshots(
    state: web::Data<AppState>,
    _who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let name = path.into_inner();
    let snapshots = lc(&state, move |s| lifecycle::snapshots(s.hv.as_ref(), &name)).await?;
    Ok(HttpResponse::Ok().json(SnapshotList { snapshots }))
}

#[utoipa::path(
    post,
    path = "/api/v1/vms/{name}/snapshots",
    operation_id = "create_snapshot",
    tag = TAG_SNAPSHOTS,
    summary = "Take a snapshot",
    description = "Role: operator. With memory when the VM runs; QEMU keeps it inside qcow2 \
        disks, so raw disks are refused with 409.",
    params(("name" = String, Path, description = "The VM's name.")),
    request_body = SnapshotRequest,
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 201, description = "The snapshot.", body = SnapshotInfo,
            headers(("Location" = String, description = "`/api/v1/vms/{name}/snapshots/{snapshot}`"))),
        (status = 404, description = "There is no such VM.", body = ApiError),
        (status = 409, description = "A disk cannot hold snapshots.", body = ApiError),
        (status = 422, description = "A bad or taken name.", body = ApiError),
        (status = 502, description = "libvirt refused the snapshot.", body = ApiError),
        ChangeErrors, BodyErrors
    )
)]
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

#[utoipa::path(
    post,
    path = "/api/v1/vms/{name}/snapshots/{snapshot}/revert",
    operation_id = "revert_snapshot",
    tag = TAG_SNAPSHOTS,
    summary = "Revert to a snapshot",
    description = "Role: operator. The VM runs or is off afterwards, as it was when the \
        snapshot was taken. Answers the VM.",
    params(
        ("name" = String, Path, description = "The VM's name."),
        ("snapshot" = String, Path, description = "The snapshot's name.")
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "The VM after reverting.", body = VmDetail),
        (status = 404, description = "There is no such VM or snapshot.", body = ApiError),
        (status = 409, description = "The VM cannot be reverted now.", body = ApiError),
        (status = 502, description = "libvirt refused the revert.", body = ApiError),
        ChangeErrors
    )
)]
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

#[utoipa::path(
    delete,
    path = "/api/v1/vms/{name}/snapshots/{snapshot}",
    operation_id = "delete_snapshot",
    tag = TAG_SNAPSHOTS,
    summary = "Delete a snapshot",
    description = "Role: operator.",
    params(
        ("name" = String, Path, description = "The VM's name."),
        ("snapshot" = String, Path, description = "The snapshot's name.")
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "There is no such VM or snapshot.", body = ApiError),
        (status = 409, description = "The snapshot cannot be deleted now.", body = ApiError),
        (status = 502, description = "libvirt refused the delete.", body = ApiError),
        ChangeErrors
    )
)]
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

#[derive(Deserialize, ToSchema)]
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

#[derive(Deserialize, ToSchema)]
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
#[utoipa::path(
    post,
    path = "/api/v1/vms/bulk",
    operation_id = "bulk_action",
    tag = TAG_VMS,
    summary = "One action on many VMs",
    description = "Role: operator. `start`, `shutdown`, `force-off`, `snapshot` (named \
        `bulk-<batch>`) or `tag` (adds `tag`) on the VMs named in `vms`, or on every VM \
        `filter` matches (templates left out). One job per VM, run in the order given, each \
        audited like a single change; a refusal is that VM's outcome. Follow the batch at \
        `GET /api/v1/bulk/{batch}`.",
    request_body = BulkRequest,
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 202, description = "The batch and its jobs.", body = crate::service::bulk::Batch,
            headers(("Location" = String, description = "`/api/v1/bulk/{batch}`"))),
        (status = 422, description = "No VMs, an unknown VM, a bad action or tag.", body = ApiError),
        ChangeErrors, BodyErrors
    )
)]
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
            service::bulk::names_matching(&list.vms, &query)
        }
    };
    let started = service::bulk::start(&state.svc, &who.caller(), action, vms).await?;
    answer(started, |b| {
        HttpResponse::Accepted()
            .insert_header(("location", format!("/api/v1/bulk/{}", b.batch)))
            .json(b)
    })
}

/// A bulk action and each VM's job.
#[derive(Serialize, ToSchema)]
pub struct BulkOutcome {
    batch: i64,
    action: String,
    running: usize,
    succeeded: usize,
    failed: usize,
    jobs: Vec<crate::store::jobs::JobRow>,
}

#[utoipa::path(
    get,
    path = "/api/v1/bulk/{batch}",
    operation_id = "get_bulk_action",
    tag = TAG_VMS,
    summary = "A bulk action's outcome",
    description = "Role: viewer. The action, how many VMs are done, refused or still to go, and \
        each VM's job (its `message` says what happened).",
    params(("batch" = i64, Path, description = "The batch (its first job's id).")),
    responses(
        (status = 200, description = "The batch.", body = BulkOutcome),
        (status = 404, description = "There is no such bulk action.", body = ApiError),
        ReadErrors
    )
)]
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
    let counts = service::bulk::BatchCounts::of(&jobs);
    Ok(HttpResponse::Ok().json(BulkOutcome {
        batch,
        action: jobs[0].source.clone(),
        running: counts.running,
        succeeded: counts.succeeded,
        failed: counts.failed,
        jobs,
    }))
}

/// A CD-ROM drive's new medium.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CdromRequest {
    /// The path of an ISO image volume; null or left out ejects.
    iso: Option<String>,
    /// The drive (`sda`, `hdc`, …); the VM's first CD-ROM drive when left out.
    target: Option<String>,
}

#[utoipa::path(
    put,
    path = "/api/v1/vms/{name}/cdrom",
    operation_id = "change_cdrom",
    tag = TAG_VMS,
    summary = "Insert or eject a CD-ROM",
    description = "Role: operator. Puts an ISO image volume (not another VM's cloud-init seed) \
        into the VM's CD-ROM drive, read-only, or ejects it (`iso` null): live while the VM \
        runs, and in its definition.",
    params(("name" = String, Path, description = "The VM's name.")),
    request_body = CdromRequest,
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "The drive now.", body = crate::lifecycle::devices::CdromChanged),
        (status = 404, description = "There is no such VM.", body = ApiError),
        (status = 409, description = "The VM has no CD-ROM drive.", body = ApiError),
        (status = 422, description = "Not an ISO volume, or no such drive.", body = ApiError),
        (status = 502, description = "libvirt refused the change.", body = ApiError),
        ChangeErrors, BodyErrors
    )
)]
pub async fn change_cdrom(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    body: web::Json<CdromRequest>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let body = body.into_inner();
    let changed = service::vms::change_cdrom(
        &state.svc,
        &who.caller(),
        &path.into_inner(),
        body.target,
        body.iso,
    )
    .await?;
    answer(changed, |c| HttpResponse::Ok().json(c))
}

/// A disk's new size.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrowDiskRequest {
    /// The new size in GiB; larger than the disk is now.
    size_gib: u64,
}

#[utoipa::path(
    patch,
    path = "/api/v1/vms/{name}/disks/{target}",
    operation_id = "grow_disk",
    tag = TAG_VMS,
    summary = "Grow a disk",
    description = "Role: operator. Grows the disk to `size_gib`: live while the VM runs (the \
        guest sees the new size at once; its partition and file system are the guest's to \
        grow), else the volume itself. Disks never shrink. When the bigger disk holds more of \
        its pool than the VM's units, the units grow and are admitted like a create.",
    params(
        ("name" = String, Path, description = "The VM's name."),
        ("target" = String, Path, description = "The disk's target, e.g. `vda`."),
    ),
    request_body = GrowDiskRequest,
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "The disk now.", body = crate::lifecycle::changes::DiskGrown),
        (status = 404, description = "There is no such VM.", body = ApiError),
        (status = 409, description = "Not enough units or pool space, or not a pool volume.", body = ApiError),
        (status = 422, description = "No such disk, or not larger than now.", body = ApiError),
        (status = 502, description = "libvirt refused; the disk keeps its size.", body = ApiError),
        ChangeErrors, BodyErrors
    )
)]
pub async fn grow_disk(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<(String, String)>,
    body: web::Json<GrowDiskRequest>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let (name, target) = path.into_inner();
    let grown =
        service::vms::grow_disk(&state.svc, &who.caller(), &name, &target, body.size_gib).await?;
    answer(grown, |g| HttpResponse::Ok().json(g))
}
