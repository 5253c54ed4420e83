//! VM pages: list with units, create form, detail, actions, delete.

use super::super::errors::{html, AppError};
use super::super::session::Authed;
use super::super::{lc, now, AppState};
use super::Chrome;
use crate::auth::Role;
use crate::domain::capacity::{Size, UnitModel};
use crate::domain::guest_caps::GuestCapabilities;
use crate::domain::inventory::{NetworkInfo, PoolInfo};
use crate::domain::listing::{
    self, ListQuery, Page, StateFilter, DEFAULT_PER_PAGE, PER_PAGE_CHOICES,
};
use crate::domain::snapshot::SnapshotInfo;
use crate::domain::vm::{VmAction, VmEvent, VmState};
use crate::domain::vmspec::{Clock, DiskFormat, Firmware, NicModel};
use crate::domain::xml::ParsedDomain;
use crate::lifecycle::{
    self, Capacity, CreateVmRequest, DiskRequest, FieldError, InstallRequest, LifecycleError,
    NicRequest, VmView,
};
use crate::service;
use crate::store::{AuditEntry, FlavorRow};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

#[derive(Template)]
#[template(path = "vms.html")]
struct VmsPage<'a> {
    chrome: Chrome,
    vms: Vec<&'a VmView>,
    /// VMs on the host, before any filter.
    total: usize,
    query: ListQuery,
    page: Page,
    capacity: Capacity,
    can_operate: bool,
    sparks: super::super::usage::Sparks,
    /// What the last action from this list did.
    message: Option<String>,
}

impl VmsPage<'_> {
    /// This list's address with another page number (filter and page size kept).
    fn page_href(&self, number: impl std::borrow::Borrow<usize>) -> String {
        list_href(&self.query, *number.borrow())
    }

    fn state_choices(&self) -> [StateFilter; 5] {
        StateFilter::ALL
    }

    fn per_page_choices(&self) -> [usize; 4] {
        PER_PAGE_CHOICES
    }

    /// Where a row's Start / Shut down button comes back to: this page of the list.
    fn back_href(&self) -> String {
        list_href(&self.query, self.page.number)
    }
}

fn list_href(query: &ListQuery, page: usize) -> String {
    let mut params: Vec<(&str, String)> = Vec::new();
    if !query.search.is_empty() {
        params.push(("q", query.search.clone()));
    }
    if query.state != StateFilter::Any {
        params.push(("state", query.state.key().to_string()));
    }
    if !query.tag.is_empty() {
        params.push(("tag", query.tag.clone()));
    }
    if query.per_page != DEFAULT_PER_PAGE {
        params.push(("per_page", query.per_page.to_string()));
    }
    if page > 1 {
        params.push(("page", page.to_string()));
    }
    match serde_urlencoded::to_string(&params) {
        Ok(q) if !q.is_empty() => format!("/vms?{q}"),
        _ => "/vms".to_string(),
    }
}

/// The list's query string as typed; every value optional.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ListParams {
    q: String,
    state: String,
    page: String,
    per_page: String,
    tag: String,
}

