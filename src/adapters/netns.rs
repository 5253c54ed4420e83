//! Running host work inside a named network namespace (`/run/netns/NAME`, as made by
//! `ip netns add`), or in the host's own when none is configured.

use std::fs::File;

/// Where `ip netns` keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// Runs `f` on a new thread that first entered the namespace. Sockets opened and
/// /proc/sys/net files read or written on that thread belong to the namespace.
pub fn in_netns<T, F>(netns: Option<&str>, f: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let path = netns.map(|n| format!("{NETNS_DIR}/{n}"));
    std::thread::Builder::new()
        .name("virtdeck-hostnet".into())
        .spawn(move || {
            if let Some(path) = &path {
                let file = File::open(path)
                    .map_err(|e| format!("cannot open network namespace {path}: {e}"))?;
                nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("cannot enter network namespace {path}: {e}"))?;
            }
            Ok(f())
        })
        .map_err(|e| format!("cannot start a worker thread: {e}"))?
        .join()
        .map_err(|_| "the host network worker stopped unexpectedly".to_string())?
}

/// A namespace name as `ip netns` accepts it (also keeps the path inside /run/netns).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("vd-test-1234"));
        assert!(!valid_name("../etc"));
        assert!(!valid_name(".."));
        assert!(!valid_name(""));
    }

    #[test]
    fn missing_namespace_is_a_clear_error() {
        let e = in_netns(Some("virtdeck-no-such-ns"), || ()).unwrap_err();
        assert!(e.contains("/run/netns/virtdeck-no-such-ns"), "{e}");
    }
}
