//! The pure core: plain values and rules, no I/O, no actix, no libvirt.

pub mod capacity;
pub mod cidr;
pub mod clock;
pub mod clone;
pub mod cloudinit;
pub mod create_plan;
pub mod fleet;
pub mod host;
pub mod host_export;
pub mod hostnet;
pub mod install_tree;
pub mod inventory;
pub mod kickstart;
pub mod libvirt_network;
pub mod listing;
pub mod snapshot;
pub mod storage;
pub mod sysctl;
pub mod templates;
pub mod totp;
pub mod usage;
pub mod vm;
pub mod vm_labels;
pub mod vmspec;
pub mod volumes;
pub mod xml;
