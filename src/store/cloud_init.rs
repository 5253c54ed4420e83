//! What a VM's cloud-init seed provisioned (never the password itself).

use super::{Store, StoreResult};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

/// A VM provisioned from a cloud image with a cloud-init seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct CloudInitRow {
    pub vm: String,
    pub user: String,
    pub hostname: String,
    pub ssh_keys: u32,
    /// Whether the user got a password (its hash is only in the seed).
    pub password: bool,
    /// The cloud image the disk was copied from.
    pub base_volume: String,
    /// The seed ISO volume, deleted with the VM.
    pub seed_path: String,
}

impl Store {
    /// Records a VM's seed; the row goes when the VM's row does.
    pub fn insert_cloud_init(&self, row: &CloudInitRow) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO vm_cloud_init
                 (vm, user, hostname, ssh_keys, password, base_volume, seed_path)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    row.vm,
                    row.user,
                    row.hostname,
                    row.ssh_keys,
                    row.password,
                    row.base_volume,
                    row.seed_path
                ],
            )
            .map(|_| ())
        })
    }

    pub fn cloud_init(&self, vm: &str) -> StoreResult<Option<CloudInitRow>> {
        self.with(|c| {
            c.query_row(
                "SELECT vm, user, hostname, ssh_keys, password, base_volume, seed_path
                 FROM vm_cloud_init WHERE vm = ?1",
                [vm],
                |r| {
                    Ok(CloudInitRow {
                        vm: r.get(0)?,
                        user: r.get(1)?,
                        hostname: r.get(2)?,
                        ssh_keys: r.get(3)?,
                        password: r.get(4)?,
                        base_volume: r.get(5)?,
                        seed_path: r.get(6)?,
                    })
                },
            )
            .optional()
        })
    }
}
