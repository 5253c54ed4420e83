//! The audit log as read and kept: folding repeated refusals into one row per minute,
//! filtered pages, and pruning by age. (Plain appends are `Store::append_audit`.)

use super::{AuditEntry, Store, StoreResult};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, OptionalExtension};

/// Refusals of one kind from one address fold into one row per this many seconds (a
/// clock minute: the row's first entry and every one folded into it share it).
pub const FOLD_WINDOW_SECONDS: i64 = 60;

/// An audit row as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub id: i64,
    /// The first entry of the row (its time, target and detail).
    pub entry: AuditEntry,
    /// How many entries the row stands for (more than 1 when refusals were folded).
    pub count: u64,
    /// When the last of them came.
    pub last_at: i64,
}

/// Which audit rows to show; every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Who: exactly this actor.
    pub actor: Option<String>,
    /// The action, or every action under it (`kickstart` matches `kickstart.fetch`).
    pub action: Option<String>,
    /// The result, exactly (`ok`, `denied`, `refused`…).
    pub result: Option<String>,
    /// Text the target contains (case-insensitive).
    pub target_contains: Option<String>,
    /// At or after this time (seconds since the epoch).
    pub from_at: Option<i64>,
    /// Before this time (seconds since the epoch).
    pub before_at: Option<i64>,
}

impl AuditFilter {
    /// The SQL condition and its parameters.
    fn sql(&self) -> (String, Vec<Value>) {
        let mut clauses: Vec<&str> = Vec::new();
        let mut values: Vec<Value> = Vec::new();
        if let Some(a) = &self.actor {
            clauses.push("actor = ?");
            values.push(Value::Text(a.clone()));
        }
        if let Some(a) = &self.action {
            clauses.push("(action = ? OR substr(action, 1, length(?) + 1) = ? || '.')");
            values.extend([
                Value::Text(a.clone()),
                Value::Text(a.clone()),
                Value::Text(a.clone()),
            ]);
        }
        if let Some(r) = &self.result {
            clauses.push("result = ?");
            values.push(Value::Text(r.clone()));
        }
        if let Some(t) = &self.target_contains {
            clauses.push("instr(lower(target), lower(?)) > 0");
            values.push(Value::Text(t.clone()));
        }
        if let Some(f) = self.from_at {
            clauses.push("coalesce(last_at, at) >= ?");
            values.push(Value::Integer(f));
        }
        if let Some(b) = self.before_at {
            clauses.push("at < ?");
            values.push(Value::Integer(b));
        }
        if clauses.is_empty() {
            (String::new(), values)
        } else {
            (format!("WHERE {}", clauses.join(" AND ")), values)
        }
    }
}

/// A folded row's detail grows to about this many bytes at most.
const FOLDED_DETAIL_MAX_BYTES: usize = 500;

/// The detail of a row after folding `e` into it: a detail (and target) not yet in it is
/// added after "; " while the detail stays short, then " …" marks that there were more.
fn folded_detail(detail: &str, target: &str, e: &AuditEntry) -> String {
    let addition = if e.target == target {
        e.detail.clone()
    } else {
        format!("{} ({})", e.detail, e.target)
    };
    if addition.trim().is_empty() || detail.contains(addition.as_str()) || detail.ends_with(" …")
    {
        return detail.to_string();
    }
    if detail.len() + addition.len() + 2 > FOLDED_DETAIL_MAX_BYTES {
        return format!("{detail} …");
    }
    if detail.is_empty() {
        addition
    } else {
        format!("{detail}; {addition}")
    }
}

fn audit_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRow> {
    let at: i64 = r.get(1)?;
    Ok(AuditRow {
        id: r.get(0)?,
        entry: AuditEntry {
            at,
            actor: r.get(2)?,
            remote_addr: r.get(3)?,
            action: r.get(4)?,
            target: r.get(5)?,
            result: r.get(6)?,
            detail: r.get(7)?,
        },
        count: r.get::<_, i64>(8)?.max(1) as u64,
        last_at: r.get::<_, Option<i64>>(9)?.unwrap_or(at),
    })
}

