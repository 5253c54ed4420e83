//! The host's start order (`vm_start_order`): which VMs virtdeck starts when the host
//! boots, in which order, and how long it waits after each.

use super::{Store, StoreResult};
use rusqlite::params;

/// One VM's place in the start order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct StartOrder {
    pub vm: String,
    /// 1 starts first; equal positions start by name.
    pub position: u32,
    /// Seconds virtdeck waits after starting this VM before the next.
    pub delay_seconds: u32,
}

impl Store {
    /// Puts `vm` at `position` with `delay_seconds`, or takes it out of the order (`None`).
    pub fn set_start_order(&self, vm: &str, place: Option<(u32, u32)>) -> StoreResult<()> {
        self.with(|c| {
            match place {
                Some((position, delay)) => c.execute(
                    "INSERT OR REPLACE INTO vm_start_order (vm, position, delay_seconds) VALUES (?1, ?2, ?3)",
                    params![vm, position, delay],
                ),
                None => c.execute("DELETE FROM vm_start_order WHERE vm = ?1", [vm]),
            }
            .map(|_| ())
        })
    }

    /// The start order, first first.
    pub fn start_order(&self) -> StoreResult<Vec<StartOrder>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT vm, position, delay_seconds FROM vm_start_order ORDER BY position, vm",
            )?;
            let rows = st.query_map([], |r| {
                Ok(StartOrder {
                    vm: r.get(0)?,
                    position: r.get(1)?,
                    delay_seconds: r.get(2)?,
                })
            })?;
            rows.collect()
        })
    }
}
