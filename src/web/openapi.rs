//! The OpenAPI 3.1 document of `/api/v1`, generated from the handlers' `#[utoipa::path]`
//! annotations and the answers' `ToSchema` types, served at `GET /api/v1/openapi.json`
//! and shown by the API page (`GET /docs/api`). docs/api.md stays the narrative guide;
//! `tests/fast/openapi.rs` holds the document to the router and to real answers.

use super::errors::{html, ApiError, AppError};
use super::pages::Chrome;
use super::session::Authed;
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use askama::Template;
use std::collections::BTreeMap;
use std::sync::LazyLock;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr, Response, ResponseBuilder};
use utoipa::{IntoResponses, Modify, OpenApi, PartialSchema, ToSchema};

pub const TAG_ACCOUNT: &str = "account";
pub const TAG_HOST: &str = "host";
pub const TAG_VMS: &str = "vms";
pub const TAG_SNAPSHOTS: &str = "snapshots";
pub const TAG_CONSOLES: &str = "consoles";
pub const TAG_STORAGE: &str = "storage";
pub const TAG_NETWORKS: &str = "networks";
pub const TAG_HOST_NETWORK: &str = "host network";
pub const TAG_JOBS: &str = "jobs";
pub const TAG_TEMPLATES: &str = "templates";
pub const TAG_KICKSTARTS: &str = "kickstarts";
pub const TAG_FLEET: &str = "fleet";
pub const TAG_PEER: &str = "peer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "virtdeck API",
        description = "JSON over the same port as the pages, under `/api/v1`. Authenticate \
            with `Authorization: Bearer <token>` (an API token acts with its user's role) or \
            with the session cookie of a signed-in browser, which then needs the session's \
            CSRF token in `X-CSRF-Token` for every call that changes something. Every error \
            answer is `ApiError`. Each operation says the role it needs. The narrative guide, \
            with examples, is docs/api.md.",
    ),
    paths(
        openapi_json,
        super::api::whoami,
        super::api::host,
        super::api::vms,
        super::api::create_vm,
        super::api::vm,
        super::api::patch_vm,
        super::api::bulk,
        super::api::bulk_outcome,
        super::api::change_cdrom,
        super::api::grow_disk,
        super::api_devices::add_disk,
        super::api_devices::detach_disk,
        super::api_devices::add_nic,
        super::api_devices::set_nic_link,
        super::api_devices::remove_nic,
        super::api_devices::attach_hostdev,
        super::api_devices::detach_hostdev,
        super::api_devices::host_devices,
        super::api_devices::set_start_order,
        super::api_backups::list,
        super::api_backups::backup_vm,
        super::api_backups::restore,
        super::api_backups::restore_over,
        super::api_backups::verify,
        super::api_backups::delete,
        super::api_backups::add_target,
        super::api_backups::remove_target,
        super::api_backups::scan_target,
        super::api_backups::schedules,
        super::api_backups::create_schedule,
        super::api_backups::delete_schedule,
        super::api_backups::run_schedule,
        super::api::delete_vm,
        super::api::vm_action,
        super::api::clone_vm,
        super::api::snapshots,
        super::api::create_snapshot,
        super::api::revert_snapshot,
        super::api::delete_snapshot,
        super::console::mint_ticket,
        super::api::pools,
        super::api_storage::define_pool,
        super::api_storage::pool_action,
        super::api_storage::delete_pool,
        super::api_storage::pool_volumes,
        super::volumes::api_create,
        super::volumes::api_upload,
        super::volumes::api_download,
        super::volumes::api_resize,
        super::volumes::api_delete,
        super::volumes::api_fetch,
        super::api_storage::networks,
        super::api_storage::create_network,
        super::api_storage::network,
        super::api_storage::network_action,
        super::api_storage::remove_network,
        super::hostnet_api::network,
        super::hostnet_api::network_plan,
        super::hostnet_api::sysctl,
        super::hostnet_api::sysctl_plan,
        super::hostnet_api::pending,
        super::hostnet_api::apply,
        super::hostnet_api::confirm,
        super::hostnet_api::rollback,
        super::jobs::api_jobs,
        super::jobs::api_job,
        super::jobs::api_cancel,
        super::pages::templates::api_list,
        super::pages::templates::api_mark,
        super::pages::templates::api_unmark,
        super::pages::templates::api_create,
        super::kickstarts::api_list,
        super::kickstarts::api_create,
        super::kickstarts::api_get,
        super::kickstarts::api_update,
        super::kickstarts::api_delete,
        super::kickstarts::api_status,
        super::fleet_api::hosts,
        super::fleet_api::vms,
        super::fleet_api::where_fits,
        super::fleet_api::invite,
        super::fleet_api::check_peer,
        super::fleet_api::pair,
        super::fleet_api::unpair,
        super::fleet_api::migrate,
        super::fleet_api::drain,
        super::fleet_api::end_drain,
        super::fleet_api::hello,
        super::fleet_api::accept_pairing,
        super::fleet_api::peer_summary,
        super::fleet_api::peer_unpair,
        super::fleet_api::peer_fit,
        super::fleet_api::peer_fit_size,
        super::fleet_api::peer_arrival,
        super::fleet_api::peer_arrival_end,
    ),
    components(schemas(
        ApiError,
        Binary,
        VmActionName,
        PoolActionName,
        NetworkActionName,
        ConsoleKindName
    )),
    modifiers(&Security),
    security(("bearer" = []), ("session" = [])),
    tags(
        (name = TAG_ACCOUNT, description = "Who the caller is, and this document."),
        (name = TAG_HOST, description = "The host: facts, KVM, capacity in units."),
        (name = TAG_VMS, description = "Virtual machines: create, list, change, delete, power \
            actions, clone."),
        (name = TAG_SNAPSHOTS, description = "Snapshots of a VM."),
        (name = TAG_CONSOLES, description = "Tickets for the VNC and serial console websockets."),
        (name = TAG_STORAGE, description = "Storage pools and their volumes: uploads, \
            downloads, fetches from a URL."),
        (name = TAG_NETWORKS, description = "libvirt networks (NAT, isolated)."),
        (name = TAG_HOST_NETWORK, description = "The host's own network (bonds, bridges, \
            VLANs) and kernel settings: plan, apply, confirm or roll back."),
        (name = TAG_JOBS, description = "Background jobs: uploads, fetches, new volumes, \
            clones, migrations."),
        (name = TAG_TEMPLATES, description = "VM templates and VMs made from them."),
        (name = TAG_KICKSTARTS, description = "Kickstart files served to network installs."),
        (name = TAG_FLEET, description = "Peer hosts: pairing, the fleet's hosts and VMs, \
            migration, drain."),
        (name = TAG_PEER, description = "Host to host, not for users: a peer credential \
            (`Authorization: VirtdeckPeer …`), a pairing code, or nothing."),
    )
)]
pub struct ApiDoc;

