//! Paired peer hosts, pairing codes, and the units held for VMs arriving by migration.

use super::{Store, StoreError, StoreResult};
use rusqlite::{params, OptionalExtension};

/// A paired peer host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRow {
    pub name: String,
    /// Its base URL (`https://host:port/`).
    pub url: String,
    /// SHA-256 of its TLS certificate, lowercase hex, pinned at pairing.
    pub fingerprint_sha256: String,
    /// What this host presents when it calls the peer.
    pub outbound_credential: String,
    /// Digest of what the peer presents when it calls this host.
    pub inbound_credential_sha256: String,
    pub paired_by: String,
    pub paired_at: i64,
}

/// Units held for a VM a peer is migrating here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrivingRow {
    pub name: String,
    pub units: u32,
    pub peer: String,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    /// Volumes made here for the disks QEMU copies.
    pub volumes: Vec<String>,
    /// The job that shows the arrival here.
    pub job_id: i64,
}

fn peer_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PeerRow> {
    Ok(PeerRow {
        name: r.get(0)?,
        url: r.get(1)?,
        fingerprint_sha256: r.get(2)?,
        outbound_credential: r.get(3)?,
        inbound_credential_sha256: r.get(4)?,
        paired_by: r.get(5)?,
        paired_at: r.get(6)?,
    })
}

const PEER_COLUMNS: &str = "name, url, fingerprint_sha256, outbound_credential, \
                            inbound_credential_sha256, paired_by, paired_at";

impl Store {
    pub fn peers(&self) -> StoreResult<Vec<PeerRow>> {
        self.with(|c| {
            let mut st = c.prepare(&format!("SELECT {PEER_COLUMNS} FROM peers ORDER BY name"))?;
            let rows = st.query_map([], peer_row)?;
            rows.collect()
        })
    }

