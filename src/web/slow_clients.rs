//! Clients that hold connections without finishing their requests: a cap on connections
//! per client address, and deadlines for request bodies (headers have actix's own
//! `client_request_timeout`, idle connections its keep-alive).

use crate::domain::cidr::{any_contains, canonical, Cidr};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::HttpMessage;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Open connections per client address.
pub struct ConnLimits {
    open: Mutex<HashMap<IpAddr, usize>>,
    max_per_address: usize,
    /// Trusted reverse proxies carry many clients on their connections: not capped.
    exempt: Vec<Cidr>,
}

/// One admitted connection; dropping it (when the connection ends) frees its place.
pub struct ConnGuard {
    limits: Arc<ConnLimits>,
    ip: IpAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl ConnLimits {
    pub fn new(max_per_address: usize, exempt: Vec<Cidr>) -> Arc<ConnLimits> {
        Arc::new(ConnLimits {
            open: Mutex::new(HashMap::new()),
            max_per_address,
            exempt,
        })
    }

    /// A place for a new connection from `ip`, or `None` when it has too many open.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnGuard> {
        let ip = canonical(ip);
        if any_contains(&self.exempt, ip) {
            return Some(ConnGuard {
                limits: Arc::new(ConnLimits::new_unlimited()),
                ip,
            });
        }
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max_per_address {
            return None;
        }
        *n += 1;
        Some(ConnGuard {
            limits: self.clone(),
            ip,
        })
    }

    fn new_unlimited() -> ConnLimits {
        ConnLimits {
            open: Mutex::new(HashMap::new()),
            max_per_address: usize::MAX,
            exempt: Vec::new(),
        }
    }

    /// Connections open from `ip` now.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&canonical(ip)).copied().unwrap_or(0)
    }

    /// For `HttpServer::on_connect`: admits the new connection or shuts it at once.
    pub fn on_connect(
        self: &Arc<Self>,
        conn: &dyn std::any::Any,
        ext: &mut actix_web::dev::Extensions,
    ) {
        use actix_web::rt::net::TcpStream;
        let tcp: Option<&TcpStream> = conn.downcast_ref::<TcpStream>().or_else(|| {
            conn.downcast_ref::<actix_tls::accept::rustls_0_23::TlsStream<TcpStream>>()
                .map(|tls| tls.get_ref().0)
        });
        let Some(tcp) = tcp else {
            return;
        };
        let Ok(peer) = tcp.peer_addr() else {
            return;
        };
        match self.admit(peer.ip()) {
            Some(guard) => {
                ext.insert(Arc::new(guard));
            }
            None => {
                tracing::warn!(client = %peer.ip(), max = self.max_per_address,
                    "connection refused: too many open from this address");
                use std::os::fd::AsRawFd;
                // SAFETY: shutdown(2) on a socket this connection owns; the stream stays
                // valid and is closed by its owner, which now reads end-of-file.
                unsafe {
                    libc::shutdown(tcp.as_raw_fd(), libc::SHUT_RDWR);
                }
            }
        }
    }
}

/// Why a body was cut off: the form/JSON error handlers answer 408 for it.
pub const BODY_TIMEOUT_MESSAGE: &str = "request body timed out";

/// Whether an I/O error is a body deadline set by [`body_deadlines`].
pub fn is_body_timeout(e: &PayloadError) -> bool {
    matches!(e, PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut)
}

/// Bodies with rules of their own: uploads stream for as long as they make progress (their
/// own idle rule), and a websocket's "body" is the user's keystrokes for as long as the
/// console is open (consoles have their own idle and stall limits).
fn has_own_body_rules(req: &ServiceRequest) -> bool {
    let upload =
        req.method() == actix_web::http::Method::PUT && req.path().starts_with("/api/v1/pools/");
    let websocket = req
        .headers()
        .get(actix_web::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    upload || websocket
}

/// Deadlines for request bodies: no chunk for `idle`, or not complete after `total`, ends
/// the body with a timeout error (answered 408, and the connection is closed).
pub async fn body_deadlines(
    mut req: ServiceRequest,
    next: Next<impl actix_web::body::MessageBody>,
) -> Result<ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let limits = req
        .app_data::<actix_web::web::Data<super::AppState>>()
        .map(|s| {
            (
                Duration::from_secs(s.cfg.http.body_idle_timeout_seconds),
                Duration::from_secs(s.cfg.http.body_timeout_seconds),
            )
        });
    if let (Some((idle, total)), false) = (limits, has_own_body_rules(&req)) {
        let payload = req.take_payload();
        let deadline = tokio::time::Instant::now() + total;
        let timed = futures_util::stream::unfold(Some(payload), move |state| async move {
            let mut payload = state?;
            let now = tokio::time::Instant::now();
            let wait = idle.min(deadline.saturating_duration_since(now));
            match tokio::time::timeout(wait, payload.next()).await {
                Ok(Some(item)) => Some((item, Some(payload))),
                Ok(None) => None,
                Err(_) => Some((
                    Err::<Bytes, _>(PayloadError::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        BODY_TIMEOUT_MESSAGE,
                    ))),
                    None,
                )),
            }
        });
        let boxed: std::pin::Pin<
            Box<dyn futures_util::Stream<Item = Result<Bytes, PayloadError>>>,
        > = Box::pin(timed);
        req.set_payload(Payload::Stream { payload: boxed });
    }
    next.call(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_connections_per_address_and_frees_on_drop() {
        let proxy: Cidr = "10.0.0.5".parse().unwrap();
        let limits = ConnLimits::new(2, vec![proxy]);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = limits.admit(ip).unwrap();
        let _b = limits.admit(ip).unwrap();
        assert!(limits.admit(ip).is_none());
        assert!(limits.admit("::ffff:192.0.2.1".parse().unwrap()).is_none());
        assert!(limits.admit("192.0.2.2".parse().unwrap()).is_some());
        drop(a);
        assert_eq!(limits.open_from(ip), 1);
        assert!(limits.admit(ip).is_some());
        let many: Vec<_> = (0..10)
            .map(|_| limits.admit("10.0.0.5".parse().unwrap()))
            .collect();
        assert!(
            many.iter().all(Option::is_some),
            "trusted proxies are not capped"
        );
    }
}
