//! `/api/v1/backups`, `/api/v1/vms/{name}/backups`, `/api/v1/backup-targets`: thin
//! handlers over `service::backups`.

use super::errors::{ApiError, AppError};
use super::kit::{answer, csrf_header};
use super::openapi::{BodyErrors, ChangeErrors, ReadErrors, TAG_VMS};
use super::session::Authed;
use super::{lc, AppState};
use crate::lifecycle::backups::{with_progress, BackupView, RestoreRequest, TargetView, Verified};
use crate::service;
use crate::store::backups::BackupRow;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Serialize, ToSchema)]
pub struct BackupList {
    pub targets: Vec<TargetView>,
    pub backups: Vec<BackupView>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BackupQuery {
    /// Only this VM's backups.
    vm: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/backups",
    operation_id = "list_backups",
    tag = TAG_VMS,
    summary = "List backups and backup targets",
    description = "Role: viewer. Every backup, newest first (or one VM's with `vm`): its kind \
        (full, or incremental on `parent`), why it is full, its files with their checksums \
        (a file's `sha256` is empty for the moment between the backup's success and its \
        checksum being recorded), its state and, while it runs, its progress; and the backup \
        targets with their free space.",
    params(BackupQuery),
    responses((status = 200, description = "The backups.", body = BackupList), ReadErrors)
)]
pub async fn list(
    state: web::Data<AppState>,
    _who: Authed,
    query: web::Query<BackupQuery>,
) -> Result<HttpResponse, AppError> {
    let vm = query.into_inner().vm;
    let list = lc(&state, move |s| {
        let rows = s.store.backups(vm.as_deref())?;
        Ok(BackupList {
            targets: crate::lifecycle::backups::targets(s.hv.as_ref(), &s.store)?,
            backups: with_progress(&s.jobs, &s.store, rows),
        })
    })
    .await?;
    Ok(HttpResponse::Ok().json(list))
}

/// Where a backup goes.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// A backup target (pool).
    pool: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/vms/{name}/backups",
    operation_id = "backup_vm",
    tag = TAG_VMS,
    summary = "Back up a VM now",
    description = "Role: operator. Begins a backup of every disk of the running VM through \
        libvirt's backup API (push mode) into the target: full the first time, then \
        incremental on the last backup to the same target (changed blocks only, through a \
        libvirt checkpoint); full again, with `why_full`, when that chain is broken. The copy \
        runs after this answers, as a job too (kind `backup`, source `backup <id>`); follow it \
        with `GET /api/v1/backups?vm=NAME` or on the Jobs page, where Cancel stops it. The disks' \
        state is crash-consistent (as a power cut would leave them), or file-system-consistent \
        when the VM's guest agent froze its file systems for that moment. A VM that is off is \
        copied whole, disk by disk (clean, always full). The VM's definition and units are \
        kept with it.",
    params(("name" = String, Path, description = "The VM's name.")),
    request_body = BackupRequest,
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 202, description = "The backup began.", body = BackupRow),
        (status = 404, description = "There is no such VM.", body = ApiError),
        (status = 409, description = "A backup of the VM runs already, or a restore over it.", body = ApiError),
        (status = 422, description = "Not qcow2 disks (running), not a target, not enough space.", body = ApiError),
        (status = 502, description = "libvirt did not begin the backup.", body = ApiError),
        ChangeErrors, BodyErrors
    )
)]
pub async fn backup_vm(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    body: web::Json<BackupRequest>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let row = service::backups::backup_now(
        &state.svc,
        &who.caller(),
        &path.into_inner(),
        body.pool.trim(),
    )
    .await?;
    answer(row, |b| HttpResponse::Accepted().json(b))
}

#[utoipa::path(
    post,
    path = "/api/v1/backups/{id}/restore",
    operation_id = "restore_backup",
    tag = TAG_VMS,
    summary = "Restore a backup as a new VM",
    description = "Role: operator. Makes a new VM from the backup and the backups it builds \
        on: a new name, UUID and MAC addresses, its units admitted like a create, its disks \
        new qcow2 volumes (in `pool`, else the backed-up VM's pools). Its CD-ROM drives are \
        left empty. Checked and admitted at once; the disks are read from the backup as a job \
        (kind `restore`, source `backup <id>`, progress in bytes of backup files read; follow \
        it at the Location, cancel it like a clone). A failure or a cancel removes everything \
        it made.",
    params(("id" = i64, Path, description = "The backup.")),
    request_body = RestoreRequest,
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 202, description = "The restore runs as this job; the VM is made shut off.", body = super::kit::JobView),
        (status = 404, description = "There is no such backup.", body = ApiError),
        (status = 409, description = "Not enough units or space, or a backup of the chain did not succeed.", body = ApiError),
        (status = 422, description = "A field is wrong.", body = ApiError),
        ChangeErrors, BodyErrors
    )
)]
pub async fn restore(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<i64>,
    body: web::Json<RestoreRequest>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let done = service::backups::restore(
        &state.svc,
        &who.caller(),
        path.into_inner(),
        body.into_inner(),
    )
    .await?;
    answer(done, super::kit::accepted)
}

