//! VM snapshots: validated names, the XML that asks libvirt for one, and reading back
//! what libvirt reports.

use quick_xml::events::BytesText;
use quick_xml::Writer;
use serde::{Deserialize, Serialize};

/// A validated snapshot name: 1–64 characters, letters, digits, '.', '_' and '-',
/// starting with a letter or digit (safe in URLs and as a qcow2 snapshot tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotNameError {
    #[error("Enter a snapshot name.")]
    Empty,
    #[error("Use at most 64 characters for the snapshot name.")]
    TooLong,
    #[error("Use only letters, digits, '.', '_' and '-', starting with a letter or digit.")]
    Characters,
}

impl SnapshotName {
    pub fn parse(s: &str) -> Result<SnapshotName, SnapshotNameError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(SnapshotNameError::Empty);
        }
        if s.len() > 64 {
            return Err(SnapshotNameError::TooLong);
        }
        let first_ok = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        if !first_ok
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(SnapshotNameError::Characters);
        }
        Ok(SnapshotName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Longest description kept with a snapshot, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 500;

/// `<domainsnapshot>` asking for a snapshot with this name and description.
pub fn snapshot_xml(name: &SnapshotName, description: &str) -> String {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    w.create_element("domainsnapshot")
        .write_inner_content(|w| {
            w.create_element("name")
                .write_text_content(BytesText::new(name.as_str()))?;
            if !description.trim().is_empty() {
                w.create_element("description")
                    .write_text_content(BytesText::new(description.trim()))?;
            }
            Ok::<(), std::io::Error>(())
        })
        .expect("writing XML into a Vec cannot fail");
    String::from_utf8(w.into_inner()).expect("quick-xml writes UTF-8")
}

/// A snapshot as libvirt describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SnapshotInfo {
    pub name: String,
    pub description: String,
    /// Seconds since the Unix epoch.
    pub created_at: i64,
    /// The VM's state when the snapshot was taken (`running`, `shutoff`, …).
    pub vm_state: String,
    pub parent: Option<String>,
    /// Whether this is the snapshot the VM was last reverted to or taken from.
    pub current: bool,
}

#[derive(Deserialize)]
struct SnapshotXml {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(rename = "creationTime", default)]
    creation_time: Option<i64>,
    #[serde(default)]
    parent: Option<ParentXml>,
}

#[derive(Deserialize)]
struct ParentXml {
    name: String,
}

/// Reads the parts of `<domainsnapshot>` XML that the pages show.
pub fn parse_snapshot(xml: &str, current: bool) -> Result<SnapshotInfo, String> {
    let s: SnapshotXml = quick_xml::de::from_str(xml).map_err(|e| e.to_string())?;
    Ok(SnapshotInfo {
        name: s.name,
        description: s.description.unwrap_or_default(),
        created_at: s.creation_time.unwrap_or(0),
        vm_state: s.state.unwrap_or_default(),
        parent: s.parent.map(|p| p.name),
        current,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rules() {
        assert!(SnapshotName::parse("before-upgrade.1").is_ok());
        assert_eq!(SnapshotName::parse("  "), Err(SnapshotNameError::Empty));
        assert_eq!(
            SnapshotName::parse("-x"),
            Err(SnapshotNameError::Characters)
        );
        assert_eq!(
            SnapshotName::parse("a b"),
            Err(SnapshotNameError::Characters)
        );
        assert_eq!(
            SnapshotName::parse(&"a".repeat(65)),
            Err(SnapshotNameError::TooLong)
        );
    }

    #[test]
    fn snapshot_xml_escapes_the_description() {
        let name = SnapshotName::parse("s1").unwrap();
        let xml = snapshot_xml(&name, "a <b> & \"c\"");
        assert!(xml.contains("<name>s1</name>"));
        assert!(xml.contains("a &lt;b&gt; &amp;"));
        let back = parse_snapshot(&xml, false).unwrap();
        assert_eq!(back.description, "a <b> & \"c\"");
        assert!(!snapshot_xml(&name, "  ").contains("description"));
    }

    #[test]
    fn reads_libvirt_snapshot_xml() {
        let xml = r#"<domainsnapshot>
  <name>before-upgrade</name>
  <description>kernel 6.1</description>
  <state>running</state>
  <parent><name>base</name></parent>
  <creationTime>1763700000</creationTime>
  <memory snapshot='internal'/>
  <domain type='qemu'><name>web01</name></domain>
</domainsnapshot>"#;
        let s = parse_snapshot(xml, true).unwrap();
        assert_eq!(s.name, "before-upgrade");
        assert_eq!(s.description, "kernel 6.1");
        assert_eq!(s.vm_state, "running");
        assert_eq!(s.parent.as_deref(), Some("base"));
        assert_eq!(s.created_at, 1763700000);
        assert!(s.current);
    }
}
