//! Forms on the VM page that change the VM: resize, clone, snapshots. The audited
//! operations here are shared with the API.

use super::super::errors::AppError;
use super::super::session::Authed;
use super::super::AppState;
use super::vms::{back_to, number, render_detail, FormState};
use crate::auth::Role;
use crate::lifecycle::{CloneRequest, FieldError, LifecycleError, SizeRequest, SnapshotRequest};
use crate::service;
use actix_web::{web, HttpResponse};
use serde::Deserialize;

/// Shows a failed form again on the VM page, at the form, with what was typed.
async fn form_failed(
    state: &web::Data<AppState>,
    who: &Authed,
    name: String,
    section: &'static str,
    values: Vec<(&'static str, String)>,
    e: LifecycleError,
) -> Result<HttpResponse, AppError> {
    let (status, errors, message) = super::super::kit::form_failure(e)?;
    render_detail(
        state,
        who,
        name,
        None,
        None,
        FormState {
            section,
            message,
            errors,
            values,
        },
        status,
    )
    .await
}

// ---- page handlers ----

#[derive(Deserialize)]
pub struct ResizeForm {
    csrf: Option<String>,
    #[serde(default)]
    flavor: String,
    #[serde(default)]
    units: String,
    #[serde(default)]
    vcpus: String,
    #[serde(default)]
    memory_mib: String,
    /// Empty: the CPU stays as it is.
    #[serde(default)]
    cpu: String,
}

pub async fn resize_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    form: web::Form<ResizeForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let name = path.into_inner();
    let f = form.into_inner();
    let values = vec![
        ("flavor", f.flavor.clone()),
        ("units", f.units.clone()),
        ("vcpus", f.vcpus.clone()),
        ("memory_mib", f.memory_mib.clone()),
        ("cpu", f.cpu.clone()),
    ];
    let cpu = Some(f.cpu.trim().to_string()).filter(|c| !c.is_empty());
    let mut errors: Vec<FieldError> = Vec::new();
    let req = SizeRequest {
        flavor: Some(f.flavor.trim().to_string()).filter(|s| !s.is_empty()),
        units: number(&f.units, "units", "the units", &mut errors),
        vcpus: number(&f.vcpus, "vcpus", "the vCPUs", &mut errors),
        memory_mib: number(
            &f.memory_mib,
            "memory_mib",
            "the memory in MiB",
            &mut errors,
        ),
    };
    if !errors.is_empty() {
        who.require(&state, Role::Operator, "vm.resize", &name)
            .await?;
        return form_failed(
            &state,
            &who,
            name,
            "resize",
            values,
            LifecycleError::Invalid(errors),
        )
        .await;
    }
    let cpu_text = cpu
        .as_deref()
        .map(|c| format!(", CPU {c}"))
        .unwrap_or_default();
    match service::vms::resize(&state.svc, &who.caller(), &name, req, cpu).await? {
        Ok(r) => Ok(back_to(
            &who,
            &name,
            &format!(
                "Size changed to {} ({} vCPUs, {} MiB{cpu_text}); it applies from the next start.",
                super::units_text(r.units),
                r.vcpus,
                r.memory_mib
            ),
        )),
        Err(e) => form_failed(&state, &who, name, "resize", values, e).await,
    }
}

#[derive(Deserialize)]
pub struct LabelsForm {
    csrf: Option<String>,
    #[serde(default)]
    tags: String,
    #[serde(default)]
    notes: String,
}

pub async fn labels_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    form: web::Form<LabelsForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let name = path.into_inner();
    let f = form.into_inner();
    let values = vec![("tags", f.tags.clone()), ("notes", f.notes.clone())];
    let tags = crate::domain::vm_labels::split_tags(&f.tags);
    match service::vms::set_labels(&state.svc, &who.caller(), &name, Some(tags), Some(f.notes))
        .await?
    {
        Ok(_) => Ok(back_to(&who, &name, "Tags and notes saved.")),
        Err(e) => form_failed(&state, &who, name, "labels", values, e).await,
    }
}

#[derive(Deserialize)]
pub struct DevicesForm {
    csrf: Option<String>,
    #[serde(default)]
    boot1: String,
    #[serde(default)]
    boot2: String,
    #[serde(default)]
    boot3: String,
    boot_menu: Option<String>,
    watchdog: Option<String>,
    rng: Option<String>,
    balloon: Option<String>,
    serial_log: Option<String>,
    #[serde(default)]
    cpu: String,
}

