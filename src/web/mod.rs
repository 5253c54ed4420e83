//! The HTTP layer: routes, extractors, askama view models, error → HTTP.
//! The only module that knows about HTTP.

pub mod api;
pub mod api_backups;
pub mod api_devices;
pub mod api_storage;
pub mod assets;
pub mod audit;
pub mod client_addr;
pub mod console;
pub mod errors;
pub mod flash;
pub mod fleet_api;
pub mod hostnet_api;
pub mod jobs;
pub mod kickstarts;
pub mod kit;
pub mod live;
pub mod metrics;
pub mod openapi;
pub mod pages;
pub mod password_gate;
pub mod privacy;
pub mod routes;
pub mod server;
pub mod session;
pub mod slow_clients;
pub mod usage;
pub mod volumes;

use crate::hypervisor::Hypervisor;
use crate::service::Services;
use crate::store::{Store, StoreResult};
use errors::AppError;
use std::sync::{Arc, Mutex};

/// Shared by every request: the service layer's [`Services`] (settings, store, libvirt,
/// changes in progress; reached through `Deref`, so `state.hv` is `state.svc.hv`) and
/// what only the web layer needs.
pub struct AppState {
    pub svc: Arc<Services>,
    /// One-time token for creating the first admin; `None` once used or when accounts exist.
    pub setup_token: Mutex<Option<String>>,
    /// Whether cookies get `Secure` (served over TLS).
    pub tls: bool,
    /// VM events from libvirt, for live pages and the VM pages' recent events.
    pub live: Arc<live::LiveEvents>,
    /// Console tickets and live console sessions.
    pub consoles: crate::console::Consoles,
    /// Usage history of the host and its VMs, filled by the sampler.
    pub usage: Arc<crate::usage::Usage>,
    /// virtdeck's own counters for `/metrics`.
    pub metrics: Arc<metrics::Metrics>,
    /// `[http] trusted_proxies`, parsed.
    pub trusted_proxies: Vec<crate::domain::cidr::Cidr>,
    /// Caps the Argon2 password checks running at once.
    pub password_gate: password_gate::PasswordGate,
}

impl std::ops::Deref for AppState {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.svc
    }
}

impl AppState {
    /// Whether cookies for this request get `Secure`: served over TLS, or a trusted
    /// reverse proxy says the browser used HTTPS.
    pub fn secure_cookies(&self, req: &actix_web::HttpRequest) -> bool {
        self.tls || self.forwarded_https(req)
    }

    /// A trusted reverse proxy says the browser used HTTPS.
    pub fn forwarded_https(&self, req: &actix_web::HttpRequest) -> bool {
        let h = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        client_addr::forwarded_https(
            req.peer_addr().map(|a| a.ip()),
            h("forwarded"),
            h("x-forwarded-proto"),
            &self.trusted_proxies,
        )
    }
}

pub use crate::service::now;

/// Runs a store call off the async runtime.
pub async fn db<T, F>(state: &AppState, f: F) -> Result<T, AppError>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> StoreResult<T> + Send + 'static,
{
    let store = state.store.clone();
    actix_web::web::block(move || f(&store))
        .await
        .map_err(|e| AppError::internal(anyhow::anyhow!("blocking task failed: {e}")))?
        .map_err(|e| AppError::internal(anyhow::Error::new(e)))
}

/// Runs a lifecycle call (hypervisor + store) off the async runtime.
pub async fn lc<T, F>(
    state: &actix_web::web::Data<AppState>,
    f: F,
) -> Result<T, crate::lifecycle::LifecycleError>
where
    T: Send + 'static,
    F: FnOnce(&AppState) -> crate::lifecycle::LcResult<T> + Send + 'static,
{
    let st = state.clone();
    actix_web::web::block(move || f(&st))
        .await
        .map_err(|e| crate::lifecycle::LifecycleError::failed(format!("internal error: {e}")))?
}

/// Runs a hypervisor call off the async runtime.
pub async fn hv<T, F>(state: &AppState, f: F) -> Result<T, AppError>
where
    T: Send + 'static,
    F: FnOnce(&dyn Hypervisor) -> crate::hypervisor::HvResult<T> + Send + 'static,
{
    let hv = state.hv.clone();
    actix_web::web::block(move || f(hv.as_ref()))
        .await
        .map_err(|e| AppError::internal(anyhow::anyhow!("blocking task failed: {e}")))?
        .map_err(AppError::hypervisor)
}

/// Runs a console-related hypervisor call off the async runtime.
pub async fn hv_console<T, F>(state: &AppState, f: F) -> Result<T, AppError>
where
    T: Send + 'static,
    F: FnOnce(&dyn Hypervisor) -> Result<T, crate::hypervisor::ConsoleError> + Send + 'static,
{
    let hv = state.hv.clone();
    actix_web::web::block(move || f(hv.as_ref()))
        .await
        .map_err(|e| AppError::internal(anyhow::anyhow!("blocking task failed: {e}")))?
        .map_err(console::console_error)
}