pub async fn vms_page(
    state: web::Data<AppState>,
    who: Authed,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, AppError> {
    let (list, capacity) = lc(&state, |s| {
        let list = s.vm_list.get(s.hv.as_ref(), &s.store, &s.lifecycle)?;
        let capacity = lifecycle::capacity_of(s.hv.as_ref(), list.model, list.claims.clone())?;
        Ok((list, capacity))
    })
    .await?;
    let query = ListQuery::from_params(&params.q, &params.state, &params.page, &params.per_page)
        .with_tag(&params.tag);
    let (vms, page) = listing::select(&list.vms, &query, |v| {
        (v.summary.name.as_str(), v.summary.state, v.tags.as_slice())
    });
    let names: Vec<&str> = vms.iter().map(|v| v.summary.name.as_str()).collect();
    let sparks = super::super::usage::sparks(&state, &names);
    Ok(html(
        StatusCode::OK,
        &VmsPage {
            can_operate: who.role.allows(Role::Operator),
            chrome: Chrome::new(&who, "vms"),
            total: list.vms.len(),
            vms,
            query,
            page,
            capacity,
            sparks,
            // A one-time notice left by a form (e.g. a VM deleted) comes first.
            message: super::super::flash::take(&who).map(|f| f.notice),
        },
    ))
}

// ---- create ----

/// The create form as typed; every field is text so that bad input can be shown back.
#[derive(Deserialize, Default, Clone)]
#[serde(default)]
pub struct CreateForm {
    csrf: String,
    pub name: String,
    pub size_mode: String,
    pub flavor: String,
    pub units: String,
    pub vcpus: String,
    pub memory_mib: String,
    pub disk_mode: String,
    pub pool: String,
    pub size_gib: String,
    pub format: String,
    pub volume: String,
    pub install: String,
    pub iso: String,
    pub kernel: String,
    pub initrd: String,
    pub cmdline: String,
    pub url: String,
    pub kernel_args: String,
    pub nic_mode: String,
    pub bridge: String,
    pub network: String,
    pub nic_model: String,
    pub mac: String,
    pub clock: String,
    pub autostart: Option<String>,
    pub then: String,
    /// Cloud image: the base volume's path and the disk size.
    pub base: String,
    pub cloud_size_gib: String,
    /// Cloud-init; the password is never shown back.
    pub ci_hostname: String,
    pub ci_user: String,
    pub ci_password: String,
    pub ci_ssh_keys: String,
    pub ci_user_data: String,
    /// Network install: a stored kickstart's name, or empty for none.
    pub kickstart: String,
    /// `bios`, `uefi` or `uefi_secure_boot`.
    pub firmware: String,
    pub tpm: Option<String>,
    /// `default`, `host-passthrough`, `host-model` or a named model.
    pub cpu: String,
}

pub(super) fn number<T: std::str::FromStr>(
    text: &str,
    name: &'static str,
    what: &str,
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    match t.parse() {
        Ok(v) => Some(v),
        Err(_) => {
            errors.push(FieldError {
                field: name,
                message: format!("Enter {what} as a whole number."),
            });
            None
        }
    }
}

impl CreateForm {
    /// The request the form describes (unreadable numbers left out), and the fields that
    /// could not even be read.
    fn to_request(&self) -> (CreateVmRequest, Vec<FieldError>) {
        let mut errors = Vec::new();
        let (flavor, units, vcpus, memory_mib) = match self.size_mode.as_str() {
            "units" => (
                None,
                number(&self.units, "units", "units", &mut errors),
                None,
                None,
            ),
            "custom" => (
                None,
                None,
                number(&self.vcpus, "vcpus", "vCPUs", &mut errors),
                number(&self.memory_mib, "memory_mib", "memory", &mut errors),
            ),
            _ => (Some(self.flavor.clone()), None, None, None),
        };
        let format = match self.format.as_str() {
            "raw" => Some(DiskFormat::Raw),
            "qcow2" => Some(DiskFormat::Qcow2),
            _ => None,
        };
        let disk = match self.disk_mode.as_str() {
            "existing" => Some(DiskRequest::Existing {
                path: self.volume.clone(),
            }),
            "none" => None,
            "cloud" => Some(DiskRequest::CloudImage {
                base: self.base.clone(),
                size_gib: number(
                    &self.cloud_size_gib,
                    "size_gib",
                    "the disk size",
                    &mut errors,
                ),
            }),
            _ => Some(DiskRequest::New {
                pool: self.pool.clone(),
                size_gib: number(&self.size_gib, "size_gib", "the disk size", &mut errors),
                format,
            }),
        };
        let install = match self.install.as_str() {
            "cdrom" => InstallRequest::Cdrom {
                volume: self.iso.clone(),
            },
            "kernel" => InstallRequest::Kernel {
                kernel: self.kernel.clone(),
                initrd: Some(self.initrd.clone()),
                cmdline: self.cmdline.clone(),
            },
            "pxe" => InstallRequest::Pxe,
            "url" => InstallRequest::Url {
                url: self.url.clone(),
                kernel_args: self.kernel_args.clone(),
                kickstart: Some(self.kickstart.trim().to_string()).filter(|k| !k.is_empty()),
            },
            _ => InstallRequest::Import,
        };
        // A cloud image boots its disk; the install choice does not apply.
        let (install, cloud_init) = if self.disk_mode == "cloud" {
            (
                InstallRequest::Import,
                Some(lifecycle::cloudinit::CloudInitRequest {
                    hostname: self.ci_hostname.clone(),
                    user: self.ci_user.clone(),
                    password: self.ci_password.clone(),
                    ssh_keys: self.ci_ssh_keys.lines().map(str::to_string).collect(),
                    user_data: self.ci_user_data.clone(),
                }),
            )
        } else {
            (install, None)
        };
        let model = match self.nic_model.as_str() {
            "e1000" => Some(NicModel::E1000),
            _ => Some(NicModel::Virtio),
        };
        let mac = Some(self.mac.clone());
        let nic = match self.nic_mode.as_str() {
            "none" => None,
            "network" => Some(NicRequest {
                bridge: None,
                network: Some(self.network.clone()),
                model,
                mac,
            }),
            _ => Some(NicRequest {
                bridge: Some(self.bridge.clone()),
                network: None,
                model,
                mac,
            }),
        };
        let req = CreateVmRequest {
            name: self.name.clone(),
            flavor,
            units,
            vcpus,
            memory_mib,
            disk,
            install,
            nic,
            clock: Some(if self.clock == "localtime" {
                Clock::Localtime
            } else {
                Clock::Utc
            }),
            autostart: self.autostart.is_some(),
            start: self.then != "define",
            cloud_init,
            firmware: match self.firmware.trim() {
                "" => None,
                f => {
                    let parsed = Firmware::parse(f);
                    if parsed.is_none() {
                        errors.push(FieldError {
                            field: "firmware",
                            message: "Choose BIOS, UEFI or UEFI + Secure Boot.".into(),
                        });
                    }
                    parsed
                }
            },
            tpm: self.tpm.is_some(),
            cpu: Some(self.cpu.trim().to_string()).filter(|c| !c.is_empty()),
            kickstart_base_url: None,
        };
        (req, errors)
    }

    /// The size field the form is using, where a units or admission problem is shown.
    fn size_field(&self) -> &'static str {
        match self.size_mode.as_str() {
            "units" => "units",
            "custom" => "vcpus",
            _ => "flavor",
        }
    }
}

