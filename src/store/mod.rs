//! The SQLite store: one file in the data dir, WAL journal, migrations embedded.
//!
//! Calls are blocking: the web layer runs them through `web::block`.

pub mod audit;
pub mod backups;
pub mod cloud_init;
pub mod fleet;
pub mod host_accounts;
pub mod jobs;
pub mod kickstarts;
mod migrations;
pub mod start_order;
pub mod templates;
pub mod two_factor;
pub mod vm_volumes;

use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::Mutex;

pub use migrations::MIGRATIONS;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or a statement failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A value that must be unique already exists.
    #[error("{0} already exists")]
    Duplicate(String),
    /// The connection lock was poisoned by a panic in another request.
    #[error("database connection is unusable after an earlier failure")]
    Poisoned,
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A user account as stored.
#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub role: String,
    pub password_phc: String,
    pub created_at: i64,
}

/// A session joined with its user.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub user: UserRow,
    pub csrf_token: String,
    pub created_at: i64,
    pub last_seen_at: i64,
}

#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: i64,
    pub username: String,
    pub label: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// A VM virtdeck created, and the units it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRow {
    pub name: String,
    pub uuid: String,
    pub units: u32,
    /// "creating", "ready", or "arriving" (held for a VM a peer is migrating here).
    pub state: String,
    pub created_volume: Option<String>,
    pub created_by: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlavorRow {
    pub name: String,
    pub units: u32,
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub at: i64,
    pub actor: String,
    pub remote_addr: String,
    pub action: String,
    pub target: String,
    pub result: String,
    pub detail: String,
}

pub struct Store {
    conn: Mutex<Connection>,
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

fn user_from_row(r: &rusqlite::Row<'_>, offset: usize) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        id: r.get(offset)?,
        username: r.get(offset + 1)?,
        role: r.get(offset + 2)?,
        password_phc: r.get(offset + 3)?,
        created_at: r.get(offset + 4)?,
    })
}

const USER_COLUMNS: &str = "u.id, u.username, u.role, u.password_phc, u.created_at";

