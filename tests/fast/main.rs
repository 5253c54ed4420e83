//! The fast integration tests: the real app on port 0 with a temp data dir, on libvirt's
//! test driver (no daemon, no guest, no browser), driven over HTTP as a user or API
//! client would, plus the architecture rules and the parsers' property tests. One
//! binary, so the shared helpers (`tests/common`) are compiled and linked once.

#[path = "../common/mod.rs"]
mod common;

/// The 1,000-VM host of `make bench` (the scale tests and the VM list tests use it).
#[allow(dead_code)]
#[path = "../../benches/scale/host.rs"]
mod scale_host;

mod architecture;
mod backups;
mod bench_scale;
mod cli;
mod cloudinit;
mod fetch_policy;
mod firmware;
mod fleet;
mod hostile_routes;
mod hostile_secrets;
mod hostile_volumes;
mod jobs;
mod kickstarts;
mod libvirt_networks;
mod metrics;
mod network_install;
mod openapi;
mod pools;
mod proptest_parsers;
mod reconcile;
mod service_cli;
mod start_order;
mod templates;
mod templates_sysprep;
mod tls;
mod two_factor;
mod vm_attach;
mod vm_bulk;
mod vm_changes;
mod vm_devices;
mod vm_labels;
mod vm_list;
mod vm_page_http;
mod vms;
mod volumes;
mod web_auth;
