//! Small, cached screenshots of running VMs for the VM list. Requests never wait for
//! libvirt: they get the last picture (if any) and start a refresh in the background
//! when it is older than [`FRESH_FOR`].

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A picture younger than this is served without asking libvirt again.
pub const FRESH_FOR: Duration = Duration::from_secs(10);
/// Thumbnails fit in this box (pixels).
pub const MAX_WIDTH_PX: u32 = 320;
pub const MAX_HEIGHT_PX: u32 = 240;

/// Pictures kept at most (one per VM); the oldest goes first beyond this.
pub const MAX_ENTRIES: usize = 4096;
/// Refreshes running at once; a request finding this many waits for the next one.
pub const MAX_REFRESHING: usize = 16;

struct Entry {
    png: Option<Vec<u8>>,
    taken: Instant,
}

#[derive(Default)]
struct Inner {
    cache: HashMap<String, Entry>,
    refreshing: HashSet<String>,
}

/// What a refresh found.
#[derive(Debug, PartialEq, Eq)]
pub enum Shot {
    /// A new picture.
    Picture(Vec<u8>),
    /// The VM exists but has no screen to show now.
    NoScreen,
    /// There is no such VM: nothing is kept under its name.
    NoSuchVm,
}

/// Only VMs that exist get an entry: a request for any other name starts a refresh
/// (one at a time per name, [`MAX_REFRESHING`] in all) that finds no VM and keeps nothing.
#[derive(Default)]
pub struct Thumbs {
    inner: Mutex<Inner>,
}

impl Thumbs {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached picture of `vm`, and whether a refresh should be started (in which case
    /// the caller must call [`Thumbs::store`] when done).
    pub fn get(&self, vm: &str) -> (Option<Vec<u8>>, bool) {
        let mut i = self.lock();
        let (png, stale) = match i.cache.get(vm) {
            Some(e) => (e.png.clone(), e.taken.elapsed() >= FRESH_FOR),
            None => (None, true),
        };
        let refresh = stale && !i.refreshing.contains(vm) && i.refreshing.len() < MAX_REFRESHING;
        if refresh {
            i.refreshing.insert(vm.to_string());
        }
        (png, refresh)
    }

    /// Stores what a refresh found.
    pub fn store(&self, vm: &str, shot: Shot) {
        let mut i = self.lock();
        i.refreshing.remove(vm);
        let png = match shot {
            Shot::NoSuchVm => {
                i.cache.remove(vm);
                return;
            }
            Shot::Picture(png) => Some(png),
            Shot::NoScreen => None,
        };
        if !i.cache.contains_key(vm) && i.cache.len() >= MAX_ENTRIES {
            let oldest = i
                .cache
                .iter()
                .min_by_key(|(_, e)| e.taken)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                i.cache.remove(&k);
            }
        }
        i.cache.insert(
            vm.to_string(),
            Entry {
                png,
                taken: Instant::now(),
            },
        );
    }

    /// VMs with an entry.
    pub fn len(&self) -> usize {
        self.lock().cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        t.store("a", Shot::Picture(vec![1]));
        assert_eq!(t.get("a"), (Some(vec![1]), false), "fresh");
    }

    #[test]
    fn names_of_no_vm_keep_nothing_and_refreshes_are_bounded() {
        let t = Thumbs::default();
        for n in 0..MAX_REFRESHING * 2 {
            let (_, refresh) = t.get(&format!("nope{n}"));
            assert_eq!(refresh, n < MAX_REFRESHING);
        }
        for n in 0..MAX_REFRESHING {
            t.store(&format!("nope{n}"), Shot::NoSuchVm);
        }
        assert!(t.is_empty());
        assert_eq!(t.get("web01"), (None, true), "room to refresh again");
        t.store("web01", Shot::NoScreen);
        assert_eq!(t.len(), 1);
    }
}