#[derive(Template)]
#[template(path = "vm_new.html")]
struct NewVmPage {
    chrome: Chrome,
    form: CreateForm,
    errors: Vec<FieldError>,
    general_error: Option<String>,
    flavors: Vec<FlavorRow>,
    pools: Vec<PoolInfo>,
    networks: Vec<NetworkInfo>,
    capacity: Capacity,
    boot_dir: String,
    /// Stored kickstarts, for a network install.
    kickstarts: Vec<String>,
    /// Guests on other networks may not reach the derived kickstart URL.
    kickstart_base_note: bool,
    /// Which volumes a new VM may take (as its disk, as its CD-ROM).
    choices: lifecycle::VolumeChoices,
    /// Firmware, TPM and CPU models this host offers.
    guest: GuestCapabilities,
}

impl NewVmPage {
    fn error_for(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|e| e.field == field)
            .map(|e| e.message.as_str())
    }
    fn flavor_size(&self, units: &u32) -> Size {
        self.capacity.model.size_of(*units)
    }
    fn bridges(&self) -> Vec<String> {
        let mut b: Vec<String> = self
            .networks
            .iter()
            .filter(|n| n.forward_mode == "bridge")
            .filter_map(|n| n.bridge.clone())
            .collect();
        b.dedup();
        b
    }
    fn isos(&self) -> Vec<(String, String)> {
        self.pools
            .iter()
            .flat_map(|p| {
                p.volumes
                    .iter()
                    .filter(|v| v.is_iso() && self.choices.isos.contains(&v.path))
                    .map(move |v| (v.path.clone(), format!("{} / {}", p.name, v.name)))
            })
            .collect()
    }
    fn charge_text(&self) -> Option<String> {
        charge_text(&self.capacity.model, &self.flavors, &self.pools, &self.form)
    }
    /// Existing volumes a new VM may take as its disk: none another VM uses, no seed,
    /// no ISO, none being made.
    fn usable_disks(&self) -> Vec<(String, String)> {
        self.disks()
            .into_iter()
            .filter(|(path, _)| self.choices.disks.contains(path))
            .collect()
    }
    fn disks(&self) -> Vec<(String, String)> {
        self.pools
            .iter()
            .flat_map(|p| {
                p.volumes.iter().filter(|v| !v.is_iso()).map(move |v| {
                    (
                        v.path.clone(),
                        format!("{} / {} ({} GiB)", p.name, v.name, v.capacity_gib()),
                    )
                })
            })
            .collect()
    }
}

/// What the size as typed gives and what the VM is charged, and which resource
/// decides it: "2 units: 10 vCPUs, 10.3 GiB memory; the 300 GiB disk needs 4 units,
/// so the VM is charged 4 units." `None` while the size cannot be read.
fn charge_text(
    model: &UnitModel,
    flavors: &[FlavorRow],
    pools: &[PoolInfo],
    f: &CreateForm,
) -> Option<String> {
    let read = |s: &str| s.trim().parse::<u64>().ok().filter(|n| *n > 0);
    let units = match f.size_mode.as_str() {
        "units" => read(&f.units).map(|u| u.min(u64::from(u32::MAX)) as u32),
        "custom" => match (read(&f.vcpus), read(&f.memory_mib)) {
            (Some(v), Some(m)) => Some(model.units_for(Size {
                vcpus: v.min(u64::from(u32::MAX)) as u32,
                memory_mib: m,
            })),
            _ => None,
        },
        _ => flavors
            .iter()
            .find(|fl| fl.name == f.flavor)
            .map(|fl| fl.units),
    }?;
    let size = model.size_of(units);
    let memory = if size.memory_mib >= 1024 {
        format!("{:.1} GiB", size.memory_mib as f64 / 1024.0)
    } else {
        format!("{} MiB", size.memory_mib)
    };
    let gives = format!(
        "{}: {} vCPU{}, {memory} memory",
        super::units_text(units),
        size.vcpus,
        if size.vcpus == 1 { "" } else { "s" }
    );
    let pool = pools.iter().find(|p| p.name == f.pool);
    let disk = match (f.disk_mode.as_str(), pool) {
        ("new" | "", Some(p)) if p.capacity_gib() > 0 => Some(p),
        _ => None,
    };
    let Some(p) = disk else {
        return Some(format!(
            "{gives}; the VM is charged {}.",
            super::units_text(units)
        ));
    };
    let Some(gib) = read(&f.size_gib) else {
        return Some(format!(
            "{gives}; its new disk gets the units' share of pool {}, {} GiB. The VM is charged {}.",
            p.name,
            model.disk_gib_of(units, p.capacity_gib()).max(1),
            super::units_text(units)
        ));
    };
    let disk_units = model.units_for_disk(gib, p.capacity_gib());
    Some(if disk_units > units {
        format!(
            "{gives}; the {gib} GiB disk needs {}, so the VM is charged {}.",
            super::units_text(disk_units),
            super::units_text(disk_units)
        )
    } else {
        format!(
            "{gives}; the {gib} GiB disk fits in them. The VM is charged {}.",
            super::units_text(units)
        )
    })
}