    pub fn peer(&self, name: &str) -> StoreResult<Option<PeerRow>> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {PEER_COLUMNS} FROM peers WHERE name = ?1"),
                params![name],
                peer_row,
            )
            .optional()
        })
    }

    /// The peer presenting the credential with this digest.
    pub fn peer_by_inbound(&self, credential_sha256: &str) -> StoreResult<Option<PeerRow>> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {PEER_COLUMNS} FROM peers WHERE inbound_credential_sha256 = ?1"),
                params![credential_sha256],
                peer_row,
            )
            .optional()
        })
    }

    /// Adds a peer; a name already paired is `Duplicate`.
    pub fn insert_peer(&self, row: &PeerRow) -> StoreResult<()> {
        let n = self.with(|c| {
            c.execute(
                &format!(
                    "INSERT OR IGNORE INTO peers ({PEER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                ),
                params![
                    row.name,
                    row.url,
                    row.fingerprint_sha256,
                    row.outbound_credential,
                    row.inbound_credential_sha256,
                    row.paired_by,
                    row.paired_at
                ],
            )
        })?;
        if n == 0 {
            return Err(StoreError::Duplicate(format!("peer {}", row.name)));
        }
        Ok(())
    }

    /// Forgets a peer (its credential stops working at once); false if there was none.
    pub fn delete_peer(&self, name: &str) -> StoreResult<bool> {
        self.with(|c| c.execute("DELETE FROM peers WHERE name = ?1", params![name]))
            .map(|n| n > 0)
    }

    pub fn insert_pairing_code(
        &self,
        code_sha256: &str,
        created_by: &str,
        now: i64,
        expires_at: i64,
    ) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "DELETE FROM pairing_codes WHERE expires_at <= ?1",
                params![now],
            )?;
            c.execute(
                "INSERT INTO pairing_codes (code_sha256, created_by, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![code_sha256, created_by, now, expires_at],
            )
        })
        .map(drop)
    }

    /// Uses up a pairing code: true if it existed and had not expired (it is gone either
    /// way, so a code works once).
    pub fn take_pairing_code(&self, code_sha256: &str, now: i64) -> StoreResult<Option<String>> {
        self.with(|c| {
            let found: Option<(String, i64)> = c
                .query_row(
                    "DELETE FROM pairing_codes WHERE code_sha256 = ?1 RETURNING created_by, expires_at",
                    params![code_sha256],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            Ok(found.and_then(|(by, expires)| (expires > now).then_some(by)))
        })
    }

    /// Pairing codes not yet used or expired.
    pub fn open_pairing_codes(&self, now: i64) -> StoreResult<usize> {
        self.with(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM pairing_codes WHERE expires_at > ?1",
                params![now],
                |r| r.get::<_, i64>(0),
            )
        })
        .map(|n| n as usize)
    }

    pub fn arriving_vms(&self) -> StoreResult<Vec<ArrivingRow>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT name, units, peer, created_by, created_at, expires_at, volumes, job_id
                 FROM arriving_vms ORDER BY name",
            )?;
            let rows = st.query_map([], |r| {
                Ok(ArrivingRow {
                    name: r.get(0)?,
                    units: r.get(1)?,
                    peer: r.get(2)?,
                    created_by: r.get(3)?,
                    created_at: r.get(4)?,
                    expires_at: r.get(5)?,
                    volumes: serde_json::from_str(&r.get::<_, String>(6)?).unwrap_or_default(),
                    job_id: r.get(7)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Holds units for an arriving VM; a name already used here (a VM row or another
    /// arrival) is `Duplicate`.
    pub fn insert_arriving(&self, row: &ArrivingRow) -> StoreResult<()> {
        let n = self.with(|c| {
            let taken: i64 = c.query_row(
                "SELECT COUNT(*) FROM vms WHERE name = ?1",
                params![row.name],
                |r| r.get(0),
            )?;
            if taken > 0 {
                return Ok(0);
            }
            c.execute(
                "INSERT OR IGNORE INTO arriving_vms
                     (name, units, peer, created_by, created_at, expires_at, volumes, job_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    row.name,
                    row.units,
                    row.peer,
                    row.created_by,
                    row.created_at,
                    row.expires_at,
                    serde_json::to_string(&row.volumes).unwrap_or_else(|_| "[]".into()),
                    row.job_id
                ],
            )
        })?;
        if n == 0 {
            return Err(StoreError::Duplicate(format!("VM {}", row.name)));
        }
        Ok(())
    }

    /// Who is emptying this host for maintenance, and since when; `None` if nobody.
    pub fn draining(&self) -> StoreResult<Option<String>> {
        self.with(|c| {
            c.query_row(
                "SELECT value FROM host_state WHERE key = 'draining'",
                [],
                |r| r.get(0),
            )
            .optional()
        })
    }

    /// Starts (`Some(who and when)`) or ends (`None`) the drain.
    pub fn set_draining(&self, value: Option<&str>) -> StoreResult<()> {
        self.with(|c| match value {
            Some(v) => c.execute(
                "INSERT INTO host_state (key, value) VALUES ('draining', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![v],
            ),
            None => c.execute("DELETE FROM host_state WHERE key = 'draining'", []),
        })
        .map(drop)
    }

    /// Makes an arrival due for the next sweep.
    pub fn expire_arriving(&self, name: &str, now: i64) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "UPDATE arriving_vms SET expires_at = ?2 WHERE name = ?1",
                params![name, now],
            )
        })
        .map(drop)
    }

    /// Sets the job that shows an arrival.
    pub fn set_arriving_job(&self, name: &str, job_id: i64) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "UPDATE arriving_vms SET job_id = ?2 WHERE name = ?1",
                params![name, job_id],
            )
        })
        .map(drop)
    }

    /// Ends an arrival: with `arrived`, the VM gets its row (`ready`, its units) in one
    /// transaction; otherwise the held units are just released. False if there was none.
    pub fn end_arriving(&self, name: &str, arrived: Option<(&str, i64)>) -> StoreResult<bool> {
        let mut conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        let tx = conn.transaction()?;
        let row: Option<(u32, String)> = tx
            .query_row(
                "DELETE FROM arriving_vms WHERE name = ?1 RETURNING units, created_by",
                params![name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((units, created_by)) = row else {
            return Ok(false);
        };
        if let Some((uuid, now)) = arrived {
            tx.execute(
                "INSERT INTO vms (name, uuid, units, state, created_volume, created_by, created_at)
                 VALUES (?1, ?2, ?3, 'ready', NULL, ?4, ?5)",
                params![name, uuid, units, created_by, now],
            )?;
        }
        tx.commit()?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("t.db")).unwrap();
        (dir, s)
    }

    fn peer(name: &str, inbound: &str) -> PeerRow {
        PeerRow {
            name: name.into(),
            url: format!("https://{name}:9443/"),
            fingerprint_sha256: "ab".repeat(32),
            outbound_credential: format!("out-{name}"),
            inbound_credential_sha256: inbound.into(),
            paired_by: "admin".into(),
            paired_at: 1,
        }
    }

    #[test]
    fn peers_are_found_by_the_digest_they_present_and_forgotten_on_unpair() {
        let (_d, s) = store();
        s.insert_peer(&peer("b", "digest-b")).unwrap();
        assert!(matches!(
            s.insert_peer(&peer("b", "digest-x")),
            Err(StoreError::Duplicate(_))
        ));
        assert_eq!(s.peer_by_inbound("digest-b").unwrap().unwrap().name, "b");
        assert!(s.peer_by_inbound("digest-x").unwrap().is_none());
        assert!(s.delete_peer("b").unwrap());
        assert!(s.peer_by_inbound("digest-b").unwrap().is_none());
        assert!(!s.delete_peer("b").unwrap());
    }

    #[test]
    fn a_drain_is_on_until_it_is_ended() {
        let (_d, s) = store();
        assert_eq!(s.draining().unwrap(), None);
        s.set_draining(Some("by admin")).unwrap();
        s.set_draining(Some("by root")).unwrap();
        assert_eq!(s.draining().unwrap().as_deref(), Some("by root"));
        s.set_draining(None).unwrap();
        assert_eq!(s.draining().unwrap(), None);
    }

    #[test]
    fn a_pairing_code_works_once_and_not_after_it_expires() {
        let (_d, s) = store();
        s.insert_pairing_code("c1", "admin", 100, 200).unwrap();
        s.insert_pairing_code("c2", "admin", 100, 200).unwrap();
        assert_eq!(s.open_pairing_codes(150).unwrap(), 2);
        assert_eq!(
            s.take_pairing_code("c1", 150).unwrap().as_deref(),
            Some("admin")
        );
        assert_eq!(s.take_pairing_code("c1", 150).unwrap(), None, "used once");
        assert_eq!(s.take_pairing_code("c2", 200).unwrap(), None, "expired");
        assert_eq!(s.take_pairing_code("nope", 150).unwrap(), None);
    }

    #[test]
    fn arriving_units_count_until_the_arrival_ends() {
        let (_d, s) = store();
        let row = ArrivingRow {
            name: "web1".into(),
            units: 2,
            peer: "a".into(),
            created_by: "peer:a".into(),
            created_at: 1,
            expires_at: 100,
            volumes: vec!["/p/web1.qcow2".into()],
            job_id: 7,
        };
        s.insert_arriving(&row).unwrap();
        assert_eq!(s.arriving_vms().unwrap(), vec![row.clone()]);
        assert!(s.end_arriving("web1", None).unwrap());
        s.insert_arriving(&row).unwrap();
        assert!(matches!(
            s.insert_arriving(&row),
            Err(StoreError::Duplicate(_))
        ));
        let held = s.vm_rows().unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!((held[0].state.as_str(), held[0].units), ("arriving", 2));
        // Failed: the units go.
        assert!(s.end_arriving("web1", None).unwrap());
        assert!(s.vm_rows().unwrap().is_empty());
        // Arrived: the VM keeps its units as a ready row.
        s.insert_arriving(&row).unwrap();
        assert!(s.end_arriving("web1", Some(("uuid-1", 5))).unwrap());
        let rows = s.vm_rows().unwrap();
        assert_eq!((rows[0].state.as_str(), rows[0].units), ("ready", 2));
        assert!(!s.end_arriving("web1", None).unwrap());
        // A name in use here cannot arrive.
        assert!(matches!(
            s.insert_arriving(&row),
            Err(StoreError::Duplicate(_))
        ));
    }
}