pub async fn devices_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    form: web::Form<DevicesForm>,
) -> Result<HttpResponse, AppError> {
    use crate::domain::vm_devices::BootDev;
    who.check_csrf(form.csrf.as_deref())?;
    let name = path.into_inner();
    let f = form.into_inner();
    let boot: Vec<BootDev> = [&f.boot1, &f.boot2, &f.boot3]
        .into_iter()
        .filter_map(|choice| BootDev::parse(choice))
        .collect();
    let on = |v: &Option<String>| v.as_deref() == Some("1");
    let change = crate::lifecycle::devices::DeviceChange {
        boot: Some(boot),
        boot_menu: Some(on(&f.boot_menu)),
        watchdog: Some(on(&f.watchdog)),
        rng: Some(on(&f.rng)),
        balloon: Some(on(&f.balloon)),
        serial_log: Some(on(&f.serial_log)),
        cpu: Some(f.cpu.trim().to_string()).filter(|c| !c.is_empty()),
    };
    let values = vec![
        ("boot1", f.boot1.clone()),
        ("boot2", f.boot2.clone()),
        ("boot3", f.boot3.clone()),
        ("cpu", f.cpu.clone()),
    ];
    match service::vms::set_devices(&state.svc, &who.caller(), &name, change).await? {
        Ok(d) if !d.changed => Ok(back_to(&who, &name, "Nothing changed.")),
        Ok(d) if d.at_next_start => Ok(back_to(
            &who,
            &name,
            "Boot and devices saved; they apply from the VM's next start (shut it down, then start it).",
        )),
        Ok(_) => Ok(back_to(&who, &name, "Boot and devices saved.")),
        Err(e) => form_failed(&state, &who, name, "devices", values, e).await,
    }
}

#[derive(Deserialize)]
pub struct CdromForm {
    csrf: Option<String>,
    #[serde(default)]
    target: String,
    #[serde(default)]
    iso: String,
}

pub async fn cdrom_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    form: web::Form<CdromForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let name = path.into_inner();
    let f = form.into_inner();
    let values = vec![("iso", f.iso.clone())];
    let iso = Some(f.iso.trim().to_string()).filter(|s| !s.is_empty());
    let target = Some(f.target.trim().to_string()).filter(|s| !s.is_empty());
    match service::vms::change_cdrom(&state.svc, &who.caller(), &name, target, iso).await? {
        Ok(c) => Ok(back_to(
            &who,
            &name,
            &match c.iso {
                Some(iso) => format!("{} now holds {iso}.", c.target),
                None => format!("{} is empty.", c.target),
            },
        )),
        Err(e) => form_failed(&state, &who, name, "cdrom", values, e).await,
    }
}

#[derive(Deserialize)]
pub struct GrowForm {
    csrf: Option<String>,
    #[serde(default)]
    target: String,
    #[serde(default)]
    size_gib: String,
}

pub async fn grow_disk_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    form: web::Form<GrowForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let name = path.into_inner();
    let f = form.into_inner();
    let values = vec![
        ("size_gib", f.size_gib.clone()),
        ("target", f.target.clone()),
    ];
    let mut errors = Vec::new();
    let size = number(&f.size_gib, "size_gib", "the new size in GiB", &mut errors);
    let Some(size) = size.filter(|_| errors.is_empty()) else {
        who.require(&state, Role::Operator, "vm.disk.grow", &name)
            .await?;
        if errors.is_empty() {
            errors.push(crate::domain::create_plan::field(
                "size_gib",
                "Give the new size in GiB.",
            ));
        }
        return form_failed(
            &state,
            &who,
            name,
            "grow",
            values,
            LifecycleError::Invalid(errors),
        )
        .await;
    };
    match service::vms::grow_disk(&state.svc, &who.caller(), &name, f.target.trim(), size).await? {
        Ok(g) => Ok(back_to(
            &who,
            &name,
            &if g.live {
                format!("{} now has {} GiB; the guest sees it already (grow its partition and file system inside).", g.target, g.size_gib)
            } else {
                format!("{} now has {} GiB.", g.target, g.size_gib)
            },
        )),
        Err(e) => form_failed(&state, &who, name, "grow", values, e).await,
    }
}

#[derive(Deserialize)]
pub struct CloneForm {
    csrf: Option<String>,
    #[serde(default)]
    clone_name: String,
    start: Option<String>,
}