/// Which of the New VM form's fields decide the size and charge (the only ones the live
/// explanation reads; nothing else of the form, such as a password, is sent for it).
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ChargeQuery {
    size_mode: String,
    flavor: String,
    units: String,
    vcpus: String,
    memory_mib: String,
    disk_mode: String,
    pool: String,
    size_gib: String,
}

/// `GET /vms/new/charge`: the New VM form's size explanation for the values as typed
/// (plain text, empty while they cannot be read), so the form can say live what the VM
/// gets and is charged, from the same rule the server applies on create.
pub async fn charge_explained(
    state: web::Data<AppState>,
    who: Authed,
    q: web::Query<ChargeQuery>,
) -> Result<HttpResponse, AppError> {
    who.require(&state, Role::Operator, "vm.create", "").await?;
    let q = q.into_inner();
    let form = CreateForm {
        size_mode: q.size_mode,
        flavor: q.flavor,
        units: q.units,
        vcpus: q.vcpus,
        memory_mib: q.memory_mib,
        disk_mode: q.disk_mode,
        pool: q.pool,
        size_gib: q.size_gib,
        ..Default::default()
    };
    let (flavors, pools, capacity) = lc(&state, |s| {
        Ok((
            s.store.flavors()?,
            s.hv.pools()?,
            lifecycle::capacity(s.hv.as_ref(), &s.store, &s.lifecycle)?,
        ))
    })
    .await?;
    let text = charge_text(&capacity.model, &flavors, &pools, &form).unwrap_or_default();
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(text))
}

async fn render_new(
    state: &web::Data<AppState>,
    who: &Authed,
    status: StatusCode,
    mut form: CreateForm,
    errors: Vec<FieldError>,
    general_error: Option<String>,
) -> Result<HttpResponse, AppError> {
    form.ci_password.clear();
    let virt_type = state.virt_type.as_ref().ok().copied();
    let (flavors, pools, networks, capacity, kickstarts, choices, guest) = lc(state, move |s| {
        Ok((
            s.store.flavors()?,
            s.hv.pools()?,
            s.hv.networks()?,
            lifecycle::capacity(s.hv.as_ref(), &s.store, &s.lifecycle)?,
            s.store.kickstarts()?,
            lifecycle::volume_choices(s.hv.as_ref(), &s.store, &s.lifecycle)?,
            virt_type
                .and_then(|v| s.hv.guest_capabilities(v).ok())
                .unwrap_or_default(),
        ))
    })
    .await?;
    Ok(html(
        status,
        &NewVmPage {
            chrome: Chrome::new(who, "vms"),
            form,
            errors,
            general_error,
            flavors,
            pools,
            networks,
            capacity,
            boot_dir: state.cfg.boot_dir.display().to_string(),
            kickstarts: kickstarts.into_iter().map(|k| k.name).collect(),
            kickstart_base_note: crate::web::kickstarts::base_url_may_be_unreachable(&state.cfg),
            choices,
            guest,
        },
    ))
}

pub async fn new_vm_page(
    state: web::Data<AppState>,
    who: Authed,
) -> Result<HttpResponse, AppError> {
    who.require(&state, Role::Operator, "vm.create", "").await?;
    let form = CreateForm {
        size_mode: "flavor".into(),
        flavor: "small".into(),
        disk_mode: "new".into(),
        pool: "default".into(),
        install: "cdrom".into(),
        nic_mode: "bridge".into(),
        bridge: "br0".into(),
        network: "default".into(),
        clock: "utc".into(),
        firmware: "bios".into(),
        cpu: "default".into(),
        ..Default::default()
    };
    render_new(&state, &who, StatusCode::OK, form, Vec::new(), None).await
}

