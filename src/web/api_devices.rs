//! `/api/v1/vms/{name}/disks`, `/nics` and `/hostdevs`: adding and taking out disks, NICs
//! and passed-through host devices, a NIC's link; `/api/v1/host/devices`; a VM's place in
//! the host's start order. Thin: the rules are in `domain::vm_attach`, the work in `lifecycle::attach`.

use super::errors::{ApiError, AppError};
use super::kit::{answer, csrf_header};
use super::openapi::{BodyErrors, ChangeErrors, RoleReadErrors, TAG_HOST, TAG_VMS};
use super::session::Authed;
use super::{lc, AppState};
use crate::auth::Role;
use crate::domain::create_plan::NicRequest;
use crate::domain::vm_attach::AddDiskRequest;
use crate::lifecycle::attach::{
    DiskAdded, DiskDetached, HostDevices, HostdevChanged, NicAdded, NicChanged,
};
use crate::service;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use utoipa::ToSchema;

#[utoipa::path(
    post,
    path = "/api/v1/vms/{name}/disks",
    operation_id = "add_disk",
    tag = TAG_VMS,
    summary = "Add a disk",
    description = "Role: operator. Adds a disk: a new volume (`pool`, `size_gib`, `format`) or \
        an existing volume (`volume`, its path) that no VM uses, on the `bus` (virtio, sata, \
        scsi) with the `cache` mode. While the VM runs the disk is plugged in live (SATA only \
        while it is off) and kept in its definition. The disk takes the next free name on its \
        bus (`vdb`, `sda`…). A managed VM whose disks then hold more of their pool than its \
        units takes more units, admitted like a create. A new volume whose disk libvirt \
        refuses is deleted again.",
    params(("name" = String, Path, description = "The VM's name.")),
    request_body = AddDiskRequest,
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 201, description = "The disk was added.", body = DiskAdded),
        (status = 404, description = "There is no such VM.", body = ApiError),
        (status = 409, description = "Not enough units, or a transient VM.", body = ApiError),
        (status = 422, description = "A field is wrong; each error names its field.", body = ApiError),
        (status = 502, description = "libvirt refused; nothing was changed.", body = ApiError),
        ChangeErrors, BodyErrors
    )
)]
pub async fn add_disk(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    body: web::Json<AddDiskRequest>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let added = service::vms::add_disk(
        &state.svc,
        &who.caller(),
        &path.into_inner(),
        body.into_inner(),
    )
    .await?;
    answer(added, |d| HttpResponse::Created().json(d))
}

#[utoipa::path(
    delete,
    path = "/api/v1/vms/{name}/disks/{target}",
    operation_id = "detach_disk",
    tag = TAG_VMS,
    summary = "Take a disk out",
    description = "Role: operator. Takes the disk out of the VM's definition and, while it \
        runs, asks the guest to let go of it. `pending_in_guest` says the guest has not yet \
        (it leaves at the next start at the latest). The volume stays in its pool, to be \
        added again or deleted on the Storage page. CD-ROM drives are not taken out: eject \
        their disc.",
    params(
        ("name" = String, Path, description = "The VM's name."),
        ("target" = String, Path, description = "The disk's target, e.g. `vdb`."),
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "The disk was taken out.", body = DiskDetached),
        (status = 404, description = "There is no such VM.", body = ApiError),
        (status = 422, description = "No such disk, or a CD-ROM drive.", body = ApiError),
        (status = 502, description = "libvirt refused; nothing was changed.", body = ApiError),
        ChangeErrors
    )
)]
pub async fn detach_disk(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let (name, target) = path.into_inner();
    let detached = service::vms::detach_disk(&state.svc, &who.caller(), &name, &target).await?;
    answer(detached, |d| HttpResponse::Ok().json(d))
}

