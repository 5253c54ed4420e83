//! Kernel settings that matter on a hypervisor: a curated catalog with the values we
//! recommend, key/value validation, and virtdeck's one file in /etc/sysctl.d.

use super::hostnet::render::RenderedFile;
use super::hostnet::{field_error, FieldError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const SYSCTL_FILE: &str = "etc/sysctl.d/90-virtdeck.conf";

/// One curated setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Setting {
    pub key: &'static str,
    pub wanted: &'static str,
    pub explain: &'static str,
}

pub const CATALOG: &[Setting] = &[
    Setting {
        key: "net.bridge.bridge-nf-call-iptables",
        wanted: "0",
        explain: "Guest traffic crossing a bridge skips the host's iptables rules. Exists only while the br_netfilter module is loaded.",
    },
    Setting {
        key: "net.bridge.bridge-nf-call-ip6tables",
        wanted: "0",
        explain: "The same for ip6tables. Exists only while br_netfilter is loaded.",
    },
    Setting {
        key: "net.bridge.bridge-nf-call-arptables",
        wanted: "0",
        explain: "The same for arptables. Exists only while br_netfilter is loaded.",
    },
    Setting {
        key: "net.ipv4.ip_forward",
        wanted: "1",
        explain: "The host routes IPv4 between interfaces; libvirt NAT networks need it.",
    },
    Setting {
        key: "net.ipv6.conf.all.forwarding",
        wanted: "1",
        explain: "The host routes IPv6 between interfaces (routed libvirt networks).",
    },
    Setting {
        key: "vm.swappiness",
        wanted: "10",
        explain: "Prefer keeping guest memory in RAM over swapping it out.",
    },
    Setting {
        key: "kernel.panic",
        wanted: "10",
        explain: "Reboot 10 seconds after a kernel panic instead of hanging.",
    },
    Setting {
        key: "kernel.panic_on_oops",
        wanted: "1",
        explain: "Treat a kernel oops as a panic, so the host reboots rather than limps on.",
    },
    Setting {
        key: "fs.aio-max-nr",
        wanted: "1048576",
        explain: "Room for the asynchronous I/O that QEMU disks with aio=native use.",
    },
    Setting {
        key: "net.core.somaxconn",
        wanted: "4096",
        explain: "A longer listen queue for busy services on the host.",
    },
];

pub fn catalog_entry(key: &str) -> Option<&'static Setting> {
    CATALOG.iter().find(|s| s.key == key)
}

/// A dotted key like `net.ipv4.ip_forward`.
pub fn validate_key(key: &str) -> Result<String, FieldError> {
    let k = key.trim().replace('/', ".");
    let parts: Vec<&str> = k.split('.').collect();
    if k.is_empty() {
        return Err(field_error("key", "Enter a setting, e.g. vm.swappiness."));
    }
    if k.len() > 200
        || parts.len() < 2
        || parts.iter().any(|p| {
            p.is_empty()
                || !p
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        })
    {
        return Err(field_error(
            "key",
            format!(
                "\"{}\" is not a kernel setting name (like vm.swappiness).",
                key.trim()
            ),
        ));
    }
    Ok(k)
}

/// A value: printable, one line, at most 256 characters; whitespace runs become one space.
pub fn validate_value(value: &str) -> Result<String, FieldError> {
    let v = value.split_whitespace().collect::<Vec<_>>().join(" ");
    if v.is_empty() {
        return Err(field_error("value", "Enter a value."));
    }
    if v.len() > 256 || v.chars().any(|c| c.is_control() || c == '#' || c == ';') {
        return Err(field_error(
            "value",
            "A value is one line of at most 256 characters without '#' or ';'.",
        ));
    }
    Ok(v)
}

/// virtdeck's file in /etc/sysctl.d for these settings (none when there are none).
pub fn render_file(settings: &BTreeMap<String, String>) -> Vec<RenderedFile> {
    if settings.is_empty() {
        return Vec::new();
    }
    let mut s = String::from(
        "# Managed by virtdeck: the next kernel settings change from virtdeck replaces this file.\n",
    );
    for (k, v) in settings {
        if let Some(c) = catalog_entry(k) {
            s.push_str(&format!("# {}\n", c.explain));
        }
        s.push_str(&format!("{k} = {v}\n"));
    }
    vec![RenderedFile {
        path: SYSCTL_FILE.into(),
        content: s,
        mode: 0o644,
    }]
}