pub async fn create_vm(
    http: actix_web::HttpRequest,
    state: web::Data<AppState>,
    who: Authed,
    form: web::Form<CreateForm>,
) -> Result<HttpResponse, AppError> {
    let form = form.into_inner();
    who.check_csrf(Some(&form.csrf))?;
    who.require(&state, Role::Operator, "vm.create", form.name.trim())
        .await?;
    let (mut req, mut errors) = form.to_request();
    req.kickstart_base_url = Some(crate::web::kickstarts::base_url(&http, &state));
    // Every field's problem in one round: what could not be read, what the create would
    // refuse, and whether the free units admit the size (at the size field).
    let checked = req.clone();
    let more = lc(&state, move |s| {
        lifecycle::check_create(
            s.hv.as_ref(),
            &s.store,
            &s.lifecycle,
            s.virt_type.clone(),
            &checked,
        )
    })
    .await?;
    for e in more {
        if !errors.iter().any(|have| have.field == e.field) {
            errors.push(e);
        }
    }
    if !errors.is_empty() {
        // Refused before anything was made: audited like a refused create.
        let _ = service::vms::refuse_create(
            &state.svc,
            &who.caller(),
            form.name.trim(),
            errors.clone(),
        )
        .await?;
        let errors = at_size_field(&form, errors);
        return render_new(
            &state,
            &who,
            StatusCode::UNPROCESSABLE_ENTITY,
            form,
            errors,
            None,
        )
        .await;
    }
    match service::vms::create(&state.svc, &who.caller(), req).await? {
        Ok(created) => Ok(super::super::flash::redirect(
            &who,
            &format!("/vms/{}", created.name),
            super::super::flash::Flash::notice(created_notice(&created)),
        )),
        Err(LifecycleError::Capacity(c)) => {
            // Admission is checked again when the VM is made (another create may have
            // taken the units meanwhile): shown at the size field too.
            let errors = at_size_field(
                &form,
                vec![FieldError {
                    field: "units",
                    message: c.to_string(),
                }],
            );
            let status = super::super::errors::ErrorKind::Conflict.status();
            render_new(&state, &who, status, form, errors, None).await
        }
        Err(LifecycleError::Invalid(errors)) => {
            let errors = at_size_field(&form, errors);
            render_new(
                &state,
                &who,
                StatusCode::UNPROCESSABLE_ENTITY,
                form,
                errors,
                None,
            )
            .await
        }
        Err(e @ LifecycleError::Failed { .. }) => {
            let status = super::super::errors::kind_of(&e).status();
            render_new(&state, &who, status, form, Vec::new(), Some(e.to_string())).await
        }
        Err(e) => Err(e.into()),
    }
}

// ---- detail ----

/// A form on the VM page that came back with errors, and what was typed into it.
#[derive(Default)]
pub(crate) struct FormState {
    /// resize, clone or snapshot.
    pub section: &'static str,
    /// A problem with the form as a whole (capacity, state, libvirt's refusal).
    pub message: Option<String>,
    pub errors: Vec<FieldError>,
    pub values: Vec<(&'static str, String)>,
}

#[derive(Template)]
#[template(path = "vm_detail.html")]
struct VmDetailPage {
    chrome: Chrome,
    vm: VmView,
    def: ParsedDomain,
    xml: String,
    actions: &'static [VmAction],
    can_operate: bool,
    message: Option<String>,
    snapshots: Vec<SnapshotInfo>,
    events: Vec<VmEvent>,
    history: Vec<AuditEntry>,
    flavors: Vec<FlavorRow>,
    form: FormState,
    /// When a shutdown was asked for and the VM still runs: since when, and whether the
    /// grace time is over (then force off is offered).
    shutdown_requested_at: Option<i64>,
    force_off_offer_at: i64,
    usage: super::super::usage::Charts,
    /// Set when the VM was provisioned from a cloud image with a cloud-init seed.
    cloud_init: Option<crate::store::cloud_init::CloudInitRow>,
    /// Set while the VM has a kickstart install whose URL has not ended.
    install: Option<KickstartInstall>,
    /// ISO images of the pools, for the CD-ROM drives.
    isos: Vec<String>,
    /// Guest addresses by NIC MAC (lower case).
    nic_addresses: std::collections::BTreeMap<String, Vec<String>>,
    /// What the "Add a disk" and "Add a network card" forms offer.
    attach: AttachChoices,
    /// The backup targets and the VM's last backups.
    backups: VmBackups,
    /// Its place in the host's start order.
    start_order: Option<crate::store::start_order::StartOrder>,
    /// The host's devices, for admins (passing one through).
    host_devices: Option<crate::lifecycle::attach::HostDevices>,
}

/// The VM page's Backups card.
struct VmBackups {
    targets: Vec<crate::lifecycle::backups::TargetView>,
    recent: Vec<crate::store::backups::BackupRow>,
}

/// The choices of the VM page's forms that add a disk or a NIC.
struct AttachChoices {
    /// Running pools: (name, GiB free, holds block volumes).
    pools: Vec<(String, u64, bool)>,
    /// Volumes no VM uses, which may become a disk: (path, name, GiB).
    free_volumes: Vec<(String, String, u64)>,
    /// `bridge:NAME` / `network:NAME` and what the list shows for it.
    attach_to: Vec<(String, String)>,
}

impl AttachChoices {
    fn read(s: &crate::service::Services) -> lifecycle::LcResult<Self> {
        let choices = lifecycle::volume_choices(s.hv.as_ref(), &s.store, &s.lifecycle)?;
        let pools = s.hv.pools()?;
        let networks = s.hv.networks()?;
        let mut free_volumes: Vec<(String, String, u64)> = pools
            .iter()
            .flat_map(|p| p.volumes.iter())
            .filter(|v| choices.disks.contains(&v.path))
            .map(|v| (v.path.clone(), v.name.clone(), v.capacity_gib()))
            .collect();
        free_volumes.sort();
        let mut attach_to: Vec<(String, String)> = networks
            .iter()
            .map(|n| {
                (
                    format!("network:{}", n.name),
                    format!("libvirt network {}", n.name),
                )
            })
            .collect();
        for n in networks.iter().filter(|n| n.forward_mode == "bridge") {
            if let Some(b) = &n.bridge {
                let key = format!("bridge:{b}");
                if !attach_to.iter().any(|(k, _)| k == &key) {
                    attach_to.push((key, format!("bridge {b}")));
                }
            }
        }
        Ok(AttachChoices {
            pools: pools
                .iter()
                .filter(|p| p.active)
                .map(|p| (p.name.clone(), p.available_gib(), p.is_block()))
                .collect(),
            free_volumes,
            attach_to,
        })
    }
}

/// A network install with a stored kickstart, as the VM page shows it (never its URL:
/// the token in it is the installer's credential).
struct KickstartInstall {
    kickstart: String,
    until: String,
    serving: bool,
}

impl VmDetailPage {
    fn field_error(&self, section: &str, field: &str) -> Option<&str> {
        (self.form.section == section)
            .then(|| {
                self.form
                    .errors
                    .iter()
                    .find(|e| e.field == field)
                    .map(|e| e.message.as_str())
            })
            .flatten()
    }

