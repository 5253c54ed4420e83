//! Volumes of a pool (create, resize, delete, download, upload, fetch from a URL) and
//! the Jobs page, as pages and under `/api/v1`. Admin only, like the pools they live in;
//! every change is audited. Bytes are streamed in both directions through bounded
//! channels between the connection and a blocking libvirt stream, never held whole.

use super::errors::{html, ApiError, AppError, ErrorKind};
use super::kit::{accepted, answer, csrf_header, see_other, JobView};
use super::openapi::{Binary, BodyErrors, ChangeErrors, RoleReadErrors};
use super::pages::Chrome;
use super::session::{Authed, Credential};
use super::{lc, AppState};
use crate::auth::Role;
use crate::domain::storage::{human_bytes, PoolStatus, PoolVolume};
use crate::domain::volumes::{is_iso_image, overcommit_warning, FetchRequest, NewVolumeRequest};
use crate::lifecycle::jobs::{self};
use crate::lifecycle::volumes::{self as vols, VolumeResized, VolumeView};
use crate::lifecycle::{FieldError, LifecycleError};
use crate::service;
use crate::web::routes::RouteExt;
use actix_web::http::header::{self, ContentDisposition, DispositionParam, DispositionType};
use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use futures_util::StreamExt;
use serde::Deserialize;
use std::io;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Chunks in flight between the connection and libvirt, per transfer (with actix's
/// chunks of at most 64 KiB and libvirt's of 256 KiB: a few MiB at most).
const CHANNEL_CHUNKS: usize = 8;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.post("/host/storage/{pool}/volumes", create_form)
        .post("/host/storage/{pool}/volumes/{name}/resize", resize_form)
        .post("/host/storage/{pool}/volumes/{name}/delete", delete_form)
        .get(
            "/host/storage/{pool}/volumes/{name}/download",
            download_page,
        )
        .post("/host/storage/{pool}/fetch", fetch_form)
        .post("/api/v1/pools/{pool}/volumes", api_create)
        .post("/api/v1/pools/{pool}/fetch", api_fetch)
        .put("/api/v1/pools/{pool}/volumes/{name}", api_upload)
        .get("/api/v1/pools/{pool}/volumes/{name}", api_download)
        .patch("/api/v1/pools/{pool}/volumes/{name}", api_resize)
        .delete("/api/v1/pools/{pool}/volumes/{name}", api_delete);
}

// ---- the pool page ----

/// The pool page's forms as typed, and their errors.
#[derive(Default)]
pub struct VolumeForms {
    pub create: CreateForm,
    pub fetch: FetchForm,
    pub errors: Vec<FieldError>,
    /// Which form the errors belong to: create, fetch, resize:NAME.
    pub errors_for: String,
    pub form_error: Option<String>,
}

#[derive(Template)]
#[template(path = "host_pool.html")]
struct PoolPage {
    chrome: Chrome,
    pool: PoolStatus,
    volumes: Vec<VolumeView>,
    message: Option<String>,
    forms: VolumeForms,
    max_upload_bytes: u64,
    /// Why this host cannot take an upload (said before one starts).
    upload_unavailable: Option<&'static str>,
}

/// Said before an upload starts when the host cannot take one.
const UPLOAD_UNAVAILABLE_ON_DEMO: &str = "Uploads are not available on the demo host: \
     libvirt's test driver cannot store a file's bytes in a volume. Run virtdeck on a real \
     host (qemu:///system) to upload images; creating empty volumes works here.";

fn upload_unavailable(state: &AppState) -> Option<&'static str> {
    crate::adapters::libvirt::is_test_uri(state.hv.uri()).then_some(UPLOAD_UNAVAILABLE_ON_DEMO)
}

