//! "Export host plan": the host's managed configuration as a shell script that
//! reproduces it on a freshly installed host (also usable as a kickstart `%post`).

use super::hostnet::render::RenderedFile;

/// More to add to the script, e.g. storage pools or libvirt networks, as shell commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSection {
    pub title: String,
    /// Shell commands, run in order after the files are in place.
    pub commands: String,
}

/// A heredoc delimiter that no line of `content` equals.
fn delimiter(content: &str) -> String {
    let mut d = "VIRTDECK_EOF".to_string();
    while content.lines().any(|l| l == d) {
        d.push('_');
    }
    d
}

fn quote(path: &str) -> String {
    format!("'{}'", path.replace('\'', "'\\''"))
}

/// The script: every file with its mode, then the kernel settings are loaded, then the
/// extra sections. Files take effect at the next boot (or network service restart).
pub fn script(host: &str, files: &[RenderedFile], extra: &[ExportSection]) -> String {
    let mut s = String::new();
    s.push_str("#!/bin/sh\n");
    s.push_str(&format!(
        "# Host plan exported by virtdeck from {}.\n",
        host.replace('\n', " ")
    ));
    s.push_str("# Run as root on a freshly installed host, or paste everything below this\n");
    s.push_str("# comment into the %post section of a kickstart file. The network files take\n");
    s.push_str("# effect at the next boot.\n");
    s.push_str("set -eu\numask 022\n");
    if files.is_empty() && extra.is_empty() {
        s.push_str("# virtdeck manages nothing on this host yet.\n");
    }
    for f in files {
        let path = format!("/{}", f.path);
        let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("/");
        let d = delimiter(&f.content);
        s.push_str(&format!("\n# {path}\nmkdir -p {}\n", quote(dir)));
        s.push_str(&format!("cat > {} <<'{d}'\n", quote(&path)));
        s.push_str(&f.content);
        if !f.content.ends_with('\n') {
            s.push('\n');
        }
        s.push_str(&format!("{d}\nchmod {:o} {}\n", f.mode, quote(&path)));
    }
    if let Some(f) = files.iter().find(|f| f.path == super::sysctl::SYSCTL_FILE) {
        s.push_str(&format!(
            "\n# Kernel settings now (br_netfilter keys only exist once the module is loaded).\nsysctl -p {} || true\n",
            quote(&format!("/{}", f.path))
        ));
    }
    for e in extra {
        s.push_str(&format!(
            "\n# {}\n{}",
            e.title.replace('\n', " "),
            e.commands
        ));
        if !e.commands.ends_with('\n') {
            s.push('\n');
        }
    }
    s
}

/// A persistent storage pool as the export re-creates it.
pub struct ExportPool {
    pub name: String,
    /// `dir`, `netfs`, `logical`…
    pub kind: String,
    pub autostart: bool,
    /// The definition as libvirt keeps it.
    pub xml: String,
}

/// Lines of a pool definition that belong to this host only: its UUID and measured sizes.
fn host_only(line: &str) -> bool {
    let t = line.trim_start();
    ["<uuid>", "<capacity", "<allocation", "<available"]
        .iter()
        .any(|p| t.starts_with(p))
}

