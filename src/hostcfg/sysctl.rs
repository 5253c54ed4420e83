//! Plans for kernel settings: virtdeck's file in /etc/sysctl.d and live writes to
//! /proc/sys, with the same apply → confirm or roll back flow as the network.

use super::{ChangeError, ChangeKind, Engine, Managed, Plan, PlanParts};
use crate::adapters::sysctl_io::{self, Probe};
use crate::domain::hostnet::field_error;
use crate::domain::hostnet::plan::LiveOp;
use crate::domain::sysctl::{missing_key_message, render_file, SysctlChange, SysctlForm};

/// A kernel setting as shown on the page.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct SettingView {
    pub key: String,
    pub explain: String,
    /// The recommended value (curated settings only).
    pub recommended: Option<String>,
    /// The value virtdeck persists, when it manages the key.
    pub managed: Option<String>,
    /// The live value; `None` when the key does not exist here.
    pub current: Option<String>,
    pub read_only: bool,
}

impl Engine {
    /// The curated settings and every key virtdeck manages, with live values.
    pub fn sysctl_view(&self) -> Result<Vec<SettingView>, ChangeError> {
        let managed = self.managed()?.sysctl;
        let mut keys: Vec<String> = crate::domain::sysctl::CATALOG
            .iter()
            .map(|s| s.key.to_string())
            .collect();
        for k in managed.keys() {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
        let probes =
            sysctl_io::probe(self.settings.netns.as_deref(), keys).map_err(ChangeError::Io)?;
        Ok(probes
            .into_iter()
            .map(|(key, p)| {
                let c = crate::domain::sysctl::catalog_entry(&key);
                let (current, read_only) = match p {
                    Probe::Writable(v) => (Some(v), false),
                    Probe::ReadOnly(v) => (Some(v), true),
                    Probe::Missing => (None, false),
                };
                SettingView {
                    explain: c.map(|c| c.explain.to_string()).unwrap_or_default(),
                    recommended: c.map(|c| c.wanted.to_string()),
                    managed: managed.get(&key).cloned(),
                    current,
                    read_only,
                    key,
                }
            })
            .collect())
    }

    /// Builds the plan for a kernel settings form.
    pub fn plan_sysctl(&self, form: &SysctlForm, actor: &str) -> Result<Plan, ChangeError> {
        let change = form.to_change().map_err(ChangeError::Invalid)?;
        let managed = self.managed()?;
        let mut next = managed.sysctl.clone();
        let mut ops = Vec::new();
        let mut notes = Vec::new();
        let mut keys = Vec::new();
        let title;
        match change {
            SysctlChange::Set(pairs) => {
                let many = pairs.len() > 1;
                title = if many {
                    "recommended kernel settings".to_string()
                } else {
                    pairs
                        .first()
                        .map(|(k, v)| format!("{k} = {v}"))
                        .unwrap_or_default()
                };
                let probes = sysctl_io::probe(
                    self.settings.netns.as_deref(),
                    pairs.iter().map(|(k, _)| k.clone()).collect(),
                )
                .map_err(ChangeError::Io)?;
                for ((key, value), (_, probe)) in pairs.into_iter().zip(probes) {
                    match probe {
                        Probe::Missing if many => {
                            notes.push(format!("Skipped: {}", missing_key_message(&key)))
                        }
                        Probe::Missing => {
                            return Err(ChangeError::Invalid(vec![field_error(
                                "key",
                                missing_key_message(&key),
                            )]))
                        }
                        Probe::ReadOnly(_) if many => {
                            notes.push(format!("Skipped: {key} is read-only on this host."))
                        }
                        Probe::ReadOnly(_) => {
                            return Err(ChangeError::Invalid(vec![field_error(
                                "key",
                                format!(
                                    "{key} is read-only: the kernel does not let it be changed."
                                ),
                            )]))
                        }
                        Probe::Writable(current) => {
                            if current != value {
                                ops.push(LiveOp::SetSysctl {
                                    key: key.clone(),
                                    value: value.clone(),
                                    previous: current,
                                });
                            }
                            keys.push(key.clone());
                            next.insert(key, value);
                        }
                    }
                }
            }
            SysctlChange::Remove(key) => {
                if next.remove(&key).is_none() {
                    return Err(ChangeError::Invalid(vec![field_error(
                        "key",
                        format!("virtdeck does not manage {key}."),
                    )]));
                }
                notes.push(format!(
                    "{key} keeps its current value until the next boot, when the kernel's default applies."
                ));
                title = format!("stop managing {key}");
            }
        }
        let files = self.file_changes(&render_file(&managed.sysctl), &render_file(&next))?;
        if files.is_empty() && ops.is_empty() {
            return Err(ChangeError::Invalid(vec![field_error(
                "value",
                "The host is set up like this already; there is nothing to change.",
            )]));
        }
        self.plan_custom(
            PlanParts {
                kind: ChangeKind::Sysctl,
                title,
                files,
                ops,
                keys,
                next: Managed {
                    sysctl: next,
                    ..managed
                },
                notes,
            },
            actor,
        )
    }
}