#[utoipa::path(
    post,
    path = "/api/v1/backups/{id}/restore-over",
    operation_id = "restore_backup_over",
    tag = TAG_VMS,
    summary = "Restore a backup over its VM",
    description = "Role: operator. Puts the VM the backup was taken of back to that point: it \
        must be shut off, the same VM (its UUID) with the same disks. Checked at once; then, as \
        a job (kind `restore-over`, source `backup <id>`, progress in bytes of backup files \
        read; follow it at the Location, cancel it like a clone), the backup (and the ones it \
        builds on) is read into new qcow2 volumes, the VM's definition then points at them, \
        and only then are its former volumes deleted (those virtdeck made for it; others are \
        kept and named in the job's message). While the job runs the VM is held: starting, \
        changing or backing it up answers 409. A failure, a cancel or a restart of virtdeck \
        leaves the VM as it was. Its next backup is full.",
    params(("id" = i64, Path, description = "The backup.")),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 202, description = "The restore runs as this job; the VM stays shut off.", body = super::kit::JobView),
        (status = 404, description = "There is no such backup, or its VM is gone.", body = ApiError),
        (status = 409, description = "The VM runs, is being restored already, is another VM of that name, or its disks changed.", body = ApiError),
        ChangeErrors
    )
)]
pub async fn restore_over(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let id = path.into_inner();
    let vm = lc(&state, move |s| Ok(s.store.backup(id)?.map(|b| b.vm)))
        .await?
        .ok_or_else(|| AppError::not_found(format!("There is no backup {id}.")))?;
    let done = service::backups::restore_over(&state.svc, &who.caller(), id, &vm).await?;
    answer(done, super::kit::accepted)
}

#[utoipa::path(
    post,
    path = "/api/v1/backups/{id}/verify",
    operation_id = "verify_backup",
    tag = TAG_VMS,
    summary = "Verify a backup",
    description = "Role: operator. Re-reads the backup's files and those of the backups it \
        builds on, and compares each with the SHA-256 recorded when it ended.",
    params(("id" = i64, Path, description = "The backup.")),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "What was found.", body = Verified),
        (status = 404, description = "There is no such backup.", body = ApiError),
        ChangeErrors
    )
)]
pub async fn verify(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let done = service::backups::verify(&state.svc, &who.caller(), path.into_inner()).await?;
    answer(done, |v| HttpResponse::Ok().json(v))
}

#[utoipa::path(
    delete,
    path = "/api/v1/backups/{id}",
    operation_id = "delete_backup",
    tag = TAG_VMS,
    summary = "Delete a backup",
    description = "Role: admin. Deletes the backup's files and record. A backup that later \
        incremental backups build on is refused (409) until they are deleted.",
    params(("id" = i64, Path, description = "The backup.")),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "The deleted backup.", body = BackupRow),
        (status = 404, description = "There is no such backup.", body = ApiError),
        (status = 409, description = "Later incrementals need it, or it runs.", body = ApiError),
        ChangeErrors
    )
)]
pub async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let done = service::backups::delete(&state.svc, &who.caller(), path.into_inner()).await?;
    answer(done, |b| HttpResponse::Ok().json(b))
}

#[utoipa::path(
    put,
    path = "/api/v1/backup-targets/{pool}",
    operation_id = "add_backup_target",
    tag = TAG_VMS,
    summary = "Name a pool a backup target",
    description = "Role: admin. A directory or NFS pool; backups go into its \
        `virtdeck-backups` directory.",
    params(("pool" = String, Path, description = "The pool.")),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "The backup targets.", body = [TargetView]),
        (status = 422, description = "No such pool, or not a directory or NFS pool.", body = ApiError),
        ChangeErrors
    )
)]
pub async fn add_target(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let done =
        service::backups::set_target(&state.svc, &who.caller(), &path.into_inner(), true).await?;
    answer(done, |t| HttpResponse::Ok().json(t))
}

#[utoipa::path(
    delete,
    path = "/api/v1/backup-targets/{pool}",
    operation_id = "remove_backup_target",
    tag = TAG_VMS,
    summary = "Stop using a pool as a backup target",
    description = "Role: admin. Backups already there stay (and can be restored).",
    params(("pool" = String, Path, description = "The pool.")),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "The backup targets.", body = [TargetView]),
        ChangeErrors
    )
)]
pub async fn remove_target(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let done =
        service::backups::set_target(&state.svc, &who.caller(), &path.into_inner(), false).await?;
    answer(done, |t| HttpResponse::Ok().json(t))
}