impl Store {
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub fn open(path: &Path) -> StoreResult<Store> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        copy_before_migrating(&conn, path)?;
        Self::init(conn)
    }

    /// An in-memory store, for unit tests.
    pub fn open_in_memory() -> StoreResult<Store> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> StoreResult<Store> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrations::apply(&mut conn)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> StoreResult<T> {
        let conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        Ok(f(&conn)?)
    }

    // ---- one-time setup links ----

    /// Keeps a setup link's digest until `expires_at`.
    pub fn add_setup_link(&self, digest: &str, now: i64, expires_at: i64) -> StoreResult<()> {
        self.with(|c| {
            c.execute("DELETE FROM setup_links WHERE expires_at <= ?1", [now])?;
            c.execute(
                "INSERT INTO setup_links (digest, created_at, expires_at) VALUES (?1, ?2, ?3)",
                params![digest, now, expires_at],
            )?;
            Ok(())
        })
    }

    /// Whether a setup link with this digest exists and has not expired.
    pub fn setup_link_valid(&self, digest: &str, now: i64) -> StoreResult<bool> {
        self.with(|c| {
            c.query_row(
                "SELECT EXISTS (SELECT 1 FROM setup_links WHERE digest = ?1 AND expires_at > ?2)",
                params![digest, now],
                |r| r.get(0),
            )
        })
    }

    /// Forgets every setup link (the first admin exists).
    pub fn clear_setup_links(&self) -> StoreResult<()> {
        self.with(|c| c.execute("DELETE FROM setup_links", []).map(|_| ()))
    }

    /// Names of the applied migrations, oldest first.
    pub fn applied_migrations(&self) -> StoreResult<Vec<String>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT version FROM schema_migrations ORDER BY version")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect()
        })
    }

    // ---- users ----

    pub fn user_count(&self) -> StoreResult<i64> {
        self.with(|c| c.query_row("SELECT count(*) FROM users", [], |r| r.get(0)))
    }

    pub fn create_user(
        &self,
        username: &str,
        role: &str,
        password_phc: &str,
        now: i64,
    ) -> StoreResult<i64> {
        let conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        match conn.execute(
            "INSERT INTO users (username, role, password_phc, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![username, role, password_phc, now],
        ) {
            Ok(_) => Ok(conn.last_insert_rowid()),
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::Duplicate(format!("user {username:?}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Creates the first admin only if there is no account yet; false if one exists.
    pub fn create_first_user(
        &self,
        username: &str,
        password_phc: &str,
        now: i64,
    ) -> StoreResult<bool> {
        let mut conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        let tx = conn.transaction()?;
        let count: i64 = tx.query_row("SELECT count(*) FROM users", [], |r| r.get(0))?;
        if count > 0 {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO users (username, role, password_phc, created_at) VALUES (?1, 'admin', ?2, ?3)",
            params![username, password_phc, now],
        )?;
        tx.commit()?;
        Ok(true)
    }

    pub fn find_user(&self, username: &str) -> StoreResult<Option<UserRow>> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {USER_COLUMNS} FROM users u WHERE u.username = ?1"),
                [username],
                |r| user_from_row(r, 0),
            )
            .optional()
        })
    }

    pub fn list_users(&self) -> StoreResult<Vec<UserRow>> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {USER_COLUMNS} FROM users u ORDER BY u.username"
            ))?;
            let rows = st.query_map([], |r| user_from_row(r, 0))?;
            rows.collect()
        })
    }

    /// Deletes the account and, through foreign keys, its sessions and tokens.
    pub fn delete_user(&self, username: &str) -> StoreResult<bool> {
        self.with(|c| {
            c.execute("DELETE FROM users WHERE username = ?1", [username])
                .map(|n| n > 0)
        })
    }

    pub fn admin_count(&self) -> StoreResult<i64> {
        self.with(|c| {
            c.query_row("SELECT count(*) FROM users WHERE role = 'admin'", [], |r| {
                r.get(0)
            })
        })
    }

    pub fn set_password(&self, user_id: i64, password_phc: &str) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "UPDATE users SET password_phc = ?2 WHERE id = ?1",
                params![user_id, password_phc],
            )
            .map(|_| ())
        })
    }

    // ---- sessions ----

    pub fn create_session(
        &self,
        token_sha256: &str,
        user_id: i64,
        csrf_token: &str,
        now: i64,
        remote_addr: &str,
    ) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO sessions (token_sha256, user_id, csrf_token, created_at, last_seen_at, remote_addr)
                 VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
                params![token_sha256, user_id, csrf_token, now, remote_addr],
            )
            .map(|_| ())
        })
    }

    pub fn find_session(&self, token_sha256: &str) -> StoreResult<Option<SessionRow>> {
        self.with(|c| {
            c.query_row(
                &format!(
                    "SELECT {USER_COLUMNS}, s.csrf_token, s.created_at, s.last_seen_at
                     FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_sha256 = ?1"
                ),
                [token_sha256],
                |r| {
                    Ok(SessionRow {
                        user: user_from_row(r, 0)?,
                        csrf_token: r.get(5)?,
                        created_at: r.get(6)?,
                        last_seen_at: r.get(7)?,
                    })
                },
            )
            .optional()
        })
    }

    pub fn touch_session(&self, token_sha256: &str, now: i64) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "UPDATE sessions SET last_seen_at = ?2 WHERE token_sha256 = ?1",
                params![token_sha256, now],
            )
            .map(|_| ())
        })
    }

    pub fn delete_session(&self, token_sha256: &str) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "DELETE FROM sessions WHERE token_sha256 = ?1",
                [token_sha256],
            )
            .map(|_| ())
        })
    }

    pub fn delete_user_sessions(&self, user_id: i64) -> StoreResult<()> {
        self.with(|c| {
            c.execute("DELETE FROM sessions WHERE user_id = ?1", [user_id])
                .map(|_| ())
        })
    }

    /// Removes sessions past either limit; returns how many.
    pub fn purge_sessions(&self, idle_before: i64, created_before: i64) -> StoreResult<usize> {
        self.with(|c| {
            c.execute(
                "DELETE FROM sessions WHERE last_seen_at < ?1 OR created_at < ?2",
                params![idle_before, created_before],
            )
        })
    }

    // ---- API tokens ----

    pub fn create_api_token(
        &self,
        user_id: i64,
        token_sha256: &str,
        label: &str,
        now: i64,
    ) -> StoreResult<i64> {
        let conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        conn.execute(
            "INSERT INTO api_tokens (user_id, token_sha256, label, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![user_id, token_sha256, label, now],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// The user owning a token, recording its use.
    pub fn use_api_token(&self, token_sha256: &str, now: i64) -> StoreResult<Option<UserRow>> {
        self.with(|c| {
            let user = c
                .query_row(
                    &format!(
                        "SELECT {USER_COLUMNS} FROM api_tokens t JOIN users u ON u.id = t.user_id
                         WHERE t.token_sha256 = ?1"
                    ),
                    [token_sha256],
                    |r| user_from_row(r, 0),
                )
                .optional()?;
            if user.is_some() {
                c.execute(
                    "UPDATE api_tokens SET last_used_at = ?2 WHERE token_sha256 = ?1",
                    params![token_sha256, now],
                )?;
            }
            Ok(user)
        })
    }

    pub fn list_api_tokens(&self) -> StoreResult<Vec<TokenRow>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT t.id, u.username, t.label, t.created_at, t.last_used_at
                 FROM api_tokens t JOIN users u ON u.id = t.user_id ORDER BY t.id",
            )?;
            let rows = st.query_map([], |r| {
                Ok(TokenRow {
                    id: r.get(0)?,
                    username: r.get(1)?,
                    label: r.get(2)?,
                    created_at: r.get(3)?,
                    last_used_at: r.get(4)?,
                })
            })?;
            rows.collect()
        })
    }

    pub fn delete_api_token(&self, id: i64) -> StoreResult<bool> {
        self.with(|c| {
            c.execute("DELETE FROM api_tokens WHERE id = ?1", [id])
                .map(|n| n > 0)
        })
    }

    // ---- login failures ----

    pub fn record_login_failure(
        &self,
        username: &str,
        remote_addr: &str,
        now: i64,
    ) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO login_failures (username, remote_addr, at) VALUES (?1, ?2, ?3)",
                params![username, remote_addr, now],
            )
            .map(|_| ())
        })
    }

    /// Counts the failures of the account and of the address since `since` and, if
    /// `decide` says the attempt may go ahead, records it as a failure in the same step
    /// (under the connection's lock): parallel attempts each see the ones before them,
    /// so no more than the lock threshold are ever checked. A successful sign-in clears
    /// the account's failures, its own reservation included; [`Store::release_login_attempt`]
    /// takes back one that was never checked. Returns the decision and the reservation.
    pub fn reserve_login_attempt<T>(
        &self,
        username: &str,
        remote_addr: &str,
        since: i64,
        now: i64,
        decide: impl FnOnce(crate::auth::throttle::Failures) -> (T, bool),
    ) -> StoreResult<(T, Option<i64>)> {
        self.with(|c| {
            let (user_count, user_latest) = c.query_row(
                "SELECT count(*), max(at) FROM login_failures WHERE username = ?1 AND at >= ?2",
                params![username, since],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let (address_count, address_latest) = c.query_row(
                "SELECT count(*), max(at) FROM login_failures WHERE remote_addr = ?1 AND at >= ?2",
                params![remote_addr, since],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let (decision, reserve) = decide(crate::auth::throttle::Failures {
                user_count,
                user_latest,
                address_count,
                address_latest,
            });
            if !reserve {
                return Ok((decision, None));
            }
            c.execute(
                "INSERT INTO login_failures (username, remote_addr, at) VALUES (?1, ?2, ?3)",
                params![username, remote_addr, now],
            )?;
            Ok((decision, Some(c.last_insert_rowid())))
        })
    }

    /// Takes back a reserved attempt that was never checked.
    pub fn release_login_attempt(&self, id: i64) -> StoreResult<()> {
        self.with(|c| {
            c.execute("DELETE FROM login_failures WHERE rowid = ?1", [id])
                .map(|_| ())
        })
    }

    /// (count, latest) of failures for the account since `since`.
    pub fn failures_for_user(&self, username: &str, since: i64) -> StoreResult<(u32, Option<i64>)> {
        self.with(|c| {
            c.query_row(
                "SELECT count(*), max(at) FROM login_failures WHERE username = ?1 AND at >= ?2",
                params![username, since],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
    }

    /// (count, latest) of failures from the address since `since`.
    pub fn failures_for_address(
        &self,
        remote_addr: &str,
        since: i64,
    ) -> StoreResult<(u32, Option<i64>)> {
        self.with(|c| {
            c.query_row(
                "SELECT count(*), max(at) FROM login_failures WHERE remote_addr = ?1 AND at >= ?2",
                params![remote_addr, since],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
    }

    /// Forgets the account's failures; returns how many there were.
    pub fn clear_login_failures(&self, username: &str) -> StoreResult<usize> {
        self.with(|c| c.execute("DELETE FROM login_failures WHERE username = ?1", [username]))
    }

    /// Forgets the failures from one client address; returns how many there were.
    pub fn clear_login_failures_from(&self, remote_addr: &str) -> StoreResult<usize> {
        self.with(|c| {
            c.execute(
                "DELETE FROM login_failures WHERE remote_addr = ?1",
                [remote_addr],
            )
        })
    }

    pub fn purge_login_failures(&self, before: i64) -> StoreResult<usize> {
        self.with(|c| c.execute("DELETE FROM login_failures WHERE at < ?1", [before]))
    }

    // ---- VMs and flavors ----

    pub fn flavors(&self) -> StoreResult<Vec<FlavorRow>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT name, units FROM flavors ORDER BY units, name")?;
            let rows = st.query_map([], |r| {
                Ok(FlavorRow {
                    name: r.get(0)?,
                    units: r.get(1)?,
                })
            })?;
            rows.collect()
        })
    }

    pub fn set_flavor(&self, name: &str, units: u32) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO flavors (name, units) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET units = excluded.units",
                params![name, units],
            )
            .map(|_| ())
        })
    }

    pub fn delete_flavor(&self, name: &str) -> StoreResult<bool> {
        self.with(|c| {
            c.execute("DELETE FROM flavors WHERE name = ?1", [name])
                .map(|n| n > 0)
        })
    }

    pub fn vm_rows(&self) -> StoreResult<Vec<VmRow>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT name, uuid, units, state, created_volume, created_by, created_at
                 FROM vms
                 UNION ALL
                 SELECT name, '', units, 'arriving', NULL, created_by, created_at
                 FROM arriving_vms
                 ORDER BY name",
            )?;
            let rows = st.query_map([], |r| {
                Ok(VmRow {
                    name: r.get(0)?,
                    uuid: r.get(1)?,
                    units: r.get(2)?,
                    state: r.get(3)?,
                    created_volume: r.get(4)?,
                    created_by: r.get(5)?,
                    created_at: r.get(6)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Records the claim of a VM being created; a duplicate name is refused.
    pub fn insert_vm(&self, row: &VmRow) -> StoreResult<()> {
        let conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        match conn.execute(
            "INSERT INTO vms (name, uuid, units, state, created_volume, created_by, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                row.name,
                row.uuid,
                row.units,
                row.state,
                row.created_volume,
                row.created_by,
                row.created_at
            ],
        ) {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::Duplicate(format!("VM {:?}", row.name)))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn set_vm_units(&self, name: &str, units: u32) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "UPDATE vms SET units = ?2 WHERE name = ?1",
                params![name, units],
            )
            .map(|_| ())
        })
    }

    pub fn delete_vm(&self, name: &str) -> StoreResult<()> {
        self.with(|c| {
            c.execute("DELETE FROM vm_made WHERE vm = ?1", [name])?;
            c.execute("DELETE FROM vms WHERE name = ?1", [name])
                .map(|_| ())
        })
    }

    /// Records something an unfinished create made (`kind`: volume or boot_file).
    pub fn record_made(&self, vm: &str, kind: &str, path: &str) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO vm_made (vm, kind, path) VALUES (?1, ?2, ?3)",
                params![vm, kind, path],
            )
            .map(|_| ())
        })
    }

    /// What an unfinished create of `vm` made, as (kind, path), in the order made.
    pub fn made(&self, vm: &str) -> StoreResult<Vec<(String, String)>> {
        self.with(|c| {
            let mut st =
                c.prepare("SELECT kind, path FROM vm_made WHERE vm = ?1 ORDER BY rowid")?;
            let rows = st.query_map([vm], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }

    /// Marks a VM ready: its create finished, nothing is left to undo.
    pub fn finish_vm(&self, vm: &str) -> StoreResult<()> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            tx.execute("DELETE FROM vm_made WHERE vm = ?1", [vm])?;
            tx.execute("UPDATE vms SET state = 'ready' WHERE name = ?1", [vm])?;
            tx.commit()
        })
    }

    // ---- audit ----

    pub fn append_audit(&self, e: &AuditEntry) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO audit_log (at, actor, remote_addr, action, target, result, detail, last_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?1)",
                params![
                    e.at,
                    e.actor,
                    e.remote_addr,
                    e.action,
                    e.target,
                    e.result,
                    e.detail
                ],
            )
            .map(|_| ())
        })
    }

    /// The newest audit entries about one target (a VM name), newest first.
    pub fn audit_for_target(&self, target: &str, limit: u64) -> StoreResult<Vec<AuditEntry>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT at, actor, remote_addr, action, target, result, detail FROM audit_log
                 WHERE target = ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = st.query_map(params![target, limit as i64], audit_row)?;
            rows.collect()
        })
    }
}

