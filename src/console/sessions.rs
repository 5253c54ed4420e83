//! Live console sessions: the per-VM limit, who holds a serial console, take-over, and
//! counters (sessions opened, bytes each way) for tests and benchmarks.

use super::proxy::codes;
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
    /// The websocket close code and the reason.
    reason: Mutex<Option<(u16, String)>>,
}

impl Kill {
    /// Another user took the console over.
    pub fn fire(&self, reason: String) -> bool {
        self.fire_with(codes::TAKEN_OVER, reason)
    }

    /// Tells the proxy to end with `code` and `reason`; false if it had been told
    /// already (the first reason stands).
    pub fn fire_with(&self, code: u16, reason: String) -> bool {
        let first = match self.reason.lock() {
            Ok(mut r) if r.is_none() => {
                *r = Some((code, reason));
                true
            }
            _ => false,
        };
        self.notify.notify_one();
        first
    }

    /// Waits until fired; returns the close code and the reason.
    pub async fn fired(&self) -> (u16, String) {
        self.notify.notified().await;
        self.reason
            .lock()
            .ok()
            .and_then(|r| r.clone())
            .unwrap_or_else(|| {
                (
                    codes::TAKEN_OVER,
                    "The console was closed by virtdeck.".into(),
                )
            })
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
    /// The account that opened it.
    #[serde(skip)]
    pub user_id: i64,
    /// SHA-256 of the session cookie or API token that opened it.
    #[serde(skip)]
    pub credential_sha256: String,
    /// Opened with an API token (else with a sign-in session).
    #[serde(skip)]
    pub api_token: bool,
}

/// Who opens a session, and with which credential.
#[derive(Debug, Clone)]
pub struct Holder {
    pub user_id: i64,
    pub username: String,
    pub credential_sha256: String,
    pub api_token: bool,
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

/// The VM already has as many console sessions of this sort as allowed.
#[derive(Debug, thiserror::Error)]
#[error("VM {vm} already has {open} {sort} open, the most allowed ({setting} = {max}); close one and try again")]
pub struct Full {
    pub vm: String,
    pub open: usize,
    pub max: usize,
    /// "console sessions" or "view-only console sessions".
    pub sort: &'static str,
    pub setting: &'static str,
}

/// How many sessions of each sort one VM may have: viewers have their own places, so
/// they never take an operator's.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Sessions with keyboard, mouse or serial input (`console.max_sessions_per_vm`).
    pub full: usize,
    /// View-only sessions (`console.max_viewers_per_vm`).
    pub view_only: usize,
}

impl Caps {
    /// Whether a new session of this sort fits beside `open`.
    pub fn check<'a>(
        &self,
        vm: &str,
        view_only: bool,
        open: impl IntoIterator<Item = &'a SessionInfo>,
    ) -> Result<(), Full> {
        let n = open
            .into_iter()
            .filter(|s| s.vm == vm && s.view_only == view_only)
            .count();
        let (max, sort, setting) = if view_only {
            (
                self.view_only,
                "view-only console sessions",
                "console.max_viewers_per_vm",
            )
        } else {
            (self.full, "console sessions", "console.max_sessions_per_vm")
        };
        if n >= max {
            return Err(Full {
                vm: vm.to_string(),
                open: n,
                max,
                sort,
                setting,
            });
        }
        Ok(())
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves a place for a new session on `vm`, unless its sort is full there.
    pub fn reserve(
        &self,
        vm: &str,
        kind: ConsoleKind,
        holder: &Holder,
        view_only: bool,
        caps: Caps,
    ) -> Result<Slot, Full> {
        let mut i = self.lock();
        caps.check(vm, view_only, i.sessions.values().map(|e| &e.info))?;
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
                    username: holder.username.clone(),
                    started_at: unix_now(),
                    view_only,
                    user_id: holder.user_id,
                    credential_sha256: holder.credential_sha256.clone(),
                    api_token: holder.api_token,
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
        self.matching(|s| s.vm == vm)
    }

    /// Every open session, oldest first.
    pub fn all(&self) -> Vec<SessionInfo> {
        self.matching(|_| true)
    }

    fn matching(&self, keep: impl Fn(&SessionInfo) -> bool) -> Vec<SessionInfo> {
        let mut v: Vec<_> = self
            .lock()
            .sessions
            .values()
            .filter(|e| keep(&e.info))
            .map(|e| e.info.clone())
            .collect();
        v.sort_by_key(|s| s.id);
        v
    }

    /// Ends every session of `kind` on `vm` except `keep`, telling its user why.
    pub fn kick(&self, vm: &str, kind: ConsoleKind, keep: u64, reason: &str) -> usize {
        self.close_where(
            |s| s.vm == vm && s.kind == kind.as_str() && s.id != keep,
            codes::TAKEN_OVER,
            reason,
        )
        .len()
    }

    /// Ends every session `user_id` holds (account deleted, password or role changed),
    /// telling them why; returns the sessions closed by this call (not those already
    /// told to end).
    pub fn close_user(&self, user_id: i64, reason: &str) -> Vec<SessionInfo> {
        self.close_where(|s| s.user_id == user_id, codes::ACCESS_ENDED, reason)
    }

    /// Ends every session opened with this credential (signed out, token revoked).
    pub fn close_credential(&self, credential_sha256: &str, reason: &str) -> Vec<SessionInfo> {
        self.close_where(
            |s| s.credential_sha256 == credential_sha256,
            codes::ACCESS_ENDED,
            reason,
        )
    }

    /// Ends one session; returns it unless it had already ended.
    pub fn close(&self, id: u64, reason: &str) -> Option<SessionInfo> {
        self.close_where(|s| s.id == id, codes::ACCESS_ENDED, reason)
            .pop()
    }

    fn close_where(
        &self,
        which: impl Fn(&SessionInfo) -> bool,
        code: u16,
        reason: &str,
    ) -> Vec<SessionInfo> {
        let i = self.lock();
        let mut closed = Vec::new();
        for e in i.sessions.values() {
            if which(&e.info) && e.kill.fire_with(code, reason.to_string()) {
                closed.push(e.info.clone());
            }
        }
        closed.sort_by_key(|s| s.id);
        closed
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

    fn holder(user_id: i64, credential: &str) -> Holder {
        Holder {
            user_id,
            username: format!("user{user_id}"),
            credential_sha256: credential.into(),
            api_token: false,
        }
    }

    const CAPS: Caps = Caps {
        full: 2,
        view_only: 1,
    };

    #[test]
    fn the_per_vm_limit_counts_open_sessions_and_frees_on_drop() {
        let r = Registry::default();
        let a = r
            .reserve("web01", ConsoleKind::Vnc, &holder(1, "a"), false, CAPS)
            .unwrap();
        let _b = r
            .reserve("web01", ConsoleKind::Serial, &holder(2, "b"), false, CAPS)
            .unwrap();
        assert!(r
            .reserve("web01", ConsoleKind::Vnc, &holder(3, "c"), false, CAPS)
            .is_err());
        r.reserve("db01", ConsoleKind::Vnc, &holder(3, "c"), false, CAPS)
            .expect("other VMs are counted apart");
        drop(a);
        r.reserve("web01", ConsoleKind::Vnc, &holder(3, "c"), false, CAPS)
            .expect("a place was freed");
    }

    #[test]
    fn viewers_never_take_an_operators_place() {
        let r = Registry::default();
        let _v = r
            .reserve("web01", ConsoleKind::Vnc, &holder(1, "v"), true, CAPS)
            .unwrap();
        let e = r
            .reserve("web01", ConsoleKind::Vnc, &holder(2, "v2"), true, CAPS)
            .err()
            .expect("viewers have their own limit");
        assert!(e.to_string().contains("console.max_viewers_per_vm"), "{e}");
        let _a = r
            .reserve("web01", ConsoleKind::Vnc, &holder(3, "a"), false, CAPS)
            .expect("an operator still gets a place");
        let _b = r
            .reserve("web01", ConsoleKind::Serial, &holder(4, "b"), false, CAPS)
            .expect("and another");
    }

    #[tokio::test]
    async fn sessions_close_by_user_and_by_credential_with_a_reason() {
        let r = Registry::default();
        let a1 = r
            .reserve("web01", ConsoleKind::Vnc, &holder(1, "s1"), false, CAPS)
            .unwrap();
        let a2 = r
            .reserve("db01", ConsoleKind::Serial, &holder(1, "s2"), false, CAPS)
            .unwrap();
        let _b = r
            .reserve("web01", ConsoleKind::Serial, &holder(2, "s3"), false, CAPS)
            .unwrap();
        let closed = r.close_credential("s2", "You signed out.");
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].id, a2.id);
        assert_eq!(a2.kill.fired().await.1, "You signed out.");
        let closed = r.close_user(1, "Your account was deleted.");
        assert_eq!(
            closed.len(),
            1,
            "the one already closing is not closed twice"
        );
        assert_eq!(closed[0].id, a1.id);
        assert_eq!(
            a1.kill.fired().await,
            (codes::ACCESS_ENDED, "Your account was deleted.".to_string())
        );
        assert!(r.close_user(3, "nobody").is_empty());
    }
}