    fn form_error(&self, section: &str) -> Option<&str> {
        (self.form.section == section)
            .then_some(self.form.message.as_deref())
            .flatten()
    }

    /// The guest addresses libvirt knows on the NIC with `mac`, joined for the page.
    fn addresses_of(&self, mac: &Option<String>) -> String {
        mac.as_deref()
            .and_then(|m| self.nic_addresses.get(&m.to_ascii_lowercase()))
            .map(|a| a.join(", "))
            .unwrap_or_default()
    }

    /// The host device at `address`, as `product (vendor)`, if the host still has it.
    fn host_device_name(&self, address: &str) -> String {
        self.host_devices
            .as_ref()
            .and_then(|h| h.devices.iter().find(|d| d.device.address == address))
            .map(|d| format!("{} ({})", d.device.product, d.device.vendor))
            .unwrap_or_default()
    }

    /// The start-order form's field: as typed after a refusal, else the VM's place.
    fn start_order_value(&self, field: &str) -> String {
        if self.form.section == "start-order" {
            return self.value("start-order", field).to_string();
        }
        match (&self.start_order, field) {
            (Some(o), "position") => o.position.to_string(),
            (Some(o), _) => o.delay_seconds.to_string(),
            (None, "position") => String::new(),
            (None, _) => "0".into(),
        }
    }

    /// The cache modes the add-disk form offers besides the default.
    fn cache_modes(&self) -> Vec<String> {
        crate::domain::vm_attach::CacheMode::ALL[1..]
            .iter()
            .map(|c| c.as_str().to_string())
            .collect()
    }

    /// The add-disk form's value of `field`: as typed after a refusal, else `default`.
    fn disk_value<'a>(&'a self, field: &str, default: &'a str) -> &'a str {
        if self.form.section == "add-disk" {
            self.value("add-disk", field)
        } else {
            default
        }
    }

    /// Whether the VM has a disk (not a CD-ROM) that could grow.
    fn has_disks(&self) -> bool {
        self.def.disks.iter().any(|d| d.device == "disk")
    }

    /// Boot order and devices as the definition has them.
    fn devices(&self) -> crate::domain::vm_devices::DeviceOptions {
        use crate::domain::vm_devices::{read, BootDev, DeviceOptions};
        read(&self.xml, &self.def.boot_devs).unwrap_or(DeviceOptions {
            boot: vec![BootDev::Hd],
            boot_menu: false,
            watchdog: false,
            rng: false,
            balloon: true,
            serial_log: false,
        })
    }

    /// The three boot choices the form shows: as typed after a refusal, else the
    /// definition's ("" for none).
    fn boot_choices(&self) -> Vec<String> {
        let boot = self.devices().boot;
        ["boot1", "boot2", "boot3"]
            .iter()
            .enumerate()
            .map(|(i, field)| {
                if self.form.section == "devices" {
                    self.value("devices", field).to_string()
                } else {
                    boot.get(i)
                        .map(|d| d.as_str().to_string())
                        .unwrap_or_default()
                }
            })
            .collect()
    }

    /// The tags field: as typed after a refusal, else the VM's tags.
    fn tags_value(&self) -> String {
        if self.form.section == "labels" {
            return self.value("labels", "tags").to_string();
        }
        self.def.tags.join(", ")
    }

    /// The notes field: as typed after a refusal, else the VM's notes.
    fn notes_value(&self) -> &str {
        if self.form.section == "labels" {
            return self.value("labels", "notes");
        }
        &self.def.description
    }

