//! Appending to the audit log from handlers.

use super::AppState;
use crate::store::AuditEntry;

/// Writes one audit entry. A failure to write is logged loudly; it does not undo the
/// action it describes (which has already happened).
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
    tracing::info!(
        actor = %entry.actor, remote_addr = %entry.remote_addr, action = %entry.action,
        target = %entry.target, result = %entry.result, detail = %entry.detail, "audit"
    );
    if let Err(e) = super::db(state, move |s| s.append_audit(&entry)).await {
        tracing::error!(error = %e, "could not write the audit log");
    }
}
