//! Live updates: libvirt's VM lifecycle events (virtdeck's own changes and changes made
//! with virsh alike) fanned out to browsers as server-sent events, and the recent ones
//! kept for the VM pages.

use super::errors::AppError;
use super::session::Authed;
use super::AppState;
use crate::domain::vm::VmEvent;
use actix_web::web::Bytes;
use actix_web::{web, HttpResponse};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// Events kept for the VM pages, host-wide.
const RECENT_KEPT: usize = 500;
/// A comment line this often keeps proxies from closing an idle stream.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Streams end after this long; the browser reconnects on its own, which re-checks the
/// session (so a logged-out or expired session stops receiving).
const STREAM_LIFETIME: Duration = Duration::from_secs(300);

pub struct LiveEvents {
    tx: broadcast::Sender<VmEvent>,
    recent: Mutex<VecDeque<VmEvent>>,
}

impl Default for LiveEvents {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(256);
        LiveEvents {
            tx,
            recent: Mutex::new(VecDeque::with_capacity(RECENT_KEPT)),
        }
    }
}

impl LiveEvents {
    /// Called from libvirt's event thread: must not block.
    pub fn publish(&self, event: VmEvent) {
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == RECENT_KEPT {
                recent.pop_front();
            }
            recent.push_back(event.clone());
        }
        // No subscribers is fine.
        let _ = self.tx.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<VmEvent> {
        self.tx.subscribe()
    }

    /// The newest events of one VM, newest first.
    pub fn recent_for(&self, vm: &str, limit: usize) -> Vec<VmEvent> {
        self.recent
            .lock()
            .map(|r| {
                r.iter()
                    .rev()
                    .filter(|e| e.vm == vm)
                    .take(limit)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn sse_event(e: &VmEvent) -> Bytes {
    let data = serde_json::to_string(e).unwrap_or_else(|_| "{}".into());
    Bytes::from(format!("event: vm\ndata: {data}\n\n"))
}

/// `GET /events`: a `text/event-stream` of VM events, for any signed-in role.
pub async fn events(state: web::Data<AppState>, who: Authed) -> Result<HttpResponse, AppError> {
    let rx = state.live.subscribe();
    let started = Instant::now();
    tracing::debug!(user = %who.username, "live updates stream opened");
    let stream =
        futures_util::stream::unfold((rx, started, true), |(mut rx, started, first)| async move {
            if first {
                // Tell the browser how soon to come back if the stream drops.
                return Some((
                    Ok::<Bytes, actix_web::Error>(Bytes::from_static(b"retry: 3000\n\n")),
                    (rx, started, false),
                ));
            }
            let left = STREAM_LIFETIME.checked_sub(started.elapsed())?;
            match tokio::time::timeout(KEEPALIVE.min(left), rx.recv()).await {
                Ok(Ok(e)) => Some((Ok(sse_event(&e)), (rx, started, false))),
                // Fell behind: tell the page to refresh everything.
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => Some((
                    Ok(Bytes::from_static(b"event: resync\ndata: {}\n\n")),
                    (rx, started, false),
                )),
                Ok(Err(broadcast::error::RecvError::Closed)) => None,
                Err(_) if started.elapsed() >= STREAM_LIFETIME => None,
                Err(_) => Some((
                    Ok(Bytes::from_static(b": keepalive\n\n")),
                    (rx, started, false),
                )),
            }
        });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(stream))
}
