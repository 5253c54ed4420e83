//! Live console sessions: the per-VM limit, who holds a serial console, take-over, and
//! counters (sessions opened, bytes each way) for tests and benchmarks.

use super::ConsoleKind;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Counters over the life of the process.
#[derive(Default, Debug)]
pub struct Stats {
    /// Websocket sessions that reached the VM.
    pub sessions_opened: AtomicU64,
    /// Bytes the proxies passed from browsers to VMs.
    pub bytes_to_vm: AtomicU64,
    /// Bytes the proxies passed from VMs to browsers.
    pub bytes_from_vm: AtomicU64,
}

impl Stats {
    pub fn sessions_opened(&self) -> u64 {
        self.sessions_opened.load(Ordering::Relaxed)
    }
    pub fn bytes_to_vm(&self) -> u64 {
        self.bytes_to_vm.load(Ordering::Relaxed)
    }
    pub fn bytes_from_vm(&self) -> u64 {
        self.bytes_from_vm.load(Ordering::Relaxed)
    }
}

/// Tells a running proxy to end, with a reason for its user.
#[derive(Default)]
pub struct Kill {
    notify: tokio::sync::Notify,
    reason: Mutex<Option<String>>,
}

impl Kill {
    pub fn fire(&self, reason: String) {
        if let Ok(mut r) = self.reason.lock() {
            r.get_or_insert(reason);
        }
        self.notify.notify_one();
    }

    /// Waits until fired; returns the reason.
    pub async fn fired(&self) -> String {
        self.notify.notified().await;
        self.reason
            .lock()
            .ok()
            .and_then(|r| r.clone())
            .unwrap_or_else(|| "The console was closed by virtdeck.".into())
    }
}

/// A session as listed for the VM page.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionInfo {
    pub id: u64,
    pub vm: String,
    pub kind: &'static str,
    pub username: String,
    /// Unix seconds.
    pub started_at: i64,
    pub view_only: bool,
}

struct Entry {
    info: SessionInfo,
    kill: Arc<Kill>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    sessions: HashMap<u64, Entry>,
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[derive(Default)]
pub struct Registry {
    inner: Arc<Mutex<Inner>>,
}

/// A reserved place in the registry; dropping it frees the place.
pub struct Slot {
    inner: Arc<Mutex<Inner>>,
    pub id: u64,
    pub kill: Arc<Kill>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut i) = self.inner.lock() {
            i.sessions.remove(&self.id);
        }
    }
}

/// The VM already has as many console sessions as allowed.
#[derive(Debug, thiserror::Error)]
#[error("VM {vm} already has {open} console sessions open, the most allowed (console.max_sessions_per_vm); close one and try again")]
pub struct Full {
    pub vm: String,
    pub open: usize,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves a place for a new session on `vm`, unless it has `max` already.
    pub fn reserve(
        &self,
        vm: &str,
        kind: ConsoleKind,
        username: &str,
        view_only: bool,
        max: usize,
    ) -> Result<Slot, Full> {
        let mut i = self.lock();
        let open = i.sessions.values().filter(|e| e.info.vm == vm).count();
        if open >= max {
            return Err(Full {
                vm: vm.to_string(),
                open,
            });
        }
        i.next_id += 1;
        let id = i.next_id;
        let kill = Arc::new(Kill::default());
        i.sessions.insert(
            id,
            Entry {
                info: SessionInfo {
                    id,
                    vm: vm.to_string(),
                    kind: kind.as_str(),
                    username: username.to_string(),
                    started_at: unix_now(),
                    view_only,
                },
                kill: kill.clone(),
            },
        );
        Ok(Slot {
            inner: self.inner.clone(),
            id,
            kill,
        })
    }

    /// Open sessions on `vm` (all kinds), oldest first.
    pub fn on_vm(&self, vm: &str) -> Vec<SessionInfo> {
        let mut v: Vec<_> = self
            .lock()
            .sessions
            .values()
            .filter(|e| e.info.vm == vm)
            .map(|e| e.info.clone())
            .collect();
        v.sort_by_key(|s| s.id);
        v
    }

    /// Ends every session of `kind` on `vm` except `keep`, telling its user why.
    pub fn kick(&self, vm: &str, kind: ConsoleKind, keep: u64, reason: &str) -> usize {
        let i = self.lock();
        let mut n = 0;
        for e in i.sessions.values() {
            if e.info.vm == vm && e.info.kind == kind.as_str() && e.info.id != keep {
                e.kill.fire(reason.to_string());
                n += 1;
            }
        }
        n
    }

    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_per_vm_limit_counts_open_sessions_and_frees_on_drop() {
        let r = Registry::default();
        let a = r.reserve("web01", ConsoleKind::Vnc, "a", false, 2).unwrap();
        let _b = r
            .reserve("web01", ConsoleKind::Serial, "b", false, 2)
            .unwrap();
        assert!(r.reserve("web01", ConsoleKind::Vnc, "c", false, 2).is_err());
        r.reserve("db01", ConsoleKind::Vnc, "c", false, 2)
            .expect("other VMs are counted apart");
        drop(a);
        r.reserve("web01", ConsoleKind::Vnc, "c", false, 2)
            .expect("a place was freed");
    }
}