impl Store {
    /// Appends `e`, or counts it in the row of the same address, action and result
    /// started in the same clock minute. Returns how many entries that row now stands
    /// for (1: a new row).
    pub fn append_audit_folded(&self, e: &AuditEntry) -> StoreResult<u64> {
        let minute_start = e.at - e.at.rem_euclid(FOLD_WINDOW_SECONDS);
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            let found: Option<(i64, i64, String, String)> = tx
                .query_row(
                    "SELECT id, count, target, detail FROM audit_log
                     WHERE remote_addr = ?1 AND action = ?2 AND result = ?3
                       AND at >= ?4 AND at < ?5
                     ORDER BY id DESC LIMIT 1",
                    params![
                        e.remote_addr,
                        e.action,
                        e.result,
                        minute_start,
                        minute_start + FOLD_WINDOW_SECONDS
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            let count = match found {
                Some((id, count, target, detail)) => {
                    let detail = folded_detail(&detail, &target, e);
                    tx.execute(
                        "UPDATE audit_log
                         SET count = count + 1, last_at = max(coalesce(last_at, at), ?2), detail = ?3
                         WHERE id = ?1",
                        params![id, e.at, detail],
                    )?;
                    count.max(1) + 1
                }
                None => {
                    tx.execute(
                        "INSERT INTO audit_log
                           (at, actor, remote_addr, action, target, result, detail, count, last_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?1)",
                        params![
                            e.at,
                            e.actor,
                            e.remote_addr,
                            e.action,
                            e.target,
                            e.result,
                            e.detail
                        ],
                    )?;
                    1
                }
            };
            tx.commit()?;
            Ok(count.max(1) as u64)
        })
    }

    /// A page of the whole audit log, newest first (each row's first entry), and the
    /// number of rows.
    pub fn audit_page(&self, offset: u64, limit: u64) -> StoreResult<(Vec<AuditEntry>, u64)> {
        let (rows, total) = self.audit_rows(&AuditFilter::default(), offset, limit)?;
        Ok((rows.into_iter().map(|r| r.entry).collect(), total))
    }

