//! The pure core: plain values and rules, no I/O, no actix, no libvirt.

pub mod host;
pub mod vm;
