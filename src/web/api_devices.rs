//! `/api/v1/vms/{name}/disks` and `/nics`: adding and taking out disks and NICs, a NIC's
//! link. Thin: the rules are in `domain::vm_attach`, the work in `lifecycle::attach`.

use super::errors::{ApiError, AppError};
use super::kit::{answer, csrf_header};
use super::openapi::{BodyErrors, ChangeErrors, TAG_VMS};
use super::session::Authed;
use super::AppState;
use crate::domain::create_plan::NicRequest;
use crate::domain::vm_attach::AddDiskRequest;
use crate::lifecycle::attach::{DiskAdded, DiskDetached, NicAdded, NicChanged};
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