impl PoolPage {
    fn bytes(&self, b: &u64) -> String {
        human_bytes(*b)
    }
    fn error_for(&self, form: &str, field: &str) -> Option<&str> {
        if self.forms.errors_for != form {
            return None;
        }
        self.forms
            .errors
            .iter()
            .find(|e| e.field == field)
            .map(|e| e.message.as_str())
    }
    fn resize_error(&self, volume: &str) -> Option<&str> {
        self.error_for(&format!("resize:{volume}"), "size_gib")
    }
    /// ISO images offer no Resize.
    fn resizable(&self, v: &VolumeView) -> bool {
        !is_iso_image(&v.volume.name, v.volume.format.as_deref())
    }
    fn gib(&self, b: &u64) -> u64 {
        b.div_ceil(crate::domain::volumes::GIB)
    }
}

/// Renders a pool's page with its volumes (and who uses each) and the volume forms.
pub async fn render_pool(
    state: &web::Data<AppState>,
    who: &Authed,
    name: String,
    status: StatusCode,
    message: Option<String>,
    forms: VolumeForms,
) -> Result<HttpResponse, AppError> {
    let n = name.clone();
    let (pool, volumes) = lc(state, move |s| {
        let pool = crate::lifecycle::storage::pool(s.hv.as_ref(), &n)?;
        let volumes = if pool.active {
            vols::volumes(s.hv.as_ref(), &n)?
        } else {
            Vec::new()
        };
        Ok((pool, volumes))
    })
    .await?;
    Ok(html(
        status,
        &PoolPage {
            chrome: Chrome::new(who, "storage"),
            pool,
            volumes,
            message,
            forms,
            max_upload_bytes: state.cfg.images.max_bytes,
            upload_unavailable: upload_unavailable(state),
        },
    ))
}

/// A failed change shown on the pool page: field errors (422) at the form they belong
/// to, or a sentence at the top.
async fn pool_failure(
    state: &web::Data<AppState>,
    who: &Authed,
    pool: String,
    e: LifecycleError,
    mut forms: VolumeForms,
    errors_for: String,
) -> Result<HttpResponse, AppError> {
    let (status, errors, form_error) = super::kit::form_failure(e)?;
    if form_error.is_none() {
        forms.errors = errors;
        forms.errors_for = errors_for;
    }
    forms.form_error = form_error;
    render_pool(state, who, pool, status, None, forms).await
}

fn pool_url(pool: &str) -> String {
    format!("/host/storage/{pool}")
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
pub struct CreateForm {
    csrf: String,
    pub name: String,
    pub size_gib: String,
    pub format: String,
}

/// A number field: empty is "not given"; anything else must be a whole number.
fn number_field(s: &str, field: &'static str) -> Result<Option<u64>, LifecycleError> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| {
        LifecycleError::Invalid(vec![FieldError {
            field,
            message: "Enter a whole number of GiB.".into(),
        }])
    })
}

async fn create_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    form: web::Form<CreateForm>,
) -> Result<HttpResponse, AppError> {
    let form = form.into_inner();
    who.check_csrf(Some(&form.csrf))?;
    let pool = path.into_inner();
    let forms = VolumeForms {
        create: form.clone(),
        ..Default::default()
    };
    let size_gib = match number_field(&form.size_gib, "size_gib") {
        Ok(s) => s,
        Err(e) => return pool_failure(&state, &who, pool, e, forms, "create".into()).await,
    };
    let req = NewVolumeRequest {
        name: form.name.clone(),
        size_gib,
        format: Some(form.format.clone()),
    };
    // A thin volume larger than the pool's free space is made, with a warning.
    let warning = thin_overcommit_warning(&state, &pool, &req).await;
    let started = service::storage::create_volume(&state.svc, &who.caller(), &pool, req).await?;
    let outcome = match super::kit::form_outcome(&state, &who, started, |j| {
        format!("Creating volume {}", j.volume)
    })
    .await
    {
        Ok(outcome) => outcome,
        Err(to_jobs_page) => return Ok(to_jobs_page),
    };
    match outcome {
        Ok(j) => Ok(see_other(
            &who,
            &pool_url(&pool),
            &format!(
                "Volume {} created ({}).{}",
                j.volume,
                human_bytes(j.bytes_total),
                warning.map(|w| format!(" {w}")).unwrap_or_default()
            ),
        )),
        Err(e) => pool_failure(&state, &who, pool, e, forms, "create".into()).await,
    }
}

