//! `virtdeck vm …`: VMs of a running virtdeck through its REST API, with an API token
//! from the environment (a virsh-like habit for scripts).

use crate::adapters::http_fetch::peer::{parse_fingerprint, PeerCallError, PeerClient};
use crate::config::Config;
use anyhow::{bail, Context};
use clap::Subcommand;
use serde_json::Value;
use std::time::Duration;

pub const ENVIRONMENT_HELP_SHORT: &str = "\
Needs VIRTDECK_TOKEN (an API token); VIRTDECK_URL and VIRTDECK_FINGERPRINT choose another
virtdeck than this host's. See virtdeck(1), ENVIRONMENT.";

#[derive(Subcommand, Debug)]
pub enum VmCommand {
    /// List VMs: name, state, vCPUs, memory, units, addresses.
    List {
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one VM (its devices and definition with --json).
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Start VMs.
    Start { names: Vec<String> },
    /// Ask VMs to shut down (ACPI), like pressing the power button.
    #[command(alias = "shutdown")]
    Stop { names: Vec<String> },
    /// Turn VMs off at once, without asking the guest (data not yet written is lost).
    ForceOff { names: Vec<String> },
    /// Ask VMs to reboot.
    Reboot { names: Vec<String> },
    /// Pause VMs (they keep their memory).
    Pause { names: Vec<String> },
    /// Resume paused VMs.
    Resume { names: Vec<String> },
}

/// What a VM name may contain before it is put in a URL path.
fn checked_name(name: &str) -> anyhow::Result<&str> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if !ok {
        bail!("{name:?} is not a VM name (letters, digits, '-', '_' and '.')");
    }
    Ok(name)
}

fn client(cfg: &Config) -> anyhow::Result<PeerClient> {
    let token = std::env::var("VIRTDECK_TOKEN").map_err(|_| {
        anyhow::anyhow!(
            "set VIRTDECK_TOKEN to an API token (Users page, or `virtdeck token create --user NAME`)"
        )
    })?;
    let url = match std::env::var("VIRTDECK_URL") {
        Ok(u) if !u.trim().is_empty() => u,
        _ => {
            let port = cfg.listen_addr()?.port();
            format!("https://127.0.0.1:{port}/")
        }
    };
    let fingerprint = match std::env::var("VIRTDECK_FINGERPRINT") {
        Ok(f) if !f.trim().is_empty() => parse_fingerprint(&f)
            .context("VIRTDECK_FINGERPRINT is not a SHA-256 fingerprint (64 hex digits)")?,
        _ => own_fingerprint(cfg)?,
    };
    PeerClient::api(&url, &fingerprint, token.trim(), Duration::from_secs(120))
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The fingerprint of the certificate this host's virtdeck serves.
fn own_fingerprint(cfg: &Config) -> anyhow::Result<String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let path = cfg
        .tls
        .cert_file
        .clone()
        .unwrap_or_else(|| cfg.data_dir.join("tls-cert.pem"));
    let first = CertificateDer::pem_file_iter(&path)
        .ok()
        .and_then(|mut certs| certs.next())
        .and_then(Result::ok)
        .with_context(|| {
            format!(
                "cannot read the TLS certificate {} to check the server: set \
                 VIRTDECK_FINGERPRINT to the SHA-256 shown on virtdeck's Fleet page",
                path.display()
            )
        })?;
    Ok(crate::adapters::http_fetch::peer::fingerprint_of(
        first.as_ref(),
    ))
}

fn said(e: PeerCallError) -> anyhow::Error {
    match e {
        PeerCallError::Refused { status, message } => anyhow::anyhow!("{message} (HTTP {status})"),
        other => anyhow::anyhow!("{other}"),
    }
}