    /// A page of the audit rows `filter` matches, newest first, and how many match.
    pub fn audit_rows(
        &self,
        filter: &AuditFilter,
        offset: u64,
        limit: u64,
    ) -> StoreResult<(Vec<AuditRow>, u64)> {
        let (condition, values) = filter.sql();
        self.with(|c| {
            let total: i64 = c.query_row(
                &format!("SELECT count(*) FROM audit_log {condition}"),
                params_from_iter(values.iter()),
                |r| r.get(0),
            )?;
            let mut page_values = values.clone();
            page_values.push(Value::Integer(limit.min(i64::MAX as u64) as i64));
            page_values.push(Value::Integer(offset.min(i64::MAX as u64) as i64));
            let mut st = c.prepare(&format!(
                "SELECT id, at, actor, remote_addr, action, target, result, detail, count, last_at
                 FROM audit_log {condition} ORDER BY id DESC LIMIT ? OFFSET ?"
            ))?;
            let rows = st
                .query_map(params_from_iter(page_values.iter()), audit_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((rows, total.max(0) as u64))
        })
    }

    /// Deletes the rows whose last entry came before `before_at`; returns how many.
    pub fn prune_audit(&self, before_at: i64) -> StoreResult<u64> {
        self.with(|c| {
            c.execute(
                "DELETE FROM audit_log WHERE coalesce(last_at, at) < ?1",
                [before_at],
            )
            .map(|n| n as u64)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(at: i64, addr: &str, action: &str, result: &str, target: &str) -> AuditEntry {
        AuditEntry {
            at,
            actor: "-".into(),
            remote_addr: addr.into(),
            action: action.into(),
            target: target.into(),
            result: result.into(),
            detail: String::new(),
        }
    }

    fn all(s: &Store) -> Vec<AuditRow> {
        s.audit_rows(&AuditFilter::default(), 0, 1000).unwrap().0
    }

    #[test]
    fn refusals_fold_per_address_kind_and_minute() {
        let s = Store::open_in_memory().unwrap();
        let base = 1_700_000_040; // a minute starts here
        assert_eq!(base % 60, 0);
        for i in 0..10 {
            let n = s
                .append_audit_folded(&entry(
                    base + i,
                    "10.0.0.1",
                    "kickstart.fetch",
                    "refused",
                    "-",
                ))
                .unwrap();
            assert_eq!(n, i as u64 + 1);
        }
        // Another address, another result, another action, the next minute: new rows.
        s.append_audit_folded(&entry(
            base + 5,
            "10.0.0.2",
            "kickstart.fetch",
            "refused",
            "-",
        ))
        .unwrap();
        s.append_audit_folded(&entry(base + 5, "10.0.0.1", "login", "refused", "-"))
            .unwrap();
        s.append_audit_folded(&entry(
            base + 5,
            "10.0.0.1",
            "kickstart.fetch",
            "denied",
            "-",
        ))
        .unwrap();
        s.append_audit_folded(&entry(
            base + 60,
            "10.0.0.1",
            "kickstart.fetch",
            "refused",
            "-",
        ))
        .unwrap();
        let rows = all(&s);
        assert_eq!(rows.len(), 5);
        let first = rows.last().unwrap();
        assert_eq!(
            (first.count, first.entry.at, first.last_at),
            (10, base, base + 9)
        );
        assert_eq!(rows.iter().map(|r| r.count).sum::<u64>(), 14);
    }

    #[test]
    fn folded_rows_keep_distinct_details_up_to_a_limit() {
        let s = Store::open_in_memory().unwrap();
        let mut e = entry(120, "10.0.0.1", "kickstart.fetch", "refused", "-");
        e.detail = "unknown token".into();
        s.append_audit_folded(&e).unwrap();
        s.append_audit_folded(&e).unwrap();
        e.target = "ks01".into();
        e.detail = "the install boot is not running".into();
        s.append_audit_folded(&e).unwrap();
        let row = &all(&s)[0];
        assert_eq!(row.count, 3);
        assert_eq!(row.entry.target, "-");
        assert_eq!(
            row.entry.detail,
            "unknown token; the install boot is not running (ks01)"
        );
        for i in 0..100 {
            e.target = format!("user{i}");
            s.append_audit_folded(&e).unwrap();
        }
        let row = &all(&s)[0];
        assert_eq!(row.count, 103);
        assert!(row.entry.detail.len() <= FOLDED_DETAIL_MAX_BYTES + 4);
        assert!(row.entry.detail.ends_with(" …"), "{}", row.entry.detail);
    }

    #[test]
    fn plain_appends_never_fold_and_count_one() {
        let s = Store::open_in_memory().unwrap();
        for _ in 0..3 {
            s.append_audit(&entry(100, "a", "vm.start", "ok", "web1"))
                .unwrap();
        }
        let rows = all(&s);
        assert_eq!(rows.len(), 3);
        assert!(rows.iter().all(|r| r.count == 1 && r.last_at == 100));
    }

    #[test]
    fn pages_newest_first_and_filters() {
        let s = Store::open_in_memory().unwrap();
        for i in 0..5 {
            s.append_audit(&AuditEntry {
                at: i * 86_400,
                actor: if i % 2 == 0 { "alice" } else { "bob" }.into(),
                remote_addr: "-".into(),
                action: if i < 3 {
                    "vm.start"
                } else {
                    "kickstart.create"
                }
                .into(),
                target: format!("Web{i}"),
                result: if i == 4 { "denied" } else { "ok" }.into(),
                detail: String::new(),
            })
            .unwrap();
        }
        let (rows, total) = s.audit_rows(&AuditFilter::default(), 0, 2).unwrap();
        assert_eq!(total, 5);
        assert_eq!(rows[0].entry.target, "Web4");
        let (rows, _) = s.audit_rows(&AuditFilter::default(), 4, 2).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].entry.target, "Web0");

        let targets = |f: AuditFilter| -> Vec<String> {
            let (rows, total) = s.audit_rows(&f, 0, 100).unwrap();
            assert_eq!(total as usize, rows.len());
            rows.into_iter().map(|r| r.entry.target).collect()
        };
        let by = |actor: &str| AuditFilter {
            actor: Some(actor.into()),
            ..Default::default()
        };
        assert_eq!(targets(by("bob")), ["Web3", "Web1"]);
        assert_eq!(
            targets(AuditFilter {
                action: Some("kickstart".into()),
                ..Default::default()
            }),
            ["Web4", "Web3"]
        );
        assert!(targets(AuditFilter {
            action: Some("kick".into()),
            ..Default::default()
        })
        .is_empty());
        assert_eq!(
            targets(AuditFilter {
                result: Some("denied".into()),
                ..Default::default()
            }),
            ["Web4"]
        );
        assert_eq!(
            targets(AuditFilter {
                target_contains: Some("web2".into()),
                ..Default::default()
            }),
            ["Web2"]
        );
        assert_eq!(
            targets(AuditFilter {
                from_at: Some(86_400),
                before_at: Some(3 * 86_400),
                actor: Some("bob".into()),
                ..Default::default()
            }),
            ["Web1"]
        );
        // Wildcards in the text are plain text.
        assert!(targets(AuditFilter {
            target_contains: Some("%".into()),
            ..Default::default()
        })
        .is_empty());
    }

    #[test]
    fn pruning_removes_rows_whose_last_entry_is_old() {
        let s = Store::open_in_memory().unwrap();
        s.append_audit(&entry(10, "a", "vm.start", "ok", "old"))
            .unwrap();
        // Folded: first at 61, last at 110 (one minute): kept by a cut at 100.
        s.append_audit_folded(&entry(61, "a", "login", "locked", "x"))
            .unwrap();
        s.append_audit_folded(&entry(110, "a", "login", "locked", "x"))
            .unwrap();
        s.append_audit(&entry(200, "a", "vm.start", "ok", "new"))
            .unwrap();
        assert_eq!(s.prune_audit(100).unwrap(), 1);
        let left: Vec<String> = all(&s).into_iter().map(|r| r.entry.target).collect();
        assert_eq!(left, ["new", "x"]);
        assert_eq!(s.prune_audit(100).unwrap(), 0);
    }
}
