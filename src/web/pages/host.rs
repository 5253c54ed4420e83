//! Host overview and the VM list.

use super::super::errors::{html, AppError};
use super::super::session::Authed;
use super::super::AppState;
use super::Chrome;
use crate::domain::guest_caps::GuestCapabilities;
use crate::domain::host::{HostFacts, KvmStatus};
use crate::domain::vm::VmCounts;
use crate::lifecycle::Capacity;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;

#[derive(Template)]
#[template(path = "host.html")]
struct HostPage {
    chrome: Chrome,
    facts: HostFacts,
    kvm_ok: bool,
    kvm_text: String,
    virt_type: Result<&'static str, String>,
    counts: VmCounts,
    /// What the vCPU figure means when it passes the CPU count.
    overcommit: Option<String>,
    capacity: Result<Capacity, String>,
    usage: super::super::usage::Charts,
    /// Firmware, TPM and CPU models guests can have here; none when unreadable.
    guest: Option<GuestCapabilities>,
}

pub async fn host_page(state: web::Data<AppState>, who: Authed) -> Result<HttpResponse, AppError> {
    let super::super::kit::HostOverview {
        facts,
        vms,
        guest,
        capacity,
    } = super::super::kit::host_overview(&state).await?;
    let kvm = state.hv.kvm_status();
    let counts = VmCounts::of(&vms);
    let overcommit = (counts.vcpus_active > u64::from(facts.cpu_count)).then(|| {
        format!(
            "Overcommitted: running VMs have more vCPUs than the host has CPUs, so they share \
             them. That is allowed up to {} vCPUs per usable CPU ([capacity] \
             cpu_allocation_ratio); memory is never overcommitted.",
            state.cfg.capacity.cpu_allocation_ratio
        )
    });
    let page = HostPage {
        overcommit,
        chrome: Chrome::new(&who, "host"),
        kvm_ok: matches!(kvm, KvmStatus::Usable),
        kvm_text: kvm.describe(),
        virt_type: state
            .virt_type
            .as_ref()
            .map(|v| v.as_str())
            .map_err(Clone::clone),
        counts,
        capacity,
        facts,
        usage: super::super::usage::host_charts(&state),
        guest,
    };
    Ok(html(StatusCode::OK, &page))
}

#[derive(Template)]
#[template(path = "host_devices.html")]
struct HostDevicesPage {
    chrome: Chrome,
    devices: crate::lifecycle::attach::HostDevices,
}

/// The host's PCI and USB devices (admins): IOMMU group, driver, the VM that has each.
pub async fn host_devices_page(
    state: web::Data<AppState>,
    who: Authed,
) -> Result<HttpResponse, AppError> {
    who.require(&state, crate::auth::Role::Admin, "host.devices.view", "")
        .await?;
    let devices = super::super::lc(&state, |s| {
        crate::lifecycle::attach::host_devices(s.hv.as_ref(), "")
    })
    .await?;
    Ok(html(
        StatusCode::OK,
        &HostDevicesPage {
            chrome: Chrome::new(&who, "host"),
            devices,
        },
    ))
}