/// The document as served, built once.
pub fn document() -> &'static str {
    static JSON: LazyLock<String> = LazyLock::new(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    });
    &JSON
}

/// The security schemes: a bearer token, the session cookie (whose changes need the CSRF
/// header too), and a peer host's credential.
struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token from `virtdeck token create --user NAME` or the Users \
                         page: `Authorization: Bearer <token>`. It acts with its user's role \
                         and needs no CSRF token.",
                    ))
                    .build(),
            ),
        );
        c.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                super::session::SESSION_COOKIE,
                "The session cookie of a signed-in browser.",
            ))),
        );
        c.add_security_scheme(
            "csrf",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-CSRF-Token",
                "The session's CSRF token (it is in every page's forms): needed with the \
                 session cookie on every call that changes something.",
            ))),
        );
        c.add_security_scheme(
            "peer",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "A paired peer host's credential: `Authorization: VirtdeckPeer <credential>`. \
                 It opens only `/api/v1/peer/*`.",
            ))),
        );
    }
}

// ---- error answers shared by many operations ----

fn error_response(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(utoipa::openapi::Ref::from_schema_name(
                        ApiError::name(),
                    )))
                    .build(),
            )
            .build(),
    )
}

fn errors(list: &[(u16, &str)]) -> BTreeMap<String, RefOr<Response>> {
    list.iter()
        .map(|(status, description)| (status.to_string(), error_response(description)))
        .collect()
}

const UNAUTHORIZED: (u16, &str) = (401, "No valid session or API token (`unauthorized`).");
const INTERNAL: (u16, &str) = (
    500,
    "Something went wrong inside virtdeck; the server log has the details (`internal`).",
);
const UNAVAILABLE: (u16, &str) = (503, "libvirt is unreachable or refusing (`unavailable`).");

/// What any read may answer besides its own errors.
pub struct ReadErrors;

impl IntoResponses for ReadErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors(&[UNAUTHORIZED, INTERNAL, UNAVAILABLE])
    }
}

/// What a read that needs a role above viewer may answer besides its own errors.
pub struct RoleReadErrors;

impl IntoResponses for RoleReadErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors(&[
            UNAUTHORIZED,
            (
                403,
                "The caller's role may not read this (`forbidden`); the refusal is audited.",
            ),
            INTERNAL,
            UNAVAILABLE,
        ])
    }
}

