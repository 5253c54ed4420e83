//! Appending to the audit log from handlers, folding repeated refusals of
//! unauthenticated requests, and pruning entries past `[audit] retention_days`.

use super::AppState;
use crate::store::{AuditEntry, Store, StoreResult};
use std::time::Duration;

/// Results that refuse a request.
/// A wrong password ("failed") is not among them: each is kept with the name tried, and
/// the sign-in throttle already bounds them (`[login] address_lock_after_failures`).
const REFUSALS: &[&str] = &[
    "denied",
    "locked",
    "refused",
    "invalid",
    "not-found",
    "throttled",
    "rejected",
];

/// Actions a request with no session and no API token can cause: signing in, creating
/// the first admin, an installer fetching its kickstart.
const UNAUTHENTICATED_ACTIONS: &[&str] = &["login", "setup.first_admin", "kickstart.fetch"];

/// Actors that stand for nobody signed in.
const UNAUTHENTICATED_ACTORS: &[&str] = &["", "-", "installer", "anonymous"];

/// Whether an entry is a refusal of a request nobody signed in made. Anyone who can reach
/// the port can cause these as often as they like, so they are folded: one row per
/// address, action and result and clock minute, with a count.
pub fn is_unauthenticated_refusal(actor: &str, action: &str, result: &str) -> bool {
    REFUSALS.contains(&result)
        && (UNAUTHENTICATED_ACTORS.contains(&actor) || UNAUTHENTICATED_ACTIONS.contains(&action))
}

/// Writes one audit entry; an unauthenticated refusal is counted in the row of the same
/// address, action and result of the same minute instead of adding one
/// ([`is_unauthenticated_refusal`]). A failure to write is logged loudly; it does not undo
/// the action it describes (which has already happened).
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
    if is_unauthenticated_refusal(actor, action, result) {
        record_refusal(state, entry).await;
        return;
    }
    tracing::info!(
        actor = %entry.actor, remote_addr = %entry.remote_addr, action = %entry.action,
        target = %entry.target, result = %entry.result, detail = %entry.detail, "audit"
    );
    if let Err(e) = super::db(state, move |s| s.append_audit(&entry)).await {
        tracing::error!(error = %e, "could not write the audit log");
    }
}

/// Writes an unauthenticated refusal, folded into its minute's row. The log gets the
/// first of a row and then the 2nd, 4th, 8th… so a flood cannot flood the log either.
async fn record_refusal(state: &AppState, entry: AuditEntry) {
    let shown = entry.clone();
    match super::db(state, move |s| s.append_audit_folded(&entry)).await {
        Ok(count) if count.is_power_of_two() => tracing::info!(
            actor = %shown.actor, remote_addr = %shown.remote_addr, action = %shown.action,
            target = %shown.target, result = %shown.result, detail = %shown.detail,
            count, "audit"
        ),
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "could not write the audit log"),
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
    fn only_refusals_of_unauthenticated_requests_fold() {
        assert!(is_unauthenticated_refusal(
            "installer",
            "kickstart.fetch",
            "refused"
        ));
        assert!(is_unauthenticated_refusal("mallory", "login", "locked"));
        assert!(is_unauthenticated_refusal(
            "-",
            "setup.first_admin",
            "denied"
        ));
        assert!(is_unauthenticated_refusal("-", "anything.else", "denied"));
        // Served fetches, good sign-ins and a signed-in user's refusals stay one row each.
        assert!(!is_unauthenticated_refusal(
            "installer",
            "kickstart.fetch",
            "served"
        ));
        assert!(!is_unauthenticated_refusal("jo", "login", "ok"));
        assert!(!is_unauthenticated_refusal("jo", "login", "failed"));
        assert!(!is_unauthenticated_refusal("vera", "vm.start", "denied"));
        assert!(!is_unauthenticated_refusal("olga", "vm.create", "failed"));
    }

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
