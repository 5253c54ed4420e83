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
}