#[derive(Deserialize)]
struct ResizeForm {
    csrf: Option<String>,
    #[serde(default)]
    size_gib: String,
}

async fn resize_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<(String, String)>,
    form: web::Form<ResizeForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let (pool, name) = path.into_inner();
    let which = format!("resize:{name}");
    let r = match number_field(&form.size_gib, "size_gib") {
        Ok(size) => {
            service::storage::resize_volume(&state.svc, &who.caller(), &pool, &name, size).await?
        }
        Err(e) => Err(e),
    };
    match r {
        Ok(r) => Ok(see_other(
            &who,
            &pool_url(&pool),
            &format!(
                "Volume {name} resized from {} to {}.",
                human_bytes(r.previous_bytes),
                human_bytes(r.capacity_bytes)
            ),
        )),
        Err(e) => pool_failure(&state, &who, pool, e, VolumeForms::default(), which).await,
    }
}

async fn delete_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<(String, String)>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let (pool, name) = path.into_inner();
    match service::storage::delete_volume(&state.svc, &who.caller(), &pool, &name).await? {
        Ok(_) => Ok(see_other(
            &who,
            &pool_url(&pool),
            &format!("Volume {name} deleted."),
        )),
        Err(e) => pool_failure(&state, &who, pool, e, VolumeForms::default(), String::new()).await,
    }
}

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
pub struct FetchForm {
    csrf: String,
    pub url: String,
    pub name: String,
}

async fn fetch_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    form: web::Form<FetchForm>,
) -> Result<HttpResponse, AppError> {
    let form = form.into_inner();
    who.check_csrf(Some(&form.csrf))?;
    let pool = path.into_inner();
    let req = FetchRequest {
        url: form.url.clone(),
        name: form.name.clone(),
    };
    match service::storage::fetch_volume(&state.svc, &who.caller(), &pool, req).await? {
        Ok(job) => Ok(see_other(
            &who,
            "/jobs",
            &format!(
                "Fetching {} into {}/{} (job {}).",
                job.source, job.pool, job.volume, job.id
            ),
        )),
        Err(e) => {
            let forms = VolumeForms {
                fetch: form,
                ..Default::default()
            };
            pool_failure(&state, &who, pool, e, forms, "fetch".into()).await
        }
    }
}

// ---- download ----

/// Hands libvirt's bytes to the response body; fails once the client has gone.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
}

impl io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

async fn download(
    state: web::Data<AppState>,
    who: Authed,
    pool: String,
    name: String,
) -> Result<HttpResponse, AppError> {
    let target = service::storage::volume_target(&pool, &name);
    who.require(&state, Role::Admin, "volume.download", &target)
        .await?;
    let (p, n) = (pool.clone(), name.clone());
    let (path, length) = lc(&state, move |s| {
        let v = vols::volume(s.hv.as_ref(), &p, &n)?;
        let length = s.hv.volume_download_bytes(&v.volume.path)?;
        Ok((v.volume.path, length))
    })
    .await?;
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, io::Error>>(CHANNEL_CHUNKS);
    let st = state.clone();
    let a = who.caller().actor();
    actix_web::rt::task::spawn_blocking(move || {
        let mut w = ChannelWriter { tx };
        match st.hv.download_volume(&path, length, &mut w) {
            Ok(sent) => a.audit(
                &st.store,
                "volume.download",
                &target,
                "ok",
                &format!("{sent} bytes sent"),
            ),
            Err(e) => {
                let m = e.user_message();
                a.audit(&st.store, "volume.download", &target, "failed", &m);
                let _ = w.tx.blocking_send(Err(io::Error::other(m)));
            }
        }
    });
    // Wait for the first bytes, so a download libvirt refuses is an error answer rather
    // than a cut-off body.
    let first = rx.recv().await;
    if let Some(Err(e)) = first {
        return Err(AppError::new(ErrorKind::HypervisorFailed, e.to_string()));
    }
    let body = futures_util::stream::iter(first)
        .chain(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header(ContentDisposition {
            disposition: DispositionType::Attachment,
            parameters: vec![DispositionParam::Filename(name)],
        })
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .no_chunking(length)
        .streaming(body))
}