/// An audit row selected as `at, actor, remote_addr, action, target, result, detail`.
fn audit_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        at: r.get(0)?,
        actor: r.get(1)?,
        remote_addr: r.get(2)?,
        action: r.get(3)?,
        target: r.get(4)?,
        result: r.get(5)?,
        detail: r.get(6)?,
    })
}

/// Before a database made by an earlier version is migrated, a consistent copy of it is
/// written beside it (`virtdeck.db.before-<first new migration>`, SQLite's `VACUUM INTO`),
/// so an upgrade that goes wrong can be undone by putting the copy back.
fn copy_before_migrating(conn: &Connection, path: &Path) -> StoreResult<()> {
    let pending = migrations::pending(conn)?;
    let Some(first) = pending.first() else {
        return Ok(());
    };
    let mut copy = path.as_os_str().to_owned();
    copy.push(format!(".before-{first}"));
    let mut copy = std::path::PathBuf::from(copy);
    if copy.exists() {
        let mut stamped = copy.into_os_string();
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        stamped.push(format!(".{secs}"));
        copy = stamped.into();
    }
    let target = copy.to_string_lossy().into_owned();
    conn.execute("VACUUM INTO ?1", [&target])?;
    tracing::info!(
        copy = %target,
        migrations = pending.len(),
        "copied the database before applying new migrations"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_of_an_earlier_version_is_copied_before_it_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("virtdeck.db");
        // A database as an earlier version left it: every migration but the last.
        {
            let mut conn = Connection::open(&path).unwrap();
            migrations::apply(&mut conn).unwrap();
            let last = MIGRATIONS.last().unwrap().0;
            conn.execute("DELETE FROM schema_migrations WHERE version = ?1", [last])
                .unwrap();
            // The last migration (0025_restore_over_and_backup_jobs) only widens a CHECK constraint: the
            // schema it left reads as the one before.
            conn.execute(
                "INSERT INTO users (username, role, password_phc, created_at) VALUES ('kept', 'admin', 'x', 1)",
                [],
            )
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.applied_migrations().unwrap().len(), MIGRATIONS.len());
        let copy = dir.path().join(format!(
            "virtdeck.db.before-{}",
            MIGRATIONS.last().unwrap().0
        ));
        let old = Connection::open(&copy).expect("copy written");
        let versions: i64 = old
            .query_row("SELECT count(*) FROM schema_migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            versions as usize,
            MIGRATIONS.len() - 1,
            "the copy is the old schema"
        );
        let user: String = old
            .query_row("SELECT username FROM users", [], |r| r.get(0))
            .unwrap();
        assert_eq!(user, "kept");
        drop(s);
        // Opened again with nothing new to apply: no further copy.
        let _ = Store::open(&path).unwrap();
        let copies = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".before-")
            })
            .count();
        assert_eq!(copies, 1);
    }

    #[test]
    fn a_new_database_is_not_copied() {
        let dir = tempfile::tempdir().unwrap();
        let _ = Store::open(&dir.path().join("virtdeck.db")).unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| e
                    .as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".before-"))
                .count(),
            0
        );
    }

    #[test]
    fn setup_links_work_until_they_expire_or_are_cleared() {
        let s = Store::open_in_memory().unwrap();
        s.add_setup_link("d1", 100, 200).unwrap();
        assert!(s.setup_link_valid("d1", 150).unwrap());
        assert!(!s.setup_link_valid("d1", 200).unwrap(), "expired");
        assert!(!s.setup_link_valid("other", 150).unwrap());
        s.clear_setup_links().unwrap();
        assert!(!s.setup_link_valid("d1", 150).unwrap());
    }

    #[test]
    fn migrations_apply_to_empty_db_and_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let s = Store::open(&path).unwrap();
        let first = s.applied_migrations().unwrap();
        assert_eq!(first.len(), MIGRATIONS.len());
        s.create_user("alice", "admin", "$argon2id$x", 1).unwrap();
        drop(s);
        let s = Store::open(&path).unwrap();
        assert_eq!(s.applied_migrations().unwrap(), first);
        assert_eq!(s.user_count().unwrap(), 1, "reopening keeps data");
    }

    #[test]
    fn duplicate_user_is_a_clear_error() {
        let s = Store::open_in_memory().unwrap();
        s.create_user("bob", "viewer", "h", 1).unwrap();
        let err = s.create_user("bob", "admin", "h", 2).unwrap_err();
        assert!(matches!(err, StoreError::Duplicate(_)), "{err}");
    }

    #[test]
    fn first_user_only_once() {
        let s = Store::open_in_memory().unwrap();
        assert!(s.create_first_user("root", "h", 1).unwrap());
        assert!(!s.create_first_user("other", "h", 2).unwrap());
        assert_eq!(s.find_user("root").unwrap().unwrap().role, "admin");
    }

    #[test]
    fn deleting_a_user_ends_sessions_and_tokens() {
        let s = Store::open_in_memory().unwrap();
        let id = s.create_user("carol", "operator", "h", 1).unwrap();
        s.create_session("sess", id, "csrf", 1, "127.0.0.1")
            .unwrap();
        s.create_api_token(id, "tok", "ci", 1).unwrap();
        assert!(s.delete_user("carol").unwrap());
        assert!(s.find_session("sess").unwrap().is_none());
        assert!(s.use_api_token("tok", 2).unwrap().is_none());
    }

    #[test]
    fn failures_counted_per_user_and_address_in_window() {
        let s = Store::open_in_memory().unwrap();
        s.record_login_failure("u", "1.1.1.1", 10).unwrap();
        s.record_login_failure("u", "2.2.2.2", 20).unwrap();
        s.record_login_failure("v", "1.1.1.1", 30).unwrap();
        assert_eq!(s.failures_for_user("u", 0).unwrap(), (2, Some(20)));
        assert_eq!(s.failures_for_user("u", 15).unwrap(), (1, Some(20)));
        assert_eq!(s.failures_for_address("1.1.1.1", 0).unwrap(), (2, Some(30)));
        s.clear_login_failures("u").unwrap();
        assert_eq!(s.failures_for_user("u", 0).unwrap().0, 0);
    }
}