pub async fn clone_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    form: web::Form<CloneForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let name = path.into_inner();
    let f = form.into_inner();
    let values = vec![("clone_name", f.clone_name.clone())];
    let req = CloneRequest {
        name: f.clone_name.trim().to_string(),
        start: f.start.is_some(),
    };
    let started = service::vms::clone(&state.svc, &who.caller(), &name, req).await?;
    let outcome = match super::super::kit::form_outcome(&state, &who, started, |j| {
        format!("Cloning {name} to {}", j.vm)
    })
    .await
    {
        Ok(outcome) => outcome,
        Err(to_jobs_page) => return Ok(to_jobs_page),
    };
    match outcome {
        Ok(job) => Ok(back_to(&who, &job.vm, &job.message)),
        Err(LifecycleError::Invalid(errs)) => {
            // The form calls the name field clone_name.
            let errs = errs
                .into_iter()
                .map(|e| FieldError {
                    field: if e.field == "name" {
                        "clone_name"
                    } else {
                        e.field
                    },
                    message: e.message,
                })
                .collect();
            form_failed(
                &state,
                &who,
                name,
                "clone",
                values,
                LifecycleError::Invalid(errs),
            )
            .await
        }
        Err(e) => form_failed(&state, &who, name, "clone", values, e).await,
    }
}

#[derive(Deserialize)]
pub struct SnapshotForm {
    csrf: Option<String>,
    #[serde(default)]
    snapshot_name: String,
    #[serde(default)]
    description: String,
}

pub async fn snapshot_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    form: web::Form<SnapshotForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let name = path.into_inner();
    let f = form.into_inner();
    let values = vec![
        ("snapshot_name", f.snapshot_name.clone()),
        ("description", f.description.clone()),
    ];
    let req = SnapshotRequest {
        name: f.snapshot_name,
        description: f.description,
    };
    match service::vms::create_snapshot(&state.svc, &who.caller(), &name, req).await? {
        Ok(s) => Ok(snapshot_done(
            &who,
            &name,
            format!("Snapshot {} taken.", s.name),
        )),
        Err(e) => form_failed(&state, &who, name, "snapshot", values, e).await,
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

pub async fn snapshot_action(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<(String, String, String)>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let (name, snapshot, action) = path.into_inner();
    let r = match action.as_str() {
        "revert" => service::vms::revert_snapshot(&state.svc, &who.caller(), &name, &snapshot)
            .await?
            .map(|()| format!("{name} is back at snapshot {snapshot}.")),
        "delete" => service::vms::delete_snapshot(&state.svc, &who.caller(), &name, &snapshot)
            .await?
            .map(|()| format!("Snapshot {snapshot} deleted.")),
        _ => return Err(AppError::not_found("There is no such snapshot action.")),
    };
    match r {
        Ok(m) => Ok(snapshot_done(&who, &name, m)),
        Err(e) => form_failed(&state, &who, name, "snapshot", vec![], e).await,
    }
}

/// Back to the VM page, with a notice shown once (a reload does not repeat it).
fn snapshot_done(who: &Authed, name: &str, notice: String) -> HttpResponse {
    crate::web::flash::redirect(
        who,
        &format!("/vms/{name}"),
        crate::web::flash::Flash::notice(notice),
    )
}

#[derive(Deserialize)]
pub struct AddDiskForm {
    csrf: Option<String>,
    /// `new` or `existing`.
    #[serde(default)]
    source: String,
    #[serde(default)]
    pool: String,
    #[serde(default)]
    size_gib: String,
    #[serde(default)]
    format: String,
    #[serde(default)]
    volume: String,
    #[serde(default)]
    bus: String,
    #[serde(default)]
    cache: String,
}

pub async fn add_disk_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    form: web::Form<AddDiskForm>,
) -> Result<HttpResponse, AppError> {
    use crate::domain::create_plan::field;
    use crate::domain::vm_attach::{AddDiskRequest, CacheMode, DiskBus};
    use crate::domain::vmspec::DiskFormat;
    who.check_csrf(form.csrf.as_deref())?;
    let name = path.into_inner();
    let f = form.into_inner();
    let values = vec![
        ("source", f.source.clone()),
        ("pool", f.pool.clone()),
        ("size_gib", f.size_gib.clone()),
        ("format", f.format.clone()),
        ("volume", f.volume.clone()),
        ("bus", f.bus.clone()),
        ("cache", f.cache.clone()),
    ];
    let mut errors = Vec::new();
    let existing = f.source == "existing";
    let size_gib = if existing {
        None
    } else {
        number(&f.size_gib, "size_gib", "the size in GiB", &mut errors)
    };
    let format = match f.format.trim() {
        "" => None,
        "qcow2" => Some(DiskFormat::Qcow2),
        "raw" => Some(DiskFormat::Raw),
        _ => {
            errors.push(field("format", "Choose qcow2 or raw."));
            None
        }
    };
    let bus = match f.bus.trim() {
        "" => Some(DiskBus::Virtio),
        b => DiskBus::parse(b),
    };
    if bus.is_none() {
        errors.push(field("bus", "Choose virtio, SATA or SCSI."));
    }
    let cache = match f.cache.trim() {
        "" => Some(CacheMode::Default),
        c => CacheMode::parse(c),
    };
    if cache.is_none() {
        errors.push(field("cache", "Choose a cache mode from the list."));
    }
    let (Some(bus), Some(cache), true) = (bus, cache, errors.is_empty()) else {
        who.require(&state, Role::Operator, "vm.disk.add", &name)
            .await?;
        return form_failed(
            &state,
            &who,
            name,
            "add-disk",
            values,
            LifecycleError::Invalid(errors),
        )
        .await;
    };
    let req = AddDiskRequest {
        pool: (!existing).then(|| f.pool.trim().to_string()),
        size_gib,
        format: if existing { None } else { format },
        volume: existing.then(|| f.volume.trim().to_string()),
        bus,
        cache,
    };
    match service::vms::add_disk(&state.svc, &who.caller(), &name, req).await? {
        Ok(d) => Ok(back_to(
            &who,
            &name,
            &if d.live {
                format!(
                    "Disk {} ({} GiB) is plugged in; the guest sees it now.",
                    d.target, d.size_gib
                )
            } else {
                format!(
                    "Disk {} ({} GiB) is added; the VM has it from its next start.",
                    d.target, d.size_gib
                )
            },
        )),
        Err(e) => form_failed(&state, &who, name, "add-disk", values, e).await,
    }
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    csrf: Option<String>,
}

