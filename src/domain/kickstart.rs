//! Kickstart files (Anaconda's unattended installs): names, content limits, the per-VM
//! URL an installing guest fetches, and whether a VM is still in its install boot.

use super::storage::{is, walk};

/// Largest kickstart file accepted, in bytes.
pub const MAX_CONTENT_BYTES: usize = 256 * 1024;
/// Longest kickstart name.
pub const MAX_NAME_CHARS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KickstartError {
    #[error(
        "Enter a name of letters, digits, '-', '_' and '.' (at most 64), not starting with '.'."
    )]
    Name,
    #[error("The kickstart is empty: paste its content.")]
    Empty,
    #[error("The kickstart is larger than 256 KiB.")]
    TooLarge,
    #[error("The kickstart must be text: it contains NUL characters.")]
    Binary,
}

/// A checked kickstart name.
pub fn check_name(name: &str) -> Result<&str, KickstartError> {
    let name = name.trim();
    let ok = !name.is_empty()
        && name.chars().count() <= MAX_NAME_CHARS
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(name)
    } else {
        Err(KickstartError::Name)
    }
}

/// Checks a kickstart's content (already UTF-8: it arrived as a string).
pub fn check_content(content: &str) -> Result<(), KickstartError> {
    if content.trim().is_empty() {
        return Err(KickstartError::Empty);
    }
    if content.len() > MAX_CONTENT_BYTES {
        return Err(KickstartError::TooLarge);
    }
    if content.contains('\0') {
        return Err(KickstartError::Binary);
    }
    Ok(())
}

/// The kernel argument that points the installer at its kickstart: `inst.ks` (Anaconda
/// since RHEL 7 / Fedora 17) or `ks` (older installers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KsArgument {
    #[default]
    #[serde(rename = "inst.ks")]
    InstKs,
    #[serde(rename = "ks")]
    Ks,
}

impl KsArgument {
    pub fn as_str(self) -> &'static str {
        match self {
            KsArgument::InstKs => "inst.ks",
            KsArgument::Ks => "ks",
        }
    }
}

/// The URL an installing guest fetches its kickstart from: `<base>/ks/<token>`.
pub fn kickstart_url(base: &str, token: &str) -> String {
    format!("{}/ks/{token}", base.trim_end_matches('/'))
}

/// The installer's kernel arguments with the kickstart argument appended; an argument
/// the admin already gave for the kickstart (`inst.ks=`/`ks=`) is replaced.
pub fn with_kickstart_arg(kernel_args: &str, arg: KsArgument, url: &str) -> String {
    let mut parts: Vec<&str> = kernel_args
        .split_whitespace()
        .filter(|p| !p.starts_with("inst.ks=") && !p.starts_with("ks="))
        .collect();
    let ks = format!("{}={url}", arg.as_str());
    parts.push(&ks);
    parts.join(" ")
}

/// Why a base URL cannot be used, if it cannot.
pub fn check_base_url(base: &str) -> Result<(), String> {
    let rest = base
        .strip_prefix("http://")
        .or_else(|| base.strip_prefix("https://"))
        .ok_or_else(|| format!("{base:?} must start with http:// or https://"))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.contains('@') {
        return Err(format!(
            "{base:?} needs a host name, without user or password"
        ));
    }
    if base
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '?' | '#'))
    {
        return Err(format!(
            "{base:?} must not contain spaces, quotes, '?' or '#'"
        ));
    }
    Ok(())
}

/// The base URL derived from where virtdeck listens: the listen address when it is a
/// specific one, else `fallback_host` (the address the admin reached virtdeck by).
/// The flag says whether guests on other networks may be unable to reach it.
pub fn derived_base_url(
    scheme: &str,
    listen: std::net::SocketAddr,
    fallback_host: &str,
) -> (String, bool) {
    let ip = listen.ip();
    if ip.is_unspecified() || ip.is_loopback() {
        let host = if ip.is_loopback() || fallback_host.is_empty() {
            match listen {
                std::net::SocketAddr::V4(a) => a.to_string(),
                std::net::SocketAddr::V6(a) => a.to_string(),
            }
        } else {
            fallback_host.to_string()
        };
        (format!("{scheme}://{host}"), true)
    } else {
        (format!("{scheme}://{listen}"), false)
    }
}