/// The libvirt part of the host plan: each persistent pool defined from its definition
/// (without this host's UUID and sizes), built (not a logical pool: building one wipes
/// its devices, so the script says how instead), started and autostarted as here; and
/// libvirt's default NAT network removed when this host no longer has one. Every step
/// is skipped when already done, so the script can be run again. Needs a running
/// libvirtd: in a kickstart, run this part at first boot rather than in %post.
pub fn libvirt_sections(pools: &[ExportPool], default_network_present: bool) -> Vec<ExportSection> {
    let mut out = Vec::new();
    for p in pools {
        let name = quote(&p.name);
        let xml: String = p
            .xml
            .lines()
            .filter(|l| !host_only(l))
            .map(|l| format!("{l}\n"))
            .collect();
        let d = delimiter(&xml);
        // A fresh private file (mktemp): a predictable name in /tmp could be a link
        // planted by another user, which this script (run as root) would write through.
        let file = "\"$pool_xml\"";
        let mut c = String::new();
        c.push_str("pool_xml=$(mktemp /tmp/virtdeck-pool.XXXXXXXXXX)\n");
        c.push_str(&format!("cat > {file} <<'{d}'\n{xml}{d}\n"));
        c.push_str(&format!(
            "virsh -q pool-list --all --name | grep -qxF {name} || virsh pool-define {file}\n"
        ));
        if p.kind == "logical" {
            c.push_str(&format!(
                "# Building a logical pool wipes the devices in its definition: if its volume\n\
                 # group does not exist on this host yet, run `virsh pool-build {name}` yourself.\n"
            ));
        } else {
            c.push_str(&format!("virsh pool-build {name} 2>/dev/null || true\n"));
        }
        c.push_str(&format!(
            "virsh -q pool-list --name | grep -qxF {name} || virsh pool-start {name}\n"
        ));
        if p.autostart {
            c.push_str(&format!("virsh pool-autostart {name}\n"));
        }
        c.push_str(&format!("rm -f {file}\n"));
        out.push(ExportSection {
            title: format!(
                "Storage pool {} ({}); needs a running libvirtd",
                p.name, p.kind
            ),
            commands: c,
        });
    }
    if !default_network_present {
        out.push(ExportSection {
            title: "libvirt's default NAT network is removed on this host".into(),
            commands: "if virsh -q net-list --all --name | grep -qxF default; then\n  \
                       virsh net-destroy default 2>/dev/null || true\n  \
                       virsh net-undefine default\nfi\n"
                .into(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::hostnet::render::render;
    use crate::domain::hostnet::tests::classic;
    use crate::domain::hostnet::Backend;
    use std::collections::BTreeMap;

    #[test]
    fn script_writes_every_file_and_runs_extras() {
        let mut files = render(&classic(), Backend::Ifcfg);
        let mut m = BTreeMap::new();
        m.insert("vm.swappiness".to_string(), "10".to_string());
        files.extend(crate::domain::sysctl::render_file(&m));
        let extra = [ExportSection {
            title: "Storage pool vmpool".into(),
            commands: "virsh pool-define /tmp/pool.xml".into(),
        }];
        let s = script("vh1", &files, &extra);
        assert!(s.starts_with("#!/bin/sh\n# Host plan exported by virtdeck from vh1.\n"));
        for f in &files {
            assert!(
                s.contains(&format!(
                    "cat > '/{}' <<'VIRTDECK_EOF'\n{}VIRTDECK_EOF\n",
                    f.path, f.content
                )),
                "{}",
                f.path
            );
        }
        assert!(s.contains("mkdir -p '/etc/sysconfig/network-scripts'\n"));
        assert!(s.contains("chmod 644 '/etc/sysctl.d/90-virtdeck.conf'\n"));
        assert!(s.contains("sysctl -p '/etc/sysctl.d/90-virtdeck.conf' || true\n"));
        assert!(s.ends_with("# Storage pool vmpool\nvirsh pool-define /tmp/pool.xml\n"));
    }

    #[test]
    fn heredoc_cannot_be_closed_early_and_the_script_runs() {
        let files = [RenderedFile {
            path: "etc/x y/it's".into(),
            content: "VIRTDECK_EOF\n$(touch /tmp/never)\n".into(),
            mode: 0o600,
        }];
        let s = script("h", &files, &[]);
        assert!(s.contains("<<'VIRTDECK_EOF_'\n"));
        // Run it with the root moved into a temp dir: the file comes out byte for byte.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_string_lossy().to_string();
        let moved = s.replace("'/etc/", &format!("'{root}/etc/"));
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&moved)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let back = std::fs::read_to_string(dir.path().join("etc/x y/it's")).unwrap();
        assert_eq!(back, files[0].content);
    }

    #[test]
    fn pools_are_defined_without_this_hosts_identity_and_logical_ones_are_not_built() {
        let pools = [
            ExportPool {
                name: "fast".into(),
                kind: "dir".into(),
                autostart: true,
                xml: "<pool type='dir'>\n  <name>fast</name>\n  <uuid>1b4e28ba-2fa1-11d2-883f-0016d3cca427</uuid>\n  <capacity unit='bytes'>1</capacity>\n  <allocation unit='bytes'>1</allocation>\n  <available unit='bytes'>1</available>\n  <target>\n    <path>/srv/fast</path>\n  </target>\n</pool>".into(),
            },
            ExportPool {
                name: "vms".into(),
                kind: "logical".into(),
                autostart: false,
                xml: "<pool type='logical'>\n  <name>vms</name>\n</pool>".into(),
            },
        ];
        let sections = libvirt_sections(&pools, true);
        assert_eq!(sections.len(), 2, "no network section while default exists");
        let fast = &sections[0].commands;
        assert!(fast.contains("<path>/srv/fast</path>"), "{fast}");
        for gone in ["<uuid>", "<capacity", "<allocation", "<available"] {
            assert!(!fast.contains(gone), "{gone} kept: {fast}");
        }
        assert!(fast.contains("virsh pool-build 'fast'"), "{fast}");
        assert!(fast.contains("virsh pool-autostart 'fast'"), "{fast}");
        let vms = &sections[1].commands;
        assert!(
            !vms.lines().any(|l| l.starts_with("virsh pool-build")),
            "{vms}"
        );
        assert!(vms.contains("wipes the devices"), "{vms}");
        assert!(!vms.contains("pool-autostart"), "{vms}");
        let removed = libvirt_sections(&[], false);
        assert_eq!(removed.len(), 1);
        assert!(removed[0].commands.contains("virsh net-undefine default"));
    }
}
