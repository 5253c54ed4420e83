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
    ];
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
    match service::vms::resize(&state.svc, &who.caller(), &name, req).await? {
        Ok(r) => Ok(back_to(
            &who,
            &name,
            &format!(
                "Size changed to {} ({} vCPUs, {} MiB); it applies from the next start.",
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
    };
    let values = vec![
        ("boot1", f.boot1.clone()),
        ("boot2", f.boot2.clone()),
        ("boot3", f.boot3.clone()),
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