async fn download_page(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    let (pool, name) = path.into_inner();
    download(state, who, pool, name).await
}

#[utoipa::path(
    get,
    path = "/api/v1/pools/{pool}/volumes/{name}",
    operation_id = "download_volume",
    tag = "storage",
    summary = "Download a volume",
    description = "Role: admin. The volume's bytes, streamed from libvirt \
        (`virStorageVolDownload`), with `Content-Length` and `Content-Disposition: attachment`.",
    params(
        ("pool" = String, Path, description = "The pool's name."),
        ("name" = String, Path, description = "The volume's name.")
    ),
    responses(
        (status = 200, description = "The volume's bytes.",
            content((Binary = "application/octet-stream"))),
        (status = 404, description = "There is no such pool or volume.", body = ApiError),
        (status = 502, description = "libvirt refused the download.", body = ApiError),
        RoleReadErrors
    )
)]
async fn api_download(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    let (pool, name) = path.into_inner();
    download(state, who, pool, name).await
}

// ---- upload ----

/// Feeds the request body's chunks to libvirt: waits for the next chunk, the job's
/// cancel, or the idle limit, whichever comes first.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    pending: Bytes,
    runtime: tokio::runtime::Handle,
    cancel: CancellationToken,
    idle: Duration,
}

impl io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pending.is_empty() {
            let (rx, cancel, idle) = (&mut self.rx, &self.cancel, self.idle);
            let next = self.runtime.block_on(async {
                tokio::select! {
                    _ = cancel.cancelled() => Err(io::Error::other("the job was cancelled")),
                    r = tokio::time::timeout(idle, rx.recv()) => r.map_err(|_| {
                        io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("no data arrived for {} seconds", idle.as_secs()),
                        )
                    }),
                }
            })?;
            match next {
                Some(b) => self.pending = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending.split_to(n));
        Ok(n)
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct UploadQuery {
    /// The file name on the client, for the job list.
    source: Option<String>,
}