pub async fn detach_disk_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<(String, String)>,
    form: web::Form<CsrfOnly>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let (name, target) = path.into_inner();
    match service::vms::detach_disk(&state.svc, &who.caller(), &name, &target).await? {
        Ok(d) => {
            let kept = d
                .path
                .as_deref()
                .map(|p| format!(" Its volume {p} stays in its pool."))
                .unwrap_or_default();
            Ok(back_to(
                &who,
                &name,
                &if d.pending_in_guest {
                    format!("Disk {} is out of the VM's definition; the guest has not let go of it yet, so it leaves at the next start at the latest.{kept}", d.target)
                } else {
                    format!("Disk {} is taken out.{kept}", d.target)
                },
            ))
        }
        Err(e) => form_failed(&state, &who, name, "disks", vec![], e).await,
    }
}

#[derive(Deserialize)]
pub struct AddNicForm {
    csrf: Option<String>,
    /// `bridge:NAME` or `network:NAME`.
    #[serde(default)]
    attach_to: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    mac: String,
}

pub async fn add_nic_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    form: web::Form<AddNicForm>,
) -> Result<HttpResponse, AppError> {
    use crate::domain::create_plan::{field, NicRequest};
    use crate::domain::vmspec::NicModel;
    who.check_csrf(form.csrf.as_deref())?;
    let name = path.into_inner();
    let f = form.into_inner();
    let values = vec![
        ("attach_to", f.attach_to.clone()),
        ("model", f.model.clone()),
        ("mac", f.mac.clone()),
    ];
    let mut errors = Vec::new();
    let (bridge, network) = match f.attach_to.trim().split_once(':') {
        Some(("bridge", b)) => (Some(b.to_string()), None),
        Some(("network", n)) => (None, Some(n.to_string())),
        _ => {
            errors.push(field(
                "attach_to",
                "Choose the bridge or libvirt network the card plugs into.",
            ));
            (None, None)
        }
    };
    let model = match f.model.trim() {
        "" | "virtio" => Some(NicModel::Virtio),
        "e1000" => Some(NicModel::E1000),
        _ => {
            errors.push(field("model", "Choose virtio or e1000."));
            None
        }
    };
    if !errors.is_empty() {
        who.require(&state, Role::Operator, "vm.nic.add", &name)
            .await?;
        return form_failed(
            &state,
            &who,
            name,
            "add-nic",
            values,
            LifecycleError::Invalid(errors),
        )
        .await;
    }
    let req = NicRequest {
        bridge,
        network,
        model,
        mac: Some(f.mac.trim().to_string()).filter(|m| !m.is_empty()),
    };
    match service::vms::add_nic(&state.svc, &who.caller(), &name, req).await? {
        Ok(a) => Ok(back_to(
            &who,
            &name,
            &if a.live {
                format!(
                    "A {} card ({}) on {} {} is plugged in.",
                    a.model, a.mac, a.kind, a.source
                )
            } else {
                format!(
                    "A {} card ({}) on {} {} is added; the VM has it from its next start.",
                    a.model, a.mac, a.kind, a.source
                )
            },
        )),
        Err(e) => form_failed(&state, &who, name, "add-nic", values, e).await,
    }
}

