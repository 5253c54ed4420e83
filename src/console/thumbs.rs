//! Small, cached screenshots of running VMs for the VM list. Requests never wait for
//! libvirt: they get the last picture (if any) and start a refresh in the background
//! when it is older than [`FRESH_FOR`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A picture younger than this is served without asking libvirt again.
pub const FRESH_FOR: Duration = Duration::from_secs(10);
/// Thumbnails fit in this box (pixels).
pub const MAX_WIDTH_PX: u32 = 320;
pub const MAX_HEIGHT_PX: u32 = 240;

struct Entry {
    png: Option<Vec<u8>>,
    taken: Instant,
    refreshing: bool,
}

#[derive(Default)]
pub struct Thumbs {
    cache: Mutex<HashMap<String, Entry>>,
}

impl Thumbs {
    /// The cached picture of `vm`, and whether a refresh should be started (in which case
    /// the caller must call [`Thumbs::store`] when done).
    pub fn get(&self, vm: &str) -> (Option<Vec<u8>>, bool) {
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let e = c.entry(vm.to_string()).or_insert_with(|| Entry {
            png: None,
            taken: Instant::now() - FRESH_FOR * 2,
            refreshing: false,
        });
        let refresh = !e.refreshing && e.taken.elapsed() >= FRESH_FOR;
        if refresh {
            e.refreshing = true;
        }
        (e.png.clone(), refresh)
    }

    /// Stores a new picture (or `None`: the VM has no screen now).
    pub fn store(&self, vm: &str, png: Option<Vec<u8>>) {
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        c.insert(
            vm.to_string(),
            Entry {
                png,
                taken: Instant::now(),
                refreshing: false,
            },
        );
    }
}

/// Scales a libvirt screenshot (PNG from QEMU ≥ 7, PPM from older QEMU) into a PNG
/// thumbnail.
pub fn thumbnail(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let img = image::load_from_memory(bytes)
        .map_err(|e| format!("the screenshot is not a readable image: {e}"))?;
    let small = img.thumbnail(MAX_WIDTH_PX, MAX_HEIGHT_PX);
    let mut out = std::io::Cursor::new(Vec::new());
    small
        .write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| format!("cannot encode the thumbnail: {e}"))?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppm_and_png_screenshots_become_small_pngs() {
        // A 640x480 PPM, as older QEMU returns.
        let mut ppm = b"P6\n640 480\n255\n".to_vec();
        ppm.extend(std::iter::repeat_n([200u8, 10, 10], 640 * 480).flatten());
        let png = thumbnail(&ppm).unwrap();
        let img = image::load_from_memory(&png).unwrap();
        assert_eq!((img.width(), img.height()), (320, 240));
        let again = thumbnail(&png).unwrap();
        assert!(again.starts_with(b"\x89PNG"));
        assert!(thumbnail(b"not an image").is_err());
    }

    #[test]
    fn one_refresh_at_a_time() {
        let t = Thumbs::default();
        assert_eq!(t.get("a"), (None, true));
        assert_eq!(t.get("a"), (None, false), "already refreshing");
        t.store("a", Some(vec![1]));
        assert_eq!(t.get("a"), (Some(vec![1]), false), "fresh");
    }
}
