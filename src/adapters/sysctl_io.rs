//! Kernel settings through /proc/sys, in the configured network namespace (so
//! `net.*` keys are the namespace's own).

use super::netns::in_netns;

/// How a key looks on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Present and writable, with its current value.
    Writable(String),
    /// Present but read-only, with its current value.
    ReadOnly(String),
    Missing,
}

/// `/proc/sys/…` for a dotted key (the key is validated by the domain first).
pub fn proc_path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}

fn probe_one(key: &str) -> Probe {
    use std::os::unix::fs::PermissionsExt;
    let path = proc_path(key);
    let Ok(meta) = std::fs::metadata(&path) else {
        return Probe::Missing;
    };
    if !meta.is_file() {
        return Probe::Missing;
    }
    let value = std::fs::read_to_string(&path)
        .map(|v| normalize(&v))
        .unwrap_or_default();
    if meta.permissions().mode() & 0o222 == 0 {
        Probe::ReadOnly(value)
    } else {
        Probe::Writable(value)
    }
}

/// Whitespace runs (tabs in multi-value keys) become single spaces.
pub fn normalize(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Looks up several keys at once.
pub fn probe(netns: Option<&str>, keys: Vec<String>) -> Result<Vec<(String, Probe)>, String> {
    in_netns(netns, move || {
        keys.into_iter()
            .map(|k| {
                let p = probe_one(&k);
                (k, p)
            })
            .collect()
    })
}

/// Writes one key.
pub fn write(netns: Option<&str>, key: &str, value: &str) -> Result<(), String> {
    let (key, value) = (key.to_string(), value.to_string());
    in_netns(netns, move || {
        let path = proc_path(&key);
        std::fs::write(&path, format!("{value}\n"))
            .map_err(|e| format!("cannot set {key} to {value}: {e}"))
    })?
}
