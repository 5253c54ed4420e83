//! The HTTP adapter: downloading an install tree's kernel and initrd. Blocking; run it
//! off the async runtime.

use crate::domain::install_tree::{treeinfo_images, TreeUrl, KNOWN_LAYOUTS};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

/// Largest file fetched (installer initrds are well below this).
pub const MAX_BOOT_FILE_BYTES: u64 = 1024 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Nothing usable was found below the URL.
    #[error(
        "no installer kernel and initrd were found below {url} (looked for .treeinfo and {tried})"
    )]
    NoTree { url: String, tried: String },
    #[error("{url} could not be fetched: {message}")]
    Http { url: String, message: String },
    #[error("{url} is larger than {max_mib} MiB")]
    TooLarge { url: String, max_mib: u64 },
    #[error("{path} could not be written: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_recv_body(Some(Duration::from_secs(600)))
        .http_status_as_error(false)
        .user_agent(concat!("virtdeck/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

fn http_err(url: &str, e: impl std::fmt::Display) -> FetchError {
    FetchError::Http {
        url: url.to_string(),
        message: e.to_string(),
    }
}

/// The status of a GET (body not read), or why there was no answer.
fn status(agent: &ureq::Agent, url: &str) -> Result<u16, FetchError> {
    let r = agent.get(url).call().map_err(|e| http_err(url, e))?;
    Ok(r.status().as_u16())
}

/// Finds the kernel and initrd URLs of an install tree: `.treeinfo` first, then the
/// layouts distributions are known to use.
pub fn locate(tree: &TreeUrl) -> Result<(String, String), FetchError> {
    let agent = agent();
    let treeinfo_url = tree.join(".treeinfo").unwrap_or_default();
    match agent.get(&treeinfo_url).call() {
        Ok(mut r) if r.status().as_u16() == 200 => {
            let text = r
                .body_mut()
                .with_config()
                .limit(1024 * 1024)
                .read_to_string()
                .map_err(|e| http_err(&treeinfo_url, e))?;
            if let Some((k, i)) = treeinfo_images(&text) {
                if let (Some(k), Some(i)) = (tree.join(&k), tree.join(&i)) {
                    return Ok((k, i));
                }
            }
        }
        Ok(_) => {}
        // The host did not answer at all: say so rather than trying every layout.
        Err(e) => return Err(http_err(&treeinfo_url, e)),
    }
    for (k, i) in KNOWN_LAYOUTS {
        let (Some(k), Some(i)) = (tree.join(k), tree.join(i)) else {
            continue;
        };
        if status(&agent, &k)? == 200 {
            return Ok((k, i));
        }
    }
    Err(FetchError::NoTree {
        url: tree.as_str().to_string(),
        tried: KNOWN_LAYOUTS
            .iter()
            .map(|(k, _)| *k)
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Downloads `url` to `dest` (mode 0644, replaced if present); returns the size.
pub fn download(url: &str, dest: &Path) -> Result<u64, FetchError> {
    let agent = agent();
    let mut r = agent.get(url).call().map_err(|e| http_err(url, e))?;
    if r.status().as_u16() != 200 {
        return Err(http_err(url, format!("HTTP status {}", r.status())));
    }
    let write_err = |source| FetchError::Write {
        path: dest.display().to_string(),
        source,
    };
    let mut file = std::fs::File::create(dest).map_err(write_err)?;
    let mut reader = r
        .body_mut()
        .with_config()
        .limit(MAX_BOOT_FILE_BYTES + 1)
        .reader();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| http_err(url, e))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > MAX_BOOT_FILE_BYTES {
            return Err(FetchError::TooLarge {
                url: url.to_string(),
                max_mib: MAX_BOOT_FILE_BYTES / (1024 * 1024),
            });
        }
        file.write_all(&buf[..n]).map_err(write_err)?;
    }
    file.sync_all().map_err(write_err)?;
    Ok(total)
}
