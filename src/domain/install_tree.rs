//! Network install trees (virt-install `--location`): where a distribution keeps the
//! installer's kernel and initrd below the tree URL.

/// A checked install tree URL: http or https, a host, no credentials, no spaces. Always
/// ends with '/', so relative paths join below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeUrl(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeUrlError {
    #[error("Enter the URL of the install tree, e.g. https://mirror.example/fedora/releases/41/Server/x86_64/os/.")]
    Empty,
    #[error("Use an http:// or https:// URL.")]
    Scheme,
    #[error("The URL has no host name.")]
    Host,
    #[error("Leave user names and passwords out of the URL.")]
    Credentials,
    #[error("The URL must not contain spaces, quotes or control characters, and at most 2048 characters.")]
    Characters,
}

impl TreeUrl {
    pub fn parse(s: &str) -> Result<TreeUrl, TreeUrlError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(TreeUrlError::Empty);
        }
        if s.len() > 2048
            || s.chars()
                .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '<' | '>'))
        {
            return Err(TreeUrlError::Characters);
        }
        let rest = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("https://"))
            .ok_or(TreeUrlError::Scheme)?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if authority.contains('@') {
            return Err(TreeUrlError::Credentials);
        }
        if authority.is_empty() || authority.starts_with(':') {
            return Err(TreeUrlError::Host);
        }
        if s.contains(['?', '#']) {
            return Err(TreeUrlError::Characters);
        }
        let mut url = s.to_string();
        if !url.ends_with('/') {
            url.push('/');
        }
        Ok(TreeUrl(url))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `relative` below the tree (no leading '/', no '..').
    pub fn join(&self, relative: &str) -> Option<String> {
        let relative = relative.trim_start_matches('/');
        if relative.split('/').any(|seg| seg == "..") || relative.is_empty() {
            return None;
        }
        Some(format!("{}{relative}", self.0))
    }
}

/// Kernel and initrd paths (relative to the tree) that distributions use, tried in order
/// when the tree has no `.treeinfo`.
pub const KNOWN_LAYOUTS: &[(&str, &str)] = &[
    // Fedora, RHEL, CentOS, Alma, Rocky.
    ("images/pxeboot/vmlinuz", "images/pxeboot/initrd.img"),
    // Debian and Ubuntu netboot installers, from .../dists/<suite>/main/installer-amd64/.
    (
        "current/images/netboot/debian-installer/amd64/linux",
        "current/images/netboot/debian-installer/amd64/initrd.gz",
    ),
    (
        "main/installer-amd64/current/images/netboot/debian-installer/amd64/linux",
        "main/installer-amd64/current/images/netboot/debian-installer/amd64/initrd.gz",
    ),
    // openSUSE, SLES.
    ("boot/x86_64/loader/linux", "boot/x86_64/loader/initrd"),
];

/// The x86_64 kernel and initrd named by a `.treeinfo` file (`[images-x86_64]`).
pub fn treeinfo_images(treeinfo: &str) -> Option<(String, String)> {
    let mut in_section = false;
    let (mut kernel, mut initrd) = (None, None);
    for line in treeinfo.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_section = line == "[images-x86_64]";
            continue;
        }
        if !in_section {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            match k.trim() {
                "kernel" => kernel = Some(v.trim().to_string()),
                "initrd" => initrd = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    Some((kernel?, initrd?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let u = TreeUrl::parse(" http://10.0.0.5:8080/tree ").unwrap();
        assert_eq!(u.as_str(), "http://10.0.0.5:8080/tree/");
        assert_eq!(
            u.join("images/pxeboot/vmlinuz").as_deref(),
            Some("http://10.0.0.5:8080/tree/images/pxeboot/vmlinuz")
        );
        assert_eq!(u.join("../etc/passwd"), None);
        assert_eq!(TreeUrl::parse(""), Err(TreeUrlError::Empty));
        assert_eq!(TreeUrl::parse("ftp://x/tree"), Err(TreeUrlError::Scheme));
        assert_eq!(TreeUrl::parse("file:///etc"), Err(TreeUrlError::Scheme));
        assert_eq!(
            TreeUrl::parse("http://u:p@host/tree"),
            Err(TreeUrlError::Credentials)
        );
        assert_eq!(TreeUrl::parse("http:///tree"), Err(TreeUrlError::Host));
        assert_eq!(
            TreeUrl::parse("http://host/a b"),
            Err(TreeUrlError::Characters)
        );
        assert_eq!(
            TreeUrl::parse("http://host/x?y=1"),
            Err(TreeUrlError::Characters)
        );
    }

    #[test]
    fn treeinfo_names_the_images() {
        let t = "[general]\nfamily = Fedora\n[images-aarch64]\nkernel = a/vmlinuz\ninitrd = a/initrd.img\n[images-x86_64]\nkernel = images/pxeboot/vmlinuz\ninitrd = images/pxeboot/initrd.img\nboot.iso = images/boot.iso\n";
        assert_eq!(
            treeinfo_images(t),
            Some((
                "images/pxeboot/vmlinuz".into(),
                "images/pxeboot/initrd.img".into()
            ))
        );
        assert_eq!(treeinfo_images("[general]\nfamily = x\n"), None);
    }
}