/// A NIC's buttons: `link-up`, `link-down`, `remove`.
pub async fn nic_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<(String, String, String)>,
    form: web::Form<CsrfOnly>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let (name, mac, action) = path.into_inner();
    let caller = who.caller();
    let done = match action.as_str() {
        "link-up" | "link-down" => {
            service::vms::set_nic_link(&state.svc, &caller, &name, &mac, action == "link-up")
                .await?
        }
        "remove" => service::vms::remove_nic(&state.svc, &caller, &name, &mac).await?,
        _ => {
            return Err(AppError::not_found(
                "There is no such action for a network card.",
            ))
        }
    };
    match done {
        Ok(c) => Ok(back_to(
            &who,
            &name,
            &match action.as_str() {
                "remove" if c.pending_in_guest => format!("The card {} is out of the VM's definition; the guest has not let go of it yet, so it leaves at the next start at the latest.", c.mac),
                "remove" => format!("The card {} is taken out.", c.mac),
                _ if c.link_up => format!("The card {}'s cable is plugged in.", c.mac),
                _ => format!("The card {}'s cable is pulled: the guest sees no carrier.", c.mac),
            },
        )),
        Err(e) => form_failed(&state, &who, name, "nics", vec![], e).await,
    }
}

#[derive(Deserialize)]
pub struct HostdevForm {
    csrf: Option<String>,
    #[serde(default)]
    device: String,
    #[serde(default)]
    address: String,
}

pub async fn attach_hostdev_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    form: web::Form<HostdevForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let name = path.into_inner();
    let values = vec![("device", form.device.clone())];
    match service::vms::attach_hostdev(&state.svc, &who.caller(), &name, form.device.trim()).await?
    {
        Ok(h) => Ok(back_to(
            &who,
            &name,
            &if h.live {
                format!("{} is passed through; the guest has it now.", h.address)
            } else {
                format!("{} is passed through from the VM's next start.", h.address)
            },
        )),
        Err(e) => form_failed(&state, &who, name, "hostdevs", values, e).await,
    }
}

pub async fn detach_hostdev_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    form: web::Form<HostdevForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let name = path.into_inner();
    match service::vms::detach_hostdev(&state.svc, &who.caller(), &name, form.address.trim())
        .await?
    {
        Ok(h) => Ok(back_to(
            &who,
            &name,
            &if h.pending_in_guest {
                format!("{} is out of the VM's definition; the guest has not let go of it yet, so it leaves at the next start at the latest.", h.address)
            } else {
                format!("{} is given back to the host.", h.address)
            },
        )),
        Err(e) => form_failed(&state, &who, name, "hostdevs", vec![], e).await,
    }
}

#[derive(Deserialize)]
pub struct StartOrderForm {
    csrf: Option<String>,
    /// Empty: out of the order.
    #[serde(default)]
    position: String,
    #[serde(default)]
    delay_seconds: String,
}

pub async fn start_order_form(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    form: web::Form<StartOrderForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let name = path.into_inner();
    let f = form.into_inner();
    let values = vec![
        ("position", f.position.clone()),
        ("delay_seconds", f.delay_seconds.clone()),
    ];
    let mut errors = Vec::new();
    let position = number(
        &f.position,
        "position",
        "a place (1 starts first)",
        &mut errors,
    );
    let delay = number(&f.delay_seconds, "delay_seconds", "seconds", &mut errors).unwrap_or(0);
    if !errors.is_empty() {
        who.require(&state, Role::Operator, "vm.start_order", &name)
            .await?;
        return form_failed(
            &state,
            &who,
            name,
            "start-order",
            values,
            LifecycleError::Invalid(errors),
        )
        .await;
    }
    match service::vms::set_start_order(&state.svc, &who.caller(), &name, position, delay).await? {
        Ok(o) => Ok(back_to(
            &who,
            &name,
            &match o.position {
                Some(p) => format!(
                    "{name} starts at the host's boot in place {p}, then virtdeck waits {} s before the next VM.",
                    o.delay_seconds
                ),
                None => format!("{name} is out of the start order; it starts with the host through libvirt's autostart."),
            },
        )),
        Err(e) => form_failed(&state, &who, name, "start-order", values, e).await,
    }
}