/// What any change may answer besides its own errors.
pub struct ChangeErrors;

impl IntoResponses for ChangeErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors(&[
            UNAUTHORIZED,
            (
                403,
                "The caller's role may not do this, or a session call came without its \
                 `X-CSRF-Token` (`forbidden`); the refusal is audited.",
            ),
            INTERNAL,
            UNAVAILABLE,
        ])
    }
}

/// What a request with a body (or a query) may answer when it cannot be read.
pub struct BodyErrors;

impl IntoResponses for BodyErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors(&[
            (
                400,
                "The body is not JSON of this shape, or the query string is invalid \
                 (`bad_request`).",
            ),
            (413, "The body is too large (`payload_too_large`)."),
        ])
    }
}

/// What a call from a peer host may answer besides its own errors.
pub struct PeerErrors;

impl IntoResponses for PeerErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors(&[
            (
                401,
                "No valid peer credential (`unauthorized`): user sessions and tokens are \
                 refused here.",
            ),
            INTERNAL,
            UNAVAILABLE,
        ])
    }
}

// ---- values of path segments ----

/// A VM power action (`POST /api/v1/vms/{name}/{action}`).
#[derive(ToSchema)]
#[schema(rename_all = "kebab-case")]
pub enum VmActionName {
    Start,
    Shutdown,
    Reboot,
    ForceOff,
    Pause,
    Resume,
}

/// A pool action (`POST /api/v1/pools/{name}/{action}`).
#[derive(ToSchema)]
#[schema(rename_all = "kebab-case")]
pub enum PoolActionName {
    Start,
    Stop,
    Refresh,
    Autostart,
    NoAutostart,
}

/// A libvirt network action (`POST /api/v1/networks/{name}/{action}`).
#[derive(ToSchema)]
#[schema(rename_all = "kebab-case")]
pub enum NetworkActionName {
    Start,
    Stop,
    Autostart,
    NoAutostart,
}

/// A console kind.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum ConsoleKindName {
    Vnc,
    Serial,
}

/// Raw bytes (a volume's content).
pub struct Binary;

impl PartialSchema for Binary {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .content_media_type("application/octet-stream")
            .description(Some("Raw bytes."))
            .into()
    }
}

impl ToSchema for Binary {}

// ---- the document and the page ----

#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    operation_id = "get_openapi",
    tag = TAG_ACCOUNT,
    summary = "This document",
    description = "Role: any signed-in user or API token. The OpenAPI 3.1 document of \
        `/api/v1`, generated from virtdeck's code.",
    responses(
        (status = 200, description = "The OpenAPI document.", content_type = "application/json",
            body = Object),
        ReadErrors
    )
)]
pub async fn openapi_json(_who: Authed) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document())
}

#[derive(Template)]
#[template(path = "api_docs.html")]
struct DocsPage {
    chrome: Chrome,
}

/// The API page: the document rendered in the browser by the vendored viewer (Swagger
/// UI), under the site's usual Content-Security-Policy: it needs no inline script or style.
pub async fn docs_page(who: Authed) -> Result<HttpResponse, AppError> {
    Ok(html(
        StatusCode::OK,
        &DocsPage {
            chrome: Chrome::new(&who, "api"),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The path segments the document lists are the ones the handlers accept.
    #[test]
    fn path_values_are_the_accepted_ones() {
        let doc: serde_json::Value = serde_json::from_str(document()).unwrap();
        let names = |schema: &str| -> Vec<String> {
            doc["components"]["schemas"][schema]["enum"]
                .as_array()
                .unwrap_or_else(|| panic!("{schema} is an enum"))
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        };
        for a in names("VmActionName") {
            assert!(crate::domain::vm::VmAction::parse(&a).is_some(), "{a}");
        }
        assert_eq!(names("VmActionName").len(), 6);
        use crate::lifecycle::storage::{NetworkAction, PoolAction};
        for a in names("PoolActionName") {
            assert!(PoolAction::parse(&a).is_some(), "{a}");
        }
        assert_eq!(names("PoolActionName").len(), 5);
        for a in names("NetworkActionName") {
            assert!(NetworkAction::parse(&a).is_some(), "{a}");
        }
        assert_eq!(names("NetworkActionName").len(), 4);
        for k in names("ConsoleKindName") {
            assert!(k.parse::<crate::console::ConsoleKind>().is_ok(), "{k}");
        }
    }

    #[test]
    fn the_document_is_openapi_3_1() {
        let doc: serde_json::Value = serde_json::from_str(document()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
    }
}