#[utoipa::path(
    post,
    path = "/api/v1/vms/{name}/nics",
    operation_id = "add_nic",
    tag = TAG_VMS,
    summary = "Add a network card",
    description = "Role: operator. Adds a NIC on a `bridge` or a libvirt `network` (one of \
        them), of `model` virtio (default) or e1000, with the `mac` given (checked: used by \
        no VM on this host) or a new one. Plugged in live while the VM runs, and kept in its \
        definition.",
    params(("name" = String, Path, description = "The VM's name.")),
    request_body = NicRequest,
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 201, description = "The NIC was added.", body = NicAdded),
        (status = 404, description = "There is no such VM.", body = ApiError),
        (status = 422, description = "A field is wrong; each error names its field.", body = ApiError),
        (status = 502, description = "libvirt refused; nothing was changed.", body = ApiError),
        ChangeErrors, BodyErrors
    )
)]
pub async fn add_nic(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    body: web::Json<NicRequest>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let added = service::vms::add_nic(
        &state.svc,
        &who.caller(),
        &path.into_inner(),
        body.into_inner(),
    )
    .await?;
    answer(added, |a| HttpResponse::Created().json(a))
}

/// A NIC's link.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NicLinkRequest {
    /// true: the cable is plugged in; false: pulled (the guest sees no carrier).
    link_up: bool,
}

#[utoipa::path(
    patch,
    path = "/api/v1/vms/{name}/nics/{mac}",
    operation_id = "set_nic_link",
    tag = TAG_VMS,
    summary = "Plug a NIC's cable in or pull it",
    description = "Role: operator. Sets the NIC's link up or down: live while the VM runs \
        (the guest sees its carrier come or go), and in its definition.",
    params(
        ("name" = String, Path, description = "The VM's name."),
        ("mac" = String, Path, description = "The NIC's MAC address."),
    ),
    request_body = NicLinkRequest,
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "The NIC now.", body = NicChanged),
        (status = 404, description = "There is no such VM.", body = ApiError),
        (status = 422, description = "The VM has no NIC with that MAC.", body = ApiError),
        (status = 502, description = "libvirt refused; nothing was changed.", body = ApiError),
        ChangeErrors, BodyErrors
    )
)]
pub async fn set_nic_link(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<(String, String)>,
    body: web::Json<NicLinkRequest>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let (name, mac) = path.into_inner();
    let changed =
        service::vms::set_nic_link(&state.svc, &who.caller(), &name, &mac, body.link_up).await?;
    answer(changed, |c| HttpResponse::Ok().json(c))
}

#[utoipa::path(
    delete,
    path = "/api/v1/vms/{name}/nics/{mac}",
    operation_id = "remove_nic",
    tag = TAG_VMS,
    summary = "Take a network card out",
    description = "Role: operator. Takes the NIC out of the VM's definition and, while it \
        runs, out of the guest (`pending_in_guest`: the guest has not let go yet).",
    params(
        ("name" = String, Path, description = "The VM's name."),
        ("mac" = String, Path, description = "The NIC's MAC address."),
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "The NIC was taken out.", body = NicChanged),
        (status = 404, description = "There is no such VM.", body = ApiError),
        (status = 422, description = "The VM has no NIC with that MAC.", body = ApiError),
        (status = 502, description = "libvirt refused; nothing was changed.", body = ApiError),
        ChangeErrors
    )
)]
pub async fn remove_nic(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let (name, mac) = path.into_inner();
    let removed = service::vms::remove_nic(&state.svc, &who.caller(), &name, &mac).await?;
    answer(removed, |c| HttpResponse::Ok().json(c))
}

#[utoipa::path(
    get,
    path = "/api/v1/host/devices",
    operation_id = "host_devices",
    tag = TAG_HOST,
    summary = "List the host's PCI and USB devices",
    description = "Role: admin. Each PCI device with its IOMMU group and host driver, each USB \
        device, the VM it is passed through to, and why it cannot be passed through now (no \
        IOMMU, a group shared with devices the host drives, a bridge, another VM has it).",
    responses((status = 200, description = "The devices.", body = HostDevices), RoleReadErrors)
)]
pub async fn host_devices(
    state: web::Data<AppState>,
    who: Authed,
) -> Result<HttpResponse, AppError> {
    who.require(&state, Role::Admin, "host.devices.view", "")
        .await?;
    let devices = lc(&state, |s| {
        crate::lifecycle::attach::host_devices(s.hv.as_ref(), "")
    })
    .await?;
    Ok(HttpResponse::Ok().json(devices))
}