fn declared_length(req: &HttpRequest) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `PUT /api/v1/pools/{pool}/volumes/{name}`: the body becomes a new volume. Needs
/// `Content-Length`. Answers when the bytes are stored (201 with the job). A cancel, a
/// lost connection or a failure deletes the partial volume, also when nobody waits for
/// the answer any more (the blocking side owns the cleanup).
#[utoipa::path(
    put,
    path = "/api/v1/pools/{pool}/volumes/{name}",
    operation_id = "upload_volume",
    tag = "storage",
    summary = "Upload a new volume",
    description = "Role: admin. The raw request body becomes a new volume (an ISO or any \
        image); it needs `Content-Length` (chunked uploads are refused). Answers when the bytes \
        are stored. A cancelled, cut off, too short or too long upload deletes the partial \
        volume; the job says what happened.",
    params(
        ("pool" = String, Path, description = "The pool's name."),
        ("name" = String, Path, description = "The new volume's name."),
        UploadQuery
    ),
    request_body(content = Binary, content_type = "application/octet-stream",
        description = "The file's bytes."),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 201, description = "The upload's job, ended.", body = JobView),
        (status = 400, description = "No `Content-Length` (`bad_request`, `field: file`).",
            body = ApiError),
        (status = 404, description = "There is no such pool.", body = ApiError),
        (status = 409, description = "The upload failed or was cancelled.", body = ApiError),
        (status = 422, description = "A bad or taken name, a size of 0, or larger than \
            allowed or than the pool's free space (`field: file`).", body = ApiError),
        (status = 502, description = "libvirt failed; the partial volume was deleted.",
            body = ApiError),
        ChangeErrors
    )
)]
async fn api_upload(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<(String, String)>,
    q: web::Query<UploadQuery>,
    mut payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let (pool, name) = path.into_inner();
    let Some(length) = declared_length(&req) else {
        return Err(AppError::new(
            ErrorKind::BadRequest,
            "Send the file's size in Content-Length (chunked uploads are not accepted).",
        )
        .field("file"));
    };
    let source: String = q
        .into_inner()
        .source
        .unwrap_or_else(|| name.clone())
        .chars()
        .filter(|c| !c.is_control())
        .take(255)
        .collect();
    let begun =
        service::storage::begin_upload(&state.svc, &who.caller(), &pool, &name, length, source)
            .await?;
    let t = match begun {
        Ok(t) => t,
        Err(e) => return answer::<()>(Err(e), |_| HttpResponse::Ok().finish()),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
    let reader = ChannelReader {
        rx,
        pending: Bytes::new(),
        runtime: tokio::runtime::Handle::current(),
        cancel: t.cancel.clone(),
        idle: Duration::from_secs(state.cfg.images.upload_idle_seconds),
    };
    let st = state.clone();
    let job = actix_web::rt::task::spawn_blocking(move || {
        let mut reader = reader;
        jobs::transfer(service::runner::job_ctx(&st), &t, &mut reader)
    });
    while let Some(chunk) = payload.next().await {
        match chunk {
            // A closed channel: the job stopped taking bytes (cancelled or failed).
            Ok(bytes) => {
                if tx.send(bytes).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                tracing::info!(error = %e, "upload connection lost");
                break;
            }
        }
    }
    drop(tx);
    let r = job
        .await
        .map_err(|e| AppError::internal(anyhow::anyhow!("upload task failed: {e}")))?;
    if let (Ok(job), Credential::Session { .. }) = (&r, &who.credential) {
        // The upload page sends the browser to the pool page, which shows this once.
        super::flash::put(
            &who,
            super::flash::Flash::notice(format!(
                "Volume {} uploaded ({}).",
                job.volume,
                human_bytes(job.bytes_total)
            )),
        );
    }
    answer(r, |job| HttpResponse::Created().json(JobView::of(job)))
}

/// The warning for a new thin volume larger than its pool's free space (it is made all
/// the same); `None` when it fits, or when the request or pool is not valid (the create
/// itself then says why).
async fn thin_overcommit_warning(
    state: &web::Data<AppState>,
    pool: &str,
    req: &NewVolumeRequest,
) -> Option<String> {
    let v = req.validate().ok()?;
    let p = pool.to_string();
    let status = lc(state, move |s| {
        crate::lifecycle::storage::pool(s.hv.as_ref(), &p)
    })
    .await
    .ok()?;
    overcommit_warning(&v.name, v.size_gib, v.format, status.available_bytes)
}

// ---- API: create, resize, delete, fetch ----

#[utoipa::path(
    post,
    path = "/api/v1/pools/{pool}/volumes",
    operation_id = "create_volume",
    tag = "storage",
    summary = "Create an empty volume",
    description = "Role: admin. An empty, sparse volume, made in the background as a job \
        (`kind: create`). `warnings` says, e.g., that a thin volume is larger than the pool's \
        free space (it is made all the same).",
    params(("pool" = String, Path, description = "The pool's name.")),
    request_body = NewVolumeRequest,
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 202, description = "The job.", body = CreatedVolume,
            headers(("Location" = String, description = "`/api/v1/jobs/{id}`"))),
        (status = 404, description = "There is no such pool.", body = ApiError),
        (status = 422, description = "Bad fields (`invalid`, with `errors`).", body = ApiError),
        ChangeErrors, BodyErrors
    )
)]
async fn api_create(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    body: web::Json<NewVolumeRequest>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let pool = path.into_inner();
    let body = body.into_inner();
    let warning = thin_overcommit_warning(&state, &pool, &body).await;
    let r = service::storage::create_volume(&state.svc, &who.caller(), &pool, body).await?;
    // The answer is the job, plus `warnings` (sentences; empty when none) such as a thin
    // volume larger than the pool's free space.
    answer(r, |job| {
        HttpResponse::Accepted()
            .insert_header(("location", format!("/api/v1/jobs/{}", job.id)))
            .json(CreatedVolume {
                job: JobView::of(job),
                warnings: warning.into_iter().collect(),
            })
    })
}

