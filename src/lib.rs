//! virtdeck: a self-contained web console for one KVM host.
//!
//! See ARCHITECTURE.md for the code map and the invariants between these modules.

pub mod auth;
pub mod cli;
pub mod config;
pub mod console;
pub mod domain;
pub mod fetch;
pub mod hostcfg;
pub mod hypervisor;
pub mod lifecycle;
pub mod seed_iso;
pub mod service;
pub mod store;
pub mod sysprep;
pub mod usage;
pub mod web;