    fn value(&self, section: &str, field: &str) -> &str {
        if self.form.section != section {
            return "";
        }
        self.form
            .values
            .iter()
            .find(|(k, _)| *k == field)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    fn when(&self, at: &i64) -> String {
        super::format_time(*at)
    }

    fn is_off(&self) -> bool {
        !self.vm.summary.state.is_active()
    }

    fn force_off_due(&self) -> bool {
        now() >= self.force_off_offer_at
    }
}

#[derive(Deserialize)]
pub struct DetailQuery {
    shutdown_at: Option<i64>,
}

pub async fn vm_page(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    q: web::Query<DetailQuery>,
) -> Result<HttpResponse, AppError> {
    let q = q.into_inner();
    // A one-time notice left by a form (post/redirect/get) comes first.
    let message = super::storage::notice_for(&who);
    render_detail(
        &state,
        &who,
        path.into_inner(),
        message,
        q.shutdown_at,
        FormState::default(),
        StatusCode::OK,
    )
    .await
}

/// The VM page, optionally with one of its forms showing errors.
pub(super) async fn render_detail(
    state: &web::Data<AppState>,
    who: &Authed,
    name: String,
    message: Option<String>,
    shutdown_at: Option<i64>,
    form: FormState,
    status: StatusCode,
) -> Result<HttpResponse, AppError> {
    let n = name.clone();
    let admin = who.role.allows(Role::Admin);
    let (detail, snapshots, history, flavors, install, isos, attach, host_devices, backups) =
        lc(state, move |s| {
            let detail = lifecycle::detail(s.hv.as_ref(), &s.store, &s.lifecycle, &n)?;
            let snapshots = lifecycle::snapshots(s.hv.as_ref(), &n).unwrap_or_else(|e| {
                tracing::warn!(vm = %n, error = %e, "cannot list snapshots");
                Vec::new()
            });
            let history = s.store.audit_for_target(&n, 15)?;
            let flavors = s.store.flavors()?;
            // Only a VM with a kickstart install in progress has a status.
            let install =
                crate::lifecycle::kickstart::status(s.hv.as_ref(), &s.store, &n, now()).ok();
            // ISO images a CD-ROM drive may take (not the VMs' cloud-init seeds).
            let seeds = s.store.seed_paths()?;
            let isos: Vec<String> =
                s.hv.pools()
                    .unwrap_or_default()
                    .into_iter()
                    .flat_map(|p| p.volumes)
                    .filter(|v| v.is_iso() && !seeds.contains(&v.path))
                    .map(|v| v.path)
                    .collect();
            let attach = AttachChoices::read(s)?;
            let backups = VmBackups {
                targets: crate::lifecycle::backups::targets(s.hv.as_ref(), &s.store)?,
                recent: s.store.backups(Some(&n))?.into_iter().take(5).collect(),
            };
            // Host devices are the admins' (listing them asks libvirt for every node device).
            let host_devices = admin
                .then(|| crate::lifecycle::attach::host_devices(s.hv.as_ref(), &n))
                .transpose()
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "cannot list the host's devices");
                    None
                });
            Ok((
                detail,
                snapshots,
                history,
                flavors,
                install,
                isos,
                attach,
                host_devices,
                backups,
            ))
        })
        .await?;
    let lifecycle::VmDetail {
        vm,
        devices: def,
        nic_addresses,
        start_order,
        xml,
        cloud_init,
    } = detail;
    let running = vm.summary.state == VmState::Running;
    let shutdown_requested_at = shutdown_at.filter(|_| running);
    Ok(html(
        status,
        &VmDetailPage {
            chrome: Chrome::new(who, "vms"),
            actions: VmAction::available_in(vm.summary.state),
            can_operate: who.role.allows(Role::Operator),
            events: state.live.recent_for(&name, 10),
            force_off_offer_at: shutdown_requested_at.unwrap_or(0) + lifecycle::SHUTDOWN_GRACE_SECS,
            shutdown_requested_at,
            vm,
            def,
            xml,
            message,
            snapshots,
            history,
            flavors,
            form,
            usage: super::super::usage::vm_charts(state, &name),
            cloud_init,
            isos,
            nic_addresses,
            attach,
            host_devices,
            start_order,
            backups,
            install: install.map(|i| KickstartInstall {
                until: super::format_time(i.expires_at),
                kickstart: i.kickstart,
                serving: i.install_running,
            }),
        },
    ))
}

#[derive(Deserialize)]
pub struct ActionForm {
    csrf: Option<String>,
    /// Set by the VM list's per-row buttons: the list page to come back to.
    back: Option<String>,
}

/// The VM list page an action from the list returns to, with its notice shown once; only
/// a page of the list itself is taken (never another site or page).
fn back_to_list(who: &Authed, back: &str, message: String) -> Option<HttpResponse> {
    let rest = back.strip_prefix("/vms")?;
    // A path of the list, in plain characters (no spaces, line breaks or other sites).
    if !(rest.is_empty() || rest.starts_with('?')) || !back.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    Some(super::super::flash::redirect(
        who,
        back,
        super::super::flash::Flash::notice(message),
    ))
}

/// A redirect to the VM page of `name` that shows `message` there once.
pub(super) fn back_to(who: &Authed, name: &str, message: &str) -> HttpResponse {
    super::storage::see_other(who, &format!("/vms/{name}"), message)
}

