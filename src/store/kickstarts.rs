//! Named kickstart files and the per-VM tokens that serve them during an install.

use super::{Store, StoreError, StoreResult};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

/// A stored kickstart file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct KickstartRow {
    pub name: String,
    pub content: String,
    pub updated_at: i64,
    pub updated_by: String,
}

/// A VM's install with a kickstart: which file its token serves, and until when at most.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmKickstartRow {
    pub vm: String,
    pub kickstart: String,
    pub expires_at: i64,
}

impl Store {
    pub fn kickstarts(&self) -> StoreResult<Vec<KickstartRow>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT name, content, updated_at, updated_by FROM kickstarts ORDER BY name",
            )?;
            let rows = st.query_map([], |r| {
                Ok(KickstartRow {
                    name: r.get(0)?,
                    content: r.get(1)?,
                    updated_at: r.get(2)?,
                    updated_by: r.get(3)?,
                })
            })?;
            rows.collect()
        })
    }

    pub fn kickstart(&self, name: &str) -> StoreResult<Option<KickstartRow>> {
        Ok(self.kickstarts()?.into_iter().find(|k| k.name == name))
    }

    /// Adds a new kickstart; a name already taken is `Duplicate`.
    pub fn insert_kickstart(&self, row: &KickstartRow) -> StoreResult<()> {
        self.with(|c| {
            let n = c.execute(
                "INSERT OR IGNORE INTO kickstarts (name, content, updated_at, updated_by)
                 VALUES (?1, ?2, ?3, ?4)",
                params![row.name, row.content, row.updated_at, row.updated_by],
            )?;
            Ok(n)
        })
        .and_then(|n| {
            if n == 0 {
                Err(StoreError::Duplicate(format!("kickstart {}", row.name)))
            } else {
                Ok(())
            }
        })
    }

    /// Replaces a kickstart's content; false when there is none by that name.
    pub fn update_kickstart(&self, row: &KickstartRow) -> StoreResult<bool> {
        self.with(|c| {
            c.execute(
                "UPDATE kickstarts SET content = ?2, updated_at = ?3, updated_by = ?4
                 WHERE name = ?1",
                params![row.name, row.content, row.updated_at, row.updated_by],
            )
            .map(|n| n > 0)
        })
    }

    /// False when there is none by that name.
    pub fn delete_kickstart(&self, name: &str) -> StoreResult<bool> {
        self.with(|c| {
            c.execute("DELETE FROM kickstarts WHERE name = ?1", [name])
                .map(|n| n > 0)
        })
    }

    /// Records a VM's kickstart token (by its hash); the row goes with the VM's row.
    pub fn insert_vm_kickstart(&self, row: &VmKickstartRow, token_hash: &str) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO vm_kickstart (vm, kickstart, token_hash, expires_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![row.vm, row.kickstart, token_hash, row.expires_at],
            )
            .map(|_| ())
        })
    }

    /// The install a token belongs to, if any.
    pub fn vm_kickstart_by_token(&self, token_hash: &str) -> StoreResult<Option<VmKickstartRow>> {
        self.vm_kickstart_where("token_hash", token_hash)
    }

    /// A VM's kickstart token row, if its install had a kickstart that has not ended.
    pub fn vm_kickstart(&self, vm: &str) -> StoreResult<Option<VmKickstartRow>> {
        self.vm_kickstart_where("vm", vm)
    }

    /// `column` is one of this module's fixed column names, never input.
    fn vm_kickstart_where(&self, column: &str, value: &str) -> StoreResult<Option<VmKickstartRow>> {
        let sql = format!("SELECT vm, kickstart, expires_at FROM vm_kickstart WHERE {column} = ?1");
        self.with(|c| {
            c.query_row(&sql, [value], |r| {
                Ok(VmKickstartRow {
                    vm: r.get(0)?,
                    kickstart: r.get(1)?,
                    expires_at: r.get(2)?,
                })
            })
            .optional()
        })
    }

    /// The installs that use a kickstart and have not expired by `now`.
    pub fn vm_kickstarts_using(&self, kickstart: &str, now: i64) -> StoreResult<Vec<String>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT vm FROM vm_kickstart WHERE kickstart = ?1 AND expires_at > ?2 ORDER BY vm",
            )?;
            let rows = st.query_map(params![kickstart, now], |r| r.get(0))?;
            rows.collect()
        })
    }

    /// Ends a VM's kickstart token (its install is over).
    pub fn end_vm_kickstart(&self, vm: &str) -> StoreResult<()> {
        self.with(|c| {
            c.execute("DELETE FROM vm_kickstart WHERE vm = ?1", [vm])
                .map(|_| ())
        })
    }
}
