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
];

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