#[utoipa::path(
    post,
    path = "/api/v1/backup-targets/{pool}/scan",
    operation_id = "scan_backup_target",
    tag = TAG_VMS,
    summary = "Look for backups on a target that are not listed",
    description = "Role: admin. Reads the record and definition virtdeck writes beside every         backup's files (`virtdeck-backup.json`, `domain.xml`) under the target's         `virtdeck-backups`, and adds each backup that is not listed yet: one made by another         virtdeck that shares the target, or by this one before its database was lost. Full         backups come before the incrementals that build on them. A record that names files         outside its directory, files that are not qcow2 of the recorded size, or a         definition that reaches into the host (host devices, host files or sockets, QEMU         arguments, another emulator, scripts, direct kernel boot) is skipped with the reason.",
    params(("pool" = String, Path, description = "The backup target.")),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "What was added and skipped.", body = crate::lifecycle::backup_records::ScanReport),
        (status = 409, description = "The pool is not running.", body = ApiError),
        (status = 422, description = "Not a backup target.", body = ApiError),
        ChangeErrors
    )
)]
pub async fn scan_target(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let done = service::backups::scan_target(&state.svc, &who.caller(), &path.into_inner()).await?;
    answer(done, |r| HttpResponse::Ok().json(r))
}

#[derive(Serialize, ToSchema)]
pub struct ScheduleList {
    pub schedules: Vec<crate::store::backups::ScheduleRow>,
}

#[utoipa::path(
    get,
    path = "/api/v1/backup-schedules",
    operation_id = "list_backup_schedules",
    tag = TAG_VMS,
    summary = "List backup schedules",
    description = "Role: viewer. Each schedule: its scope (one VM, a tag, every VM), target, \
        daily or weekly time (UTC), keep rules, and when it last ran.",
    responses((status = 200, description = "The schedules.", body = ScheduleList), ReadErrors)
)]
pub async fn schedules(state: web::Data<AppState>, _who: Authed) -> Result<HttpResponse, AppError> {
    let schedules = lc(&state, |s| Ok(s.store.backup_schedules()?)).await?;
    Ok(HttpResponse::Ok().json(ScheduleList { schedules }))
}

#[utoipa::path(
    post,
    path = "/api/v1/backup-schedules",
    operation_id = "create_backup_schedule",
    tag = TAG_VMS,
    summary = "Add a backup schedule",
    description = "Role: admin. Backs up one VM, the VMs with a tag, or every VM of the host \
        into a target, daily or weekly at `at` (HH:MM, UTC), one backup at a time; afterwards \
        each VM's backups in that target are pruned by `keep` (the last N, and the newest of \
        each of the last N days, weeks and months). A backup that kept ones build on is \
        merged into them, never left missing. A schedule missed while virtdeck was down runs \
        once when it starts; VMs that do not run are skipped (in the audit log).",
    request_body = crate::service::backups::ScheduleRequest,
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 201, description = "The schedule.", body = crate::store::backups::ScheduleRow),
        (status = 422, description = "A field is wrong; each error names its field.", body = ApiError),
        ChangeErrors, BodyErrors
    )
)]
pub async fn create_schedule(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    body: web::Json<crate::service::backups::ScheduleRequest>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let done =
        service::backups::create_schedule(&state.svc, &who.caller(), body.into_inner()).await?;
    answer(done, |s| HttpResponse::Created().json(s))
}

#[utoipa::path(
    delete,
    path = "/api/v1/backup-schedules/{id}",
    operation_id = "delete_backup_schedule",
    tag = TAG_VMS,
    summary = "Remove a backup schedule",
    description = "Role: admin. Its backups stay.",
    params(("id" = i64, Path, description = "The schedule.")),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "The schedule's id."),
        (status = 404, description = "There is no such schedule.", body = ApiError),
        ChangeErrors
    )
)]
pub async fn delete_schedule(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let done =
        service::backups::delete_schedule(&state.svc, &who.caller(), path.into_inner()).await?;
    answer(done, |id| {
        HttpResponse::Ok().json(serde_json::json!({"id": id}))
    })
}

#[utoipa::path(
    post,
    path = "/api/v1/backup-schedules/{id}/run",
    operation_id = "run_backup_schedule",
    tag = TAG_VMS,
    summary = "Run a backup schedule now",
    description = "Role: admin. Backs up the schedule's VMs now, one at a time, and applies its \
        keep rules after each, as at its times; it counts as the schedule's last run. Answers \
        at once: the backups appear in `GET /api/v1/backups` as they start. While another \
        schedule runs, this one starts when it has ended.",
    params(("id" = i64, Path, description = "The schedule.")),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 202, description = "The schedule runs; its id."),
        (status = 404, description = "There is no such schedule.", body = ApiError),
        ChangeErrors
    )
)]
pub async fn run_schedule(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let done =
        service::backups::run_schedule_now(&state.svc, &who.caller(), path.into_inner()).await?;
    answer(done, |id| {
        HttpResponse::Accepted().json(serde_json::json!({"id": id, "running": true}))
    })
}
