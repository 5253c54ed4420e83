//! Appending to the audit log from handlers (through the service layer's one writer),
//! and pruning entries past `[audit] retention_days`.

use super::AppState;
use crate::store::{AuditEntry, Store, StoreResult};
use std::time::Duration;

pub use crate::service::audit::is_unauthenticated_refusal;

/// Writes one audit entry through the log's one writer ([`crate::service::audit::append`]):
/// sign-ins, refusals and other events of the web layer. Changes are audited by
/// [`crate::service::execute`].
pub async fn record(
    state: &AppState,
    actor: &str,
    remote_addr: &str,
    action: &str,
    target: &str,
    result: &str,
    detail: &str,
) {
    let entry = AuditEntry {
        at: super::now(),
        actor: actor.to_string(),
        remote_addr: remote_addr.to_string(),
        action: action.to_string(),
        target: target.to_string(),
        result: result.to_string(),
        detail: detail.to_string(),
    };
    let store = state.store.clone();
    // The entry's log line carries the request's span (its route, redacted target, id).
    let span = tracing::Span::current();
    if let Err(e) = actix_web::web::block(move || {
        let _in_request = span.enter();
        crate::service::audit::append(&store, entry)
    })
    .await
    {
        tracing::error!(error = %e, "could not write the audit log");
    }
}

/// How often entries past their retention are pruned (the first prune runs at start-up).
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// Deletes the entries whose last occurrence is more than `retention_days` before `now`,
/// and, when there were any, writes one entry saying so. Blocking: call it off the async
/// runtime. Returns how many entries were deleted.
pub fn prune_expired(store: &Store, retention_days: u32, now: i64) -> StoreResult<u64> {
    let before_at = now.saturating_sub(i64::from(retention_days) * 86_400);
    let pruned = store.prune_audit(before_at)?;
    if pruned > 0 {
        store.append_audit(&AuditEntry {
            at: now,
            actor: "virtdeck".into(),
            remote_addr: "local".into(),
            action: "audit.prune".into(),
            target: String::new(),
            result: "ok".into(),
            detail: format!(
                "pruned {pruned} entries older than {} ([audit] retention_days = {retention_days})",
                super::pages::format_time(before_at)
            ),
        })?;
        tracing::info!(pruned, retention_days, "pruned the audit log");
    }
    Ok(pruned)
}

/// Prunes the audit log now, then every [`PRUNE_INTERVAL`], each time on a blocking
/// thread.
pub fn spawn_retention(state: actix_web::web::Data<AppState>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PRUNE_INTERVAL);
        loop {
            tick.tick().await;
            let days = state.cfg.audit.retention_days;
            let now = super::now();
            if let Err(e) = super::db(&state, move |s| prune_expired(s, days, now)).await {
                tracing::error!(error = %e, "could not prune the audit log");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::audit::AuditFilter;

    #[test]
    fn pruning_deletes_old_entries_and_says_so_once() {
        let s = Store::open_in_memory().unwrap();
        let day = 86_400;
        let now = 1_000 * day;
        for (at, target) in [
            (now - 500 * day, "old"),
            (now - 401 * day, "older than 400"),
        ] {
            s.append_audit(&AuditEntry {
                at,
                actor: "a".into(),
                remote_addr: "-".into(),
                action: "vm.start".into(),
                target: target.into(),
                result: "ok".into(),
                detail: String::new(),
            })
            .unwrap();
        }
        s.append_audit(&AuditEntry {
            at: now - 399 * day,
            actor: "a".into(),
            remote_addr: "-".into(),
            action: "vm.start".into(),
            target: "kept".into(),
            result: "ok".into(),
            detail: String::new(),
        })
        .unwrap();
        assert_eq!(prune_expired(&s, 400, now).unwrap(), 2);
        let (rows, _) = s.audit_rows(&AuditFilter::default(), 0, 10).unwrap();
        let seen: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| (r.entry.action.as_str(), r.entry.target.as_str()))
            .collect();
        assert_eq!(seen, [("audit.prune", ""), ("vm.start", "kept")]);
        assert!(
            rows[0]
                .entry
                .detail
                .starts_with("pruned 2 entries older than "),
            "{}",
            rows[0].entry.detail
        );
        // Nothing more to prune: no new entry.
        assert_eq!(prune_expired(&s, 400, now).unwrap(), 0);
        assert_eq!(s.audit_rows(&AuditFilter::default(), 0, 10).unwrap().1, 2);
    }

    #[test]
    fn retention_is_configured_and_checked() {
        let c = crate::config::Config::default();
        assert_eq!(c.audit.retention_days, 400);
        let parsed: crate::config::Config = toml::from_str("[audit]\nretention_days = 30").unwrap();
        assert_eq!(parsed.audit.retention_days, 30);
        let mut zero = crate::config::Config::default();
        zero.audit.retention_days = 0;
        assert!(zero.audit.problem().is_some());
    }
}
