//! Tags and notes of a VM, written into its own definition (`domain::vm_labels`): both
//! change or neither does.

use super::{LcResult, LifecycleError};
use crate::domain::vm_labels::{self, Labels};
use crate::hypervisor::Hypervisor;
use serde::Serialize;

/// What a VM carries after the change.
#[derive(Debug, Clone, Serialize)]
pub struct Labelled {
    pub tags: Vec<String>,
    pub notes: String,
}

/// Sets `tags` and `notes` (either left as they are when `None`). The tags are written
/// first; when the notes then fail, the tags are put back.
pub fn set_labels(
    hv: &dyn Hypervisor,
    name: &str,
    tags: Option<Vec<String>>,
    notes: Option<String>,
) -> LcResult<Labelled> {
    let (_, before) = super::devices::definition(hv, name)?;
    let wanted_tags = tags.clone().unwrap_or_else(|| before.tags.clone());
    let wanted_notes = notes.clone().unwrap_or_else(|| before.description.clone());
    let Labels { tags, notes } =
        vm_labels::check(&wanted_tags, &wanted_notes).map_err(LifecycleError::Invalid)?;
    let tags_change = tags != before.tags;
    if tags_change {
        hv.set_vm_metadata(name, vm_labels::metadata_xml(&tags).as_deref())?;
    }
    if notes != before.description {
        if let Err(e) = hv.set_description(name, &notes) {
            if tags_change {
                if let Err(undo) =
                    hv.set_vm_metadata(name, vm_labels::metadata_xml(&before.tags).as_deref())
                {
                    tracing::error!(vm = name, error = %undo, "the VM's earlier tags could not be put back");
                }
            }
            return Err(e.into());
        }
    }
    Ok(Labelled { tags, notes })
}

/// Adds `tag` to the VM's tags (a bulk "tag" action); the notes stay.
pub fn add_tag(hv: &dyn Hypervisor, name: &str, tag: &str) -> LcResult<Labelled> {
    let (_, current) = super::devices::definition(hv, name)?;
    let mut tags = current.tags;
    tags.push(tag.to_string());
    set_labels(hv, name, Some(tags), None)
}