pub fn run(cfg: &Config, command: &VmCommand) -> anyhow::Result<()> {
    let api = client(cfg)?;
    match command {
        VmCommand::List { json } => {
            let list: Value = api.get_json("/api/v1/vms").map_err(said)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            print!("{}", table(list["vms"].as_array().map_or(&[][..], |v| v)));
            Ok(())
        }
        VmCommand::Show { name, json } => {
            let name = checked_name(name)?;
            let vm: Value = api.get_json(&format!("/api/v1/vms/{name}")).map_err(said)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&vm)?);
            } else {
                print!("{}", details(&vm));
            }
            Ok(())
        }
        VmCommand::Start { names } => act(&api, names, "start"),
        VmCommand::Stop { names } => act(&api, names, "shutdown"),
        VmCommand::ForceOff { names } => act(&api, names, "force-off"),
        VmCommand::Reboot { names } => act(&api, names, "reboot"),
        VmCommand::Pause { names } => act(&api, names, "pause"),
        VmCommand::Resume { names } => act(&api, names, "resume"),
    }
}

/// Runs `action` on every VM named, in order; each outcome on its own line.
fn act(api: &PeerClient, names: &[String], action: &str) -> anyhow::Result<()> {
    if names.is_empty() {
        bail!("name at least one VM");
    }
    let mut failed = 0;
    for name in names {
        let outcome = checked_name(name).and_then(|name| {
            api.post_json::<_, Value>(
                &format!("/api/v1/vms/{name}/{action}"),
                &serde_json::json!({}),
            )
            .map_err(said)
        });
        match outcome {
            Ok(vm) => println!("{name}: {}", vm["state"].as_str().unwrap_or("done")),
            Err(e) => {
                failed += 1;
                eprintln!("{name}: {e:#}");
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} VMs did not {action}", names.len());
    }
    Ok(())
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn table(vms: &[Value]) -> String {
    let mut rows = vec![[
        "NAME".to_string(),
        "STATE".into(),
        "VCPUS".into(),
        "MEMORY_MIB".into(),
        "UNITS".into(),
        "ADDRESSES".into(),
    ]];
    for vm in vms {
        let addresses = vm["addresses"]
            .as_array()
            .map(|a| a.iter().map(text).collect::<Vec<_>>().join(","))
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| "-".into());
        rows.push([
            text(&vm["name"]),
            text(&vm["state"]),
            text(&vm["vcpus"]),
            text(&vm["memory_mib"]),
            text(&vm["units"]),
            addresses,
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn details(vm: &Value) -> String {
    let mut out = String::new();
    for key in [
        "name",
        "uuid",
        "state",
        "vcpus",
        "memory_mib",
        "units",
        "autostart",
        "persistent",
        "managed",
    ] {
        if !vm[key].is_null() {
            out.push_str(&format!("{key:<12} {}\n", text(&vm[key])));
        }
    }
    for key in ["disks", "macs", "addresses"] {
        if let Some(items) = vm[key].as_array() {
            let items: Vec<String> = items.iter().map(text).collect();
            out.push_str(&format!("{key:<12} {}\n", items.join(", ")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_would_change_the_path_are_refused() {
        for bad in ["", "../host", "a/b", ".hidden", "x?y", "a b"] {
            assert!(checked_name(bad).is_err(), "{bad:?}");
        }
        assert!(checked_name("web-1.prod_a").is_ok());
    }

    #[test]
    fn the_table_lines_up_columns() {
        let vms = serde_json::json!([
            {"name": "a", "state": "running", "vcpus": 2, "memory_mib": 2048, "units": 1, "addresses": ["10.0.0.5/24"]},
            {"name": "longer-name", "state": "shut_off", "vcpus": 1, "memory_mib": 512, "units": null, "addresses": []}
        ]);
        let t = table(vms.as_array().unwrap());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("NAME         STATE"), "{t}");
        assert!(lines[1].ends_with("10.0.0.5/24"), "{t}");
        assert!(lines[2].contains("shut_off"), "{t}");
        assert!(lines[2].ends_with('-'), "{t}");
    }
}