/// A new volume's job, and what to know about it.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct CreatedVolume {
    #[serde(flatten)]
    job: JobView,
    /// Sentences such as a thin volume larger than the pool's free space; empty when none.
    warnings: Vec<String>,
}

/// A volume's new size.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ResizeBody {
    size_gib: Option<u64>,
}

#[utoipa::path(
    patch,
    path = "/api/v1/pools/{pool}/volumes/{name}",
    operation_id = "resize_volume",
    tag = "storage",
    summary = "Resize a volume",
    description = "Role: admin. Growing always works; a raw volume may shrink down to its \
        allocation, a qcow2 only grows.",
    params(
        ("pool" = String, Path, description = "The pool's name."),
        ("name" = String, Path, description = "The volume's name.")
    ),
    request_body = ResizeBody,
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "The resize.", body = VolumeResized),
        (status = 404, description = "There is no such pool or volume.", body = ApiError),
        (status = 409, description = "A running VM uses it.", body = ApiError),
        (status = 422, description = "A bad size.", body = ApiError),
        (status = 502, description = "libvirt refused the resize.", body = ApiError),
        ChangeErrors, BodyErrors
    )
)]
async fn api_resize(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<(String, String)>,
    body: web::Json<ResizeBody>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let (pool, name) = path.into_inner();
    let r = service::storage::resize_volume(&state.svc, &who.caller(), &pool, &name, body.size_gib)
        .await?;
    answer(r, |v| HttpResponse::Ok().json(v))
}

#[utoipa::path(
    delete,
    path = "/api/v1/pools/{pool}/volumes/{name}",
    operation_id = "delete_volume",
    tag = "storage",
    summary = "Delete a volume",
    description = "Role: admin. Refused while a VM has it as a disk or CD-ROM, naming the VMs.",
    params(
        ("pool" = String, Path, description = "The pool's name."),
        ("name" = String, Path, description = "The volume's name.")
    ),
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 200, description = "The deleted volume.", body = PoolVolume),
        (status = 404, description = "There is no such pool or volume.", body = ApiError),
        (status = 409, description = "A VM uses it.", body = ApiError),
        (status = 502, description = "libvirt refused the delete.", body = ApiError),
        ChangeErrors
    )
)]
async fn api_delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let (pool, name) = path.into_inner();
    let r = service::storage::delete_volume(&state.svc, &who.caller(), &pool, &name).await?;
    answer(r, |v| HttpResponse::Ok().json(v))
}

#[utoipa::path(
    post,
    path = "/api/v1/pools/{pool}/fetch",
    operation_id = "fetch_volume",
    tag = "storage",
    summary = "Fetch an image from a URL",
    description = "Role: admin. Downloads `url` (http or https, which must send \
        `Content-Length`) into a new volume in the background; `name` defaults to the URL's \
        file name.",
    params(("pool" = String, Path, description = "The pool's name.")),
    request_body = FetchRequest,
    security(("bearer" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 202, description = "The fetch's job.", body = JobView,
            headers(("Location" = String, description = "`/api/v1/jobs/{id}`"))),
        (status = 404, description = "There is no such pool.", body = ApiError),
        (status = 422, description = "A bad or taken name, or a URL that is not http/https, \
            carries a user name or password, or a `#fragment` (`field: url`).", body = ApiError),
        ChangeErrors, BodyErrors
    )
)]
async fn api_fetch(
    req: HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    body: web::Json<FetchRequest>,
) -> Result<HttpResponse, AppError> {
    csrf_header(&req, &who)?;
    let r = service::storage::fetch_volume(
        &state.svc,
        &who.caller(),
        &path.into_inner(),
        body.into_inner(),
    )
    .await?;
    answer(r, accepted)
}