pub async fn vm_action(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<(String, String)>,
    form: web::Form<ActionForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let (name, action) = path.into_inner();
    let action =
        VmAction::parse(&action).ok_or_else(|| AppError::not_found("There is no such action."))?;
    let result = service::vms::act(&state.svc, &who.caller(), &name, action)
        .await?
        .map_err(AppError::from);
    if let Some(back) = form.back.as_deref() {
        let message = match &result {
            Ok(()) if action == VmAction::Shutdown => {
                format!("Shutdown of {name} requested: the guest decides when to stop.")
            }
            Ok(()) => format!("{}: done for {name}.", action.label()),
            Err(e)
                if e.kind != super::super::errors::ErrorKind::Forbidden
                    && e.kind != super::super::errors::ErrorKind::NotFound =>
            {
                format!("{name}: {}", e.message)
            }
            Err(_) => String::new(),
        };
        if !message.is_empty() {
            if let Some(r) = back_to_list(&who, back, message) {
                return Ok(r);
            }
        }
    }
    match result {
        Ok(()) if action == VmAction::Shutdown => Ok(super::storage::see_other(
            &who,
            &format!("/vms/{name}?shutdown_at={}", now()),
            "Shutdown requested: the guest decides when to stop.",
        )),
        Ok(()) => Ok(back_to(&who, &name, &format!("{}: done.", action.label()))),
        Err(e)
            if e.kind != super::super::errors::ErrorKind::Forbidden
                && e.kind != super::super::errors::ErrorKind::NotFound =>
        {
            Ok(back_to(&who, &name, &e.message))
        }
        Err(e) => Err(e),
    }
}

#[derive(Deserialize)]
pub struct AutostartForm {
    csrf: Option<String>,
    on: Option<String>,
}

pub async fn vm_autostart(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    form: web::Form<AutostartForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let name = path.into_inner();
    let on = form.on.as_deref() == Some("1");
    service::vms::set_autostart(&state.svc, &who.caller(), &name, on).await??;
    Ok(back_to(
        &who,
        &name,
        if on {
            "Autostart is on."
        } else {
            "Autostart is off."
        },
    ))
}

// ---- delete ----

#[derive(Template)]
#[template(path = "vm_delete.html")]
struct DeletePage {
    chrome: Chrome,
    name: String,
    state: VmState,
    /// What "delete its volumes" deletes and keeps for this user; the seed is deleted
    /// whatever is chosen.
    volumes: lifecycle::VolumesOnDelete,
}

pub async fn delete_page(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let name = path.into_inner();
    who.require(&state, Role::Operator, "vm.delete", &name)
        .await?;
    let n = name.clone();
    let may_delete_any = who.role.allows(Role::Admin);
    let (vm_state, volumes) = lc(&state, move |s| {
        let vm =
            s.hv.list_vms()?
                .into_iter()
                .find(|v| v.name == n)
                .ok_or_else(|| LifecycleError::NotFound(format!("There is no VM named {n}.")))?;
        Ok((
            vm.state,
            lifecycle::volumes_on_delete(s.hv.as_ref(), &s.store, &n, may_delete_any)?,
        ))
    })
    .await?;
    Ok(html(
        StatusCode::OK,
        &DeletePage {
            chrome: Chrome::new(&who, "vms"),
            name,
            state: vm_state,
            volumes,
        },
    ))
}

#[derive(Deserialize)]
pub struct DeleteForm {
    csrf: Option<String>,
    delete_volumes: Option<String>,
}

/// Deletes and audits; shared by the page and the API.
pub async fn delete_vm(
    state: web::Data<AppState>,
    who: Authed,
    path: web::Path<String>,
    form: web::Form<DeleteForm>,
) -> Result<HttpResponse, AppError> {
    who.check_csrf(form.csrf.as_deref())?;
    let name = path.into_inner();
    let d = service::vms::delete(
        &state.svc,
        &who.caller(),
        &name,
        form.delete_volumes.is_some(),
    )
    .await??;
    Ok(super::super::flash::redirect(
        &who,
        "/vms",
        super::super::flash::Flash::notice(deleted_notice(&name, &d)),
    ))
}

/// What the VM list says once after a delete.
fn deleted_notice(name: &str, d: &lifecycle::Deleted) -> String {
    let mut s = format!(
        "Deleted VM {name}; {} released.",
        super::units_text(d.units_released)
    );
    if !d.volumes_deleted.is_empty() {
        s.push_str(&format!(
            " Volumes deleted: {}.",
            d.volumes_deleted.join(", ")
        ));
    }
    if !d.volumes_kept.is_empty() {
        let kept: Vec<&str> = d.volumes_kept.iter().map(|k| k.path.as_str()).collect();
        s.push_str(&format!(" Volumes kept: {}.", kept.join(", ")));
    }
    s
}

/// What the VM page says once after a create.
fn created_notice(c: &lifecycle::Created) -> String {
    format!(
        "Created VM {}: {}, {} vCPUs, {} MiB memory{}.",
        c.name,
        super::units_text(c.units),
        c.vcpus,
        c.memory_mib,
        if c.started {
            "; it is starting"
        } else {
            "; it is defined, not started"
        }
    )
}

/// Units and admission problems are shown at the size field the form uses.
fn at_size_field(form: &CreateForm, errors: Vec<FieldError>) -> Vec<FieldError> {
    let size_field = form.size_field();
    errors
        .into_iter()
        .map(|mut e| {
            if e.field == "units" {
                e.field = size_field;
            }
            e
        })
        .collect()
}
