//! Storage pools, volumes and networks as virtdeck shows them.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct VolumeInfo {
    pub name: String,
    pub path: String,
    pub capacity_bytes: u64,
    pub allocation_bytes: u64,
}

impl VolumeInfo {
    pub fn capacity_gib(&self) -> u64 {
        self.capacity_bytes.div_ceil(GIB)
    }

    /// Looks like an installer image.
    pub fn is_iso(&self) -> bool {
        self.name.to_ascii_lowercase().ends_with(".iso")
    }
}

pub const GIB: u64 = 1024 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PoolInfo {
    pub name: String,
    /// libvirt's pool type: dir, logical, netfs…
    pub kind: String,
    pub active: bool,
    pub capacity_bytes: u64,
    pub allocation_bytes: u64,
    pub available_bytes: u64,
    pub volumes: Vec<VolumeInfo>,
}

impl PoolInfo {
    pub fn capacity_gib(&self) -> u64 {
        self.capacity_bytes / GIB
    }
    pub fn available_gib(&self) -> u64 {
        self.available_bytes / GIB
    }
    /// Volumes in this pool are block devices (LVM, disk pools).
    pub fn is_block(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "logical" | "disk" | "iscsi" | "scsi" | "mpath"
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkInfo {
    pub name: String,
    pub bridge: Option<String>,
    /// nat, bridge, route, open, isolated (none)…
    pub forward_mode: String,
    pub active: bool,
}
