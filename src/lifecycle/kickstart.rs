//! Kickstarts: named files in the store, and serving one to a VM's installer at a
//! per-VM URL that works only while that VM's install boot runs.

use super::{FieldError, LcResult, LifecycleError};
use crate::auth::secret::{random_token, sha256_hex};
use crate::domain::kickstart as ks;
use crate::hypervisor::Hypervisor;
use crate::store::kickstarts::{KickstartRow, VmKickstartRow};
use crate::store::{Store, StoreError};
use serde::{Deserialize, Serialize};

pub use crate::config::InstallConfig;

/// A kickstart as the API and the pages take it.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KickstartRequest {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub content: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> LifecycleError {
    LifecycleError::Invalid(vec![FieldError {
        field,
        message: message.into(),
    }])
}

fn checked(req: &KickstartRequest) -> LcResult<String> {
    let name = ks::check_name(&req.name).map_err(|e| invalid("name", e.to_string()));
    let content = ks::check_content(&req.content).map_err(|e| invalid("content", e.to_string()));
    match (name, content) {
        (Ok(n), Ok(())) => Ok(n.to_string()),
        (Err(LifecycleError::Invalid(mut a)), Err(LifecycleError::Invalid(b))) => {
            a.extend(b);
            Err(LifecycleError::Invalid(a))
        }
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

fn checked_row(req: &KickstartRequest, actor: &str, now: i64) -> LcResult<(String, KickstartRow)> {
    let name = checked(req)?;
    let row = KickstartRow {
        name: name.clone(),
        content: req.content.clone(),
        updated_at: now,
        updated_by: actor.to_string(),
    };
    Ok((name, row))
}

/// Adds a new kickstart.
pub fn create(
    store: &Store,
    req: &KickstartRequest,
    actor: &str,
    now: i64,
) -> LcResult<KickstartRow> {
    let (name, row) = checked_row(req, actor, now)?;
    match store.insert_kickstart(&row) {
        Ok(()) => Ok(row),
        Err(StoreError::Duplicate(_)) => Err(invalid(
            "name",
            format!("There is already a kickstart named {name}."),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Replaces a kickstart's content (the name in `req` is the one in the path).
pub fn update(
    store: &Store,
    req: &KickstartRequest,
    actor: &str,
    now: i64,
) -> LcResult<KickstartRow> {
    let (name, row) = checked_row(req, actor, now)?;
    if store.update_kickstart(&row)? {
        Ok(row)
    } else {
        Err(LifecycleError::NotFound(format!(
            "There is no kickstart named {name}."
        )))
    }
}

/// Deletes a kickstart, unless a VM's install is using it right now.
pub fn delete(hv: &dyn Hypervisor, store: &Store, name: &str, now: i64) -> LcResult<()> {
    if store.kickstart(name)?.is_none() {
        return Err(LifecycleError::NotFound(format!(
            "There is no kickstart named {name}."
        )));
    }
    let users = store.vm_kickstarts_using(name, now)?;
    if !users.is_empty() {
        let mut installing = Vec::new();
        for vm in users {
            let live = hv.live_domain_xml(&vm)?;
            if live.is_some_and(|x| ks::install_boot_token(&x, &vm).is_some()) {
                installing.push(vm);
            }
        }
        if !installing.is_empty() {
            return Err(LifecycleError::Conflict(format!(
                "Kickstart {name} is in use by the running install of VM {}; delete it when the install has finished.",
                installing.join(", VM ")
            )));
        }
    }
    store.delete_kickstart(name)?;
    Ok(())
}

/// Mints a VM's kickstart token and returns the installer's kernel arguments with the
/// kickstart URL in them. The token row goes when the VM's row does.
pub fn prepare(
    store: &Store,
    cfg: &InstallConfig,
    vm: &str,
    kickstart: &str,
    base_url: &str,
    kernel_args: &str,
    now: i64,
) -> Result<String, String> {
    let token = random_token();
    let row = VmKickstartRow {
        vm: vm.to_string(),
        kickstart: kickstart.to_string(),
        expires_at: now.saturating_add(cfg.kickstart_max_lifetime_seconds as i64),
    };
    store
        .insert_vm_kickstart(&row, &sha256_hex(&token))
        .map_err(|e| format!("the kickstart URL could not be recorded: {e}"))?;
    let url = ks::kickstart_url(base_url, &token);
    Ok(ks::with_kickstart_arg(
        kernel_args,
        cfg.kickstart_argument,
        &url,
    ))
}

/// What a kickstart fetch got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetch {
    Served {
        vm: String,
        kickstart: String,
        content: String,
    },
    /// Refused; `vm` when the token was known, and why (for the audit log only).
    Refused { vm: Option<String>, why: String },
}

/// Serves a kickstart for a token, if its VM is in its install boot and the token has
/// not expired. A token found ended is removed, so it never works again.
pub fn fetch(hv: &dyn Hypervisor, store: &Store, token: &str, now: i64) -> LcResult<Fetch> {
    let Some(row) = store.vm_kickstart_by_token(&sha256_hex(token))? else {
        return Ok(Fetch::Refused {
            vm: None,
            why: "unknown token".into(),
        });
    };
    let refused = |why: &str| -> LcResult<Fetch> {
        store.end_vm_kickstart(&row.vm)?;
        Ok(Fetch::Refused {
            vm: Some(row.vm.clone()),
            why: why.to_string(),
        })
    };
    if now >= row.expires_at {
        return refused("the kickstart URL has expired");
    }
    let live = hv.live_domain_xml(&row.vm)?;
    if !live.is_some_and(|x| ks::install_boot_running(&x, &row.vm, token)) {
        return refused("the VM's install boot is not running");
    }
    match store.kickstart(&row.kickstart)? {
        Some(k) => Ok(Fetch::Served {
            vm: row.vm,
            kickstart: k.name,
            content: k.content,
        }),
        None => Ok(Fetch::Refused {
            vm: Some(row.vm),
            why: format!("kickstart {} no longer exists", row.kickstart),
        }),
    }
}

/// A network install's kickstart, checked at plan time.
#[derive(Debug, Clone)]
pub struct KickstartPlan {
    pub name: String,
    pub base_url: String,
    pub cfg: InstallConfig,
    pub now: i64,
}

impl KickstartPlan {
    /// The installer's kernel arguments with this VM's kickstart URL.
    pub fn kernel_args(
        &self,
        store: &Store,
        vm: &str,
        kernel_args: &str,
    ) -> Result<String, String> {
        prepare(
            store,
            &self.cfg,
            vm,
            &self.name,
            &self.base_url,
            kernel_args,
            self.now,
        )
    }
}

/// Checks a create's kickstart choice: it must exist, and there must be a base URL.
pub fn plan(
    store: &Store,
    cfg: &InstallConfig,
    kickstart: Option<&str>,
    request_base_url: Option<&str>,
    now: i64,
) -> LcResult<Option<KickstartPlan>> {
    let Some(name) = kickstart.map(str::trim).filter(|k| !k.is_empty()) else {
        return Ok(None);
    };
    if store.kickstart(name)?.is_none() {
        return Err(invalid(
            "kickstart",
            format!("There is no kickstart named {name}: choose one from the list."),
        ));
    }
    let base_url = cfg
        .kickstart_base_url
        .as_deref()
        .or(request_base_url)
        .ok_or_else(|| {
            invalid(
                "kickstart",
                "Set [install] kickstart_base_url to an address the guest can reach.",
            )
        })?;
    Ok(Some(KickstartPlan {
        name: name.to_string(),
        base_url: base_url.to_string(),
        cfg: cfg.clone(),
        now,
    }))
}

/// A VM's install with a kickstart, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct InstallStatus {
    pub vm: String,
    pub kickstart: String,
    pub expires_at: i64,
    /// Whether the install boot runs and its kickstart URL works.
    pub install_running: bool,
    /// The running installer's kernel command line. Its kickstart URL carries the
    /// installer's token: the web layer shows it to admins only.
    pub kernel_cmdline: Option<String>,
}

/// The kickstart of a VM's install, while its URL has not ended.
pub fn status(hv: &dyn Hypervisor, store: &Store, vm: &str, now: i64) -> LcResult<InstallStatus> {
    let none =
        || LifecycleError::NotFound(format!("VM {vm} has no kickstart install in progress."));
    let row = store.vm_kickstart(vm)?.ok_or_else(none)?;
    let live = hv.live_domain_xml(vm)?;
    let kernel_cmdline = live.as_deref().and_then(|x| ks::running_cmdline(x, vm));
    let install_running = now < row.expires_at
        && live
            .as_deref()
            .is_some_and(|x| ks::install_boot_token(x, vm).is_some());
    Ok(InstallStatus {
        vm: row.vm,
        kickstart: row.kickstart,
        expires_at: row.expires_at,
        install_running,
        kernel_cmdline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::kickstart::KsArgument;

    #[test]
    fn install_settings_are_checked() {
        assert_eq!(InstallConfig::default().problem(), None);
        let zero = InstallConfig {
            kickstart_max_lifetime_seconds: 0,
            ..Default::default()
        };
        assert_eq!(
            zero.problem().map(|p| p.0),
            Some("install.kickstart_max_lifetime_seconds")
        );
        let bad_base = InstallConfig {
            kickstart_base_url: Some("192.168.122.1:9443".into()),
            ..Default::default()
        };
        assert_eq!(
            bad_base.problem().map(|p| p.0),
            Some("install.kickstart_base_url")
        );
        let ok: InstallConfig = toml::from_str(
            "kickstart_base_url = \"http://192.168.122.1:9443\"\nkickstart_argument = \"ks\"",
        )
        .unwrap();
        assert_eq!(ok.problem(), None);
        assert_eq!(ok.kickstart_argument, KsArgument::Ks);
    }
}