/// The host device to pass through.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostdevRequest {
    /// libvirt's node device name, e.g. `pci_0000_03_00_0` (from `GET /api/v1/host/devices`).
    device: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/vms/{name}/hostdevs",
    operation_id = "attach_hostdev",
    tag = TAG_VMS,
    summary = "Pass a host device through",
    description = "Role: admin. Passes a host PCI or USB device through to the VM: live while \
        it runs, and in its definition. PCI devices are `managed`: libvirt takes them from \
        their host driver while the VM has them and gives them back after. Refused, with the \
        reason at `device`, when the host has no IOMMU, a device of its IOMMU group is still \
        driven by the host or has another VM, it is a bridge, or another VM has it.",
    params(("name" = String, Path, description = "The VM's name.")),
    request_body = HostdevRequest,
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 201, description = "The device was passed through.", body = HostdevChanged),
        (status = 404, description = "There is no such VM.", body = ApiError),
        (status = 422, description = "The device cannot be passed through; why.", body = ApiError),
        (status = 502, description = "libvirt refused; nothing was changed.", body = ApiError),
        ChangeErrors, BodyErrors
    )
)]
pub async fn attach_hostdev(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    body: web::Json<HostdevRequest>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let done = service::vms::attach_hostdev(
        &state.svc,
        &who.caller(),
        &path.into_inner(),
        body.device.trim(),
    )
    .await?;
    answer(done, |h| HttpResponse::Created().json(h))
}

#[utoipa::path(
    delete,
    path = "/api/v1/vms/{name}/hostdevs/{address}",
    operation_id = "detach_hostdev",
    tag = TAG_VMS,
    summary = "Give a host device back",
    description = "Role: admin. Takes the passed-through device out of the VM (live while it \
        runs; `pending_in_guest` while the guest has not let go) and its definition; libvirt \
        gives a PCI device back to its host driver.",
    params(
        ("name" = String, Path, description = "The VM's name."),
        ("address" = String, Path, description = "The device's address as the VM shows it: `0000:03:00.0`, or `usb 1234:5678` (URL-encoded)."),
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "The device was given back.", body = HostdevChanged),
        (status = 404, description = "There is no such VM.", body = ApiError),
        (status = 422, description = "The VM has no such device.", body = ApiError),
        (status = 502, description = "libvirt refused; nothing was changed.", body = ApiError),
        ChangeErrors
    )
)]
pub async fn detach_hostdev(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let (name, address) = path.into_inner();
    let done = service::vms::detach_hostdev(&state.svc, &who.caller(), &name, &address).await?;
    answer(done, |h| HttpResponse::Ok().json(h))
}

/// A VM's place in the host's start order.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartOrderRequest {
    /// 1 to 999, 1 first; null takes the VM out of the order (libvirt's autostart starts
    /// it with the host again).
    position: Option<u32>,
    /// Seconds to wait after starting it before the next VM (0 to 600).
    #[serde(default)]
    delay_seconds: u32,
}

#[utoipa::path(
    put,
    path = "/api/v1/vms/{name}/start-order",
    operation_id = "set_start_order",
    tag = TAG_VMS,
    summary = "Set a VM's place in the start order",
    description = "Role: operator. VMs in the start order are started by virtdeck when the \
        host boots, first place first, waiting `delay_seconds` after each before the next \
        (libvirt's own autostart, which starts every VM at once, is turned off for them). \
        The order runs once per boot of the host, not when virtdeck restarts; a VM that runs \
        already is left as it is. Turning the VM's autostart off takes it out of the order.",
    params(("name" = String, Path, description = "The VM's name.")),
    request_body = StartOrderRequest,
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "Its place now.", body = crate::lifecycle::start_order::StartOrderSet),
        (status = 404, description = "There is no such VM.", body = ApiError),
        (status = 409, description = "A transient VM or a template.", body = ApiError),
        (status = 422, description = "A field is out of range.", body = ApiError),
        ChangeErrors, BodyErrors
    )
)]
pub async fn set_start_order(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    body: web::Json<StartOrderRequest>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let done = service::vms::set_start_order(
        &state.svc,
        &who.caller(),
        &path.into_inner(),
        body.position,
        body.delay_seconds,
    )
    .await?;
    answer(done, |o| HttpResponse::Ok().json(o))
}
