//! virtdeck: a self-contained web console for one KVM host.
//!
//! See ARCHITECTURE.md for the code map and the invariants between these modules.

pub mod adapters;
pub mod auth;
pub mod cli;
pub mod config;
pub mod console;
pub mod domain;
pub mod hostcfg;
pub mod hypervisor;
pub mod lifecycle;
pub mod service;
pub mod store;
pub mod usage;
pub mod web;