/// The kernel command line in a VM's live definition when it is running a kernel
/// directly (a running id and an `<os><cmdline>`).
pub fn running_cmdline(live_xml: &str, vm: &str) -> Option<String> {
    let (mut name, mut running, mut cmdline) = (String::new(), false, None);
    walk(
        live_xml,
        |path, e| {
            if is(path, &["domain"]) {
                running = e.attributes().flatten().any(|a| {
                    let value: &str = &a.value;
                    a.key.into_inner() == "id" && value != "-1" && !value.is_empty()
                });
            }
        },
        |path, text| {
            if is(path, &["domain", "name"]) {
                name = text.to_string();
            } else if is(path, &["domain", "os", "cmdline"]) {
                cmdline = Some(text.to_string());
            }
        },
    );
    cmdline.filter(|_| name == vm && running)
}

/// The kickstart token in a VM's live definition when it is running its install boot
/// (a kernel command line with an `inst.ks=`/`ks=` argument ending in `/ks/<token>`).
pub fn install_boot_token(live_xml: &str, vm: &str) -> Option<String> {
    running_cmdline(live_xml, vm)?
        .split_whitespace()
        .filter(|a| a.starts_with("inst.ks=") || a.starts_with("ks="))
        .find_map(|a| a.rsplit_once("/ks/").map(|(_, t)| t.to_string()))
        .filter(|t| !t.is_empty())
}

/// Whether a VM's live definition shows it running its install boot with this token.
pub fn install_boot_running(live_xml: &str, vm: &str, token: &str) -> bool {
    install_boot_token(live_xml, vm).as_deref() == Some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            check_name(" fedora-41_server.ks "),
            Ok("fedora-41_server.ks")
        );
        for bad in ["", ".hidden", "a b", "a/b", "ä", &"x".repeat(65)] {
            assert_eq!(check_name(bad), Err(KickstartError::Name), "{bad:?}");
        }
        assert!(check_name(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn content() {
        assert_eq!(check_content(" \n"), Err(KickstartError::Empty));
        assert_eq!(check_content("a\0b"), Err(KickstartError::Binary));
        assert_eq!(
            check_content(&"x".repeat(MAX_CONTENT_BYTES + 1)),
            Err(KickstartError::TooLarge)
        );
        assert!(check_content(&"x".repeat(MAX_CONTENT_BYTES)).is_ok());
    }

    #[test]
    fn kernel_args_get_one_ks_argument() {
        let url = kickstart_url("http://10.0.0.1:9443/", "tok");
        assert_eq!(url, "http://10.0.0.1:9443/ks/tok");
        assert_eq!(
            with_kickstart_arg(
                "console=ttyS0 ks=http://old/ks.cfg",
                KsArgument::InstKs,
                &url
            ),
            "console=ttyS0 inst.ks=http://10.0.0.1:9443/ks/tok"
        );
        assert_eq!(
            with_kickstart_arg("", KsArgument::Ks, &url),
            "ks=http://10.0.0.1:9443/ks/tok"
        );
    }

    #[test]
    fn base_urls() {
        assert!(check_base_url("http://192.168.122.1:9443").is_ok());
        assert!(check_base_url("ftp://x").is_err());
        assert!(check_base_url("http://u:p@x").is_err());
        assert!(check_base_url("http:///x").is_err());
        assert!(check_base_url("http://x/a b").is_err());
        let l = "10.1.2.3:9443".parse().unwrap();
        assert_eq!(
            derived_base_url("https", l, "ignored"),
            ("https://10.1.2.3:9443".into(), false)
        );
        let any = "0.0.0.0:9443".parse().unwrap();
        assert_eq!(
            derived_base_url("https", any, "vh1.example:9443"),
            ("https://vh1.example:9443".into(), true)
        );
        let lo = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(
            derived_base_url("http", lo, "localhost:4000"),
            ("http://127.0.0.1:4000".into(), true)
        );
    }

    #[test]
    fn install_boot_is_read_from_the_live_definition() {
        let url = kickstart_url("http://h", "t1");
        let running = format!(
            "<domain type='qemu' id='7'><name>vm1</name><os><type>hvm</type>\
             <kernel>/k</kernel><cmdline>console=ttyS0 inst.ks={url}</cmdline></os></domain>"
        );
        assert!(install_boot_running(&running, "vm1", "t1"));
        assert!(!install_boot_running(&running, "vm2", "t1"));
        assert!(!install_boot_running(&running, "vm1", "t"));
        let off = running.replace(" id='7'", "");
        assert!(!install_boot_running(&off, "vm1", "t1"));
        let disk_boot = "<domain type='qemu' id='8'><name>vm1</name><os><type>hvm</type>\
                         <boot dev='hd'/></os></domain>";
        assert!(!install_boot_running(disk_boot, "vm1", "t1"));
    }
}
