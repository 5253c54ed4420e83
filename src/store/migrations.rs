//! Plain .sql files from migrations/, embedded, applied in order, tracked in SQLite.

use rusqlite::{params, Connection};

/// (version, SQL) in the order they apply. Never edit an applied file: add a new one.
pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_accounts_sessions_audit",
        include_str!("../../migrations/0001_accounts_sessions_audit.sql"),
    ),
    (
        "0002_vms_and_flavors",
        include_str!("../../migrations/0002_vms_and_flavors.sql"),
    ),
    (
        "0003_made_during_create",
        include_str!("../../migrations/0003_made_during_create.sql"),
    ),
    ("0007_jobs", include_str!("../../migrations/0007_jobs.sql")),
    (
        "0008_templates",
        include_str!("../../migrations/0008_templates.sql"),
    ),
    (
        "0009_cloud_init",
        include_str!("../../migrations/0009_cloud_init.sql"),
    ),
    (
        "0010_kickstarts",
        include_str!("../../migrations/0010_kickstarts.sql"),
    ),
    (
        "0011_clone_and_create_jobs",
        include_str!("../../migrations/0011_clone_and_create_jobs.sql"),
    ),
    (
        "0012_vm_volumes",
        include_str!("../../migrations/0012_vm_volumes.sql"),
    ),
    (
        "0013_audit_fold",
        include_str!("../../migrations/0013_audit_fold.sql"),
    ),
    (
        "0014_fleet",
        include_str!("../../migrations/0014_fleet.sql"),
    ),
    (
        "0015_two_factor",
        include_str!("../../migrations/0015_two_factor.sql"),
    ),
    (
        "0016_host_accounts",
        include_str!("../../migrations/0016_host_accounts.sql"),
    ),
    (
        "0017_security_keys",
        include_str!("../../migrations/0017_security_keys.sql"),
    ),
    (
        "0018_setup_links",
        include_str!("../../migrations/0018_setup_links.sql"),
    ),
    (
        "0019_bulk_actions",
        include_str!("../../migrations/0019_bulk_actions.sql"),
    ),
    (
        "0020_start_order",
        include_str!("../../migrations/0020_start_order.sql"),
    ),
    (
        "0021_backups",
        include_str!("../../migrations/0021_backups.sql"),
    ),
    (
        "0022_backup_schedules",
        include_str!("../../migrations/0022_backup_schedules.sql"),
    ),
    (
        "0023_snapshot_schedules",
        include_str!("../../migrations/0023_snapshot_schedules.sql"),
    ),
    (
        "0024_restore_jobs",
        include_str!("../../migrations/0024_restore_jobs.sql"),
    ),
    (
        "0025_restore_over_and_backup_jobs",
        include_str!("../../migrations/0025_restore_over_and_backup_jobs.sql"),
    ),
];

/// The migrations this build has that the database has not applied yet, oldest first;
/// none for a new (empty) database.
pub(super) fn pending(conn: &Connection) -> rusqlite::Result<Vec<&'static str>> {
    let tracked: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations')",
        [],
        |r| r.get(0),
    )?;
    if !tracked {
        return Ok(Vec::new());
    }
    let mut st = conn.prepare("SELECT version FROM schema_migrations")?;
    let applied = st
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<std::collections::HashSet<String>>>()?;
    Ok(MIGRATIONS
        .iter()
        .map(|(v, _)| *v)
        .filter(|v| !applied.contains(*v))
        .collect())
}

pub(super) fn apply(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version TEXT PRIMARY KEY,
             applied_at INTEGER NOT NULL
         )",
    )?;
    for (version, sql) in MIGRATIONS {
        let tx = conn.transaction()?;
        let done: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?1)",
            [version],
            |r| r.get(0),
        )?;
        if !done {
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, strftime('%s','now'))",
                params![version],
            )?;
            tracing::info!(migration = version, "applied database migration");
        }
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_recorded_before_clone_jobs_existed_are_kept() {
        let mut conn = Connection::open_in_memory().unwrap();
        // Every migration before 0011, as a database made before it had them.
        let at = MIGRATIONS
            .iter()
            .position(|m| m.0 == "0011_clone_and_create_jobs")
            .unwrap();
        let earlier = &MIGRATIONS[..at];
        conn.execute_batch(
            "CREATE TABLE schema_migrations (version TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)",
        )
        .unwrap();
        for (version, sql) in earlier {
            conn.execute_batch(sql).unwrap();
            conn.execute(
                "INSERT INTO schema_migrations VALUES (?1, 0)",
                params![version],
            )
            .unwrap();
        }
        conn.execute(
            "INSERT INTO jobs (kind, state, pool, volume, source, volume_made, bytes_done,
                               bytes_total, message, created_by, created_at, finished_at)
             VALUES ('fetch', 'succeeded', 'isos', 'a.iso', 'http://x/a.iso', 0, 10, 10,
                     '', 'admin', 5, 6)",
            [],
        )
        .unwrap();
        apply(&mut conn).unwrap();
        let row: (i64, String, String, String, String, i64) = conn
            .query_row(
                "SELECT id, kind, volume, vm, step, bytes_done FROM jobs",
                [],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )
            .unwrap();
        assert_eq!(
            row,
            (
                1,
                "fetch".into(),
                "a.iso".into(),
                String::new(),
                String::new(),
                10
            )
        );
        // New jobs continue the numbering, and the new kinds are accepted.
        conn.execute(
            "INSERT INTO jobs (kind, state, pool, volume, created_by, created_at)
             VALUES ('clone', 'running', '', '', 'admin', 7)",
            [],
        )
        .unwrap();
        assert_eq!(conn.last_insert_rowid(), 2);
    }
}