/// What an admin asks for on the kernel settings page.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SysctlForm {
    /// set, remove or recommended.
    pub action: String,
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SysctlChange {
    Set(Vec<(String, String)>),
    /// Stop managing the key (its live value stays).
    Remove(String),
}

impl SysctlForm {
    pub fn to_change(&self) -> Result<SysctlChange, Vec<FieldError>> {
        match self.action.trim() {
            "" | "set" => {
                let key = validate_key(&self.key);
                let value = validate_value(&self.value);
                match (key, value) {
                    (Ok(k), Ok(v)) => Ok(SysctlChange::Set(vec![(k, v)])),
                    (k, v) => Err([k.err(), v.err()].into_iter().flatten().collect()),
                }
            }
            "remove" => validate_key(&self.key)
                .map(SysctlChange::Remove)
                .map_err(|e| vec![e]),
            "recommended" => Ok(SysctlChange::Set(
                CATALOG
                    .iter()
                    .map(|s| (s.key.to_string(), s.wanted.to_string()))
                    .collect(),
            )),
            other => Err(vec![field_error(
                "action",
                format!("\"{other}\" is not set, remove or recommended."),
            )]),
        }
    }
}

/// Why a key cannot be set on this host.
pub fn missing_key_message(key: &str) -> String {
    if key.starts_with("net.bridge.") {
        format!("There is no setting {key} on this host: load the br_netfilter module first (modprobe br_netfilter).")
    } else {
        format!("There is no setting {key} on this host.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values() {
        assert_eq!(
            validate_key(" net.ipv4.ip_forward ").unwrap(),
            "net.ipv4.ip_forward"
        );
        assert_eq!(
            validate_key("net/ipv4/ip_forward").unwrap(),
            "net.ipv4.ip_forward"
        );
        assert!(validate_key("../../etc/passwd").is_err());
        assert!(validate_key("swappiness").is_err());
        assert!(validate_key("vm..x").is_err());
        assert!(validate_key("").is_err());
        assert_eq!(
            validate_value(" 4096\t87380  6291456 ").unwrap(),
            "4096 87380 6291456"
        );
        assert!(validate_value("1\n2").is_ok(), "newlines become spaces");
        assert!(validate_value("1 # comment").is_err());
        assert!(validate_value("").is_err());
    }

    #[test]
    fn the_file_lists_settings_with_explanations() {
        let mut m = BTreeMap::new();
        m.insert("vm.swappiness".to_string(), "10".to_string());
        m.insert("net.ipv4.ip_forward".to_string(), "1".to_string());
        let f = render_file(&m);
        assert_eq!(f[0].path, "etc/sysctl.d/90-virtdeck.conf");
        assert_eq!(
            f[0].content,
            "# Managed by virtdeck: the next kernel settings change from virtdeck replaces this file.\n\
             # The host routes IPv4 between interfaces; libvirt NAT networks need it.\n\
             net.ipv4.ip_forward = 1\n\
             # Prefer keeping guest memory in RAM over swapping it out.\n\
             vm.swappiness = 10\n"
        );
        assert!(render_file(&BTreeMap::new()).is_empty());
    }

    #[test]
    fn forms() {
        let f = SysctlForm {
            action: "set".into(),
            key: "bad key".into(),
            value: "".into(),
        };
        let errs = f.to_change().unwrap_err();
        assert_eq!(
            errs.iter().map(|e| e.field).collect::<Vec<_>>(),
            vec!["key", "value"]
        );
        let f = SysctlForm {
            action: "recommended".into(),
            ..Default::default()
        };
        match f.to_change().unwrap() {
            SysctlChange::Set(v) => assert_eq!(v.len(), CATALOG.len()),
            other => panic!("{other:?}"),
        }
        assert!(missing_key_message("net.bridge.bridge-nf-call-iptables").contains("br_netfilter"));
    }
}
