//! The heavy integration tests: real libvirtd and QEMU guests (TCG), the two-host
//! migration rig, network namespaces, headless Chromium, floods and `kill -9` of the
//! server. One binary, so the shared helpers (`tests/common`) are compiled and linked
//! once.
//!
//! Each module was written to own the machine while it runs (its guests, its netns,
//! its VM names, its share of two CPUs, the test process's memory figures), so the
//! [`gate`] lets the tests of one module run beside each other, never beside another
//! module's. `make test` installs everything these need; they fail, never skip, when
//! something is missing.

#[path = "../common/mod.rs"]
mod common;

mod console_support;
mod gate;

mod api_docs_browser;
mod backups_cut_real;
mod backups_real;
mod backups_schedule_real;
mod browser;
mod cloudinit_real;
mod console;
mod console_browser;
mod debian_guest_real;
mod debian_template_real;
mod debian_uefi_real;
mod devices_real;
mod fleet_browser;
mod hostile_console;
mod hostile_login;
mod hostnet;
mod jobs_browser;
mod kickstart_real;
mod migration_real;
mod packages;
mod pages_flows;
mod pages_walk;
mod pam_accounts;
mod pools_real;
mod real_install;
mod real_qemu;
mod real_usage;
mod store_durability;
mod templates_real;
mod two_factor_browser;
mod vm_page_browser;
mod volumes_real;
