//! The VM list as last read from libvirt, shared by the list page, `GET /api/v1/vms` and
//! the capacity summary, so that many readers at once cost one listing.
//!
//! Invariant: a cached list is only handed out while nothing has changed since it was
//! read — every libvirt lifecycle event and every change made through virtdeck bumps the
//! generation — and never when older than `max_age` (guest addresses and the few
//! changes libvirt has no event for, such as autostart set with virsh).

use super::{list, LcResult, VmList};
use crate::config::LifecycleSettings;
use crate::hypervisor::Hypervisor;
use crate::store::Store;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct ListCache<T = VmList> {
    generation: AtomicU64,
    entry: Mutex<Option<Entry<T>>>,
    /// Held while one reader refreshes, so the others wait for its result instead of
    /// listing too.
    refreshing: Mutex<()>,
    max_age: Duration,
}

struct Entry<T> {
    generation: u64,
    read_at: Instant,
    value: Arc<T>,
}

impl ListCache<VmList> {
    /// The VM list: the cached one if still valid, otherwise read now (once, however
    /// many readers ask at the same time). Blocking: call off the async runtime.
    pub fn get(
        &self,
        hv: &dyn Hypervisor,
        store: &Store,
        cfg: &LifecycleSettings,
    ) -> LcResult<Arc<VmList>> {
        self.get_with(|| list(hv, store, cfg))
    }
}

impl<T> ListCache<T> {
    pub fn new(max_age: Duration) -> ListCache<T> {
        ListCache {
            generation: AtomicU64::new(0),
            entry: Mutex::new(None),
            refreshing: Mutex::new(()),
            max_age,
        }
    }

    /// Something may have changed: the next reader lists again.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn get_with(&self, read: impl FnOnce() -> LcResult<T>) -> LcResult<Arc<T>> {
        if let Some(vms) = self.valid() {
            return Ok(vms);
        }
        let _one_reader = self
            .refreshing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(vms) = self.valid() {
            return Ok(vms);
        }
        // Taken before reading: a change during the read makes this entry stale at once.
        let generation = self.generation.load(Ordering::SeqCst);
        let vms = Arc::new(read()?);
        if let Ok(mut entry) = self.entry.lock() {
            *entry = Some(Entry {
                generation,
                read_at: Instant::now(),
                value: vms.clone(),
            });
        }
        Ok(vms)
    }

    fn valid(&self) -> Option<Arc<T>> {
        let entry = self.entry.lock().ok()?;
        let e = entry.as_ref()?;
        (e.generation == self.generation.load(Ordering::SeqCst)
            && e.read_at.elapsed() < self.max_age)
            .then(|| e.value.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn read_counting(reads: &Cell<u32>) -> impl FnOnce() -> LcResult<()> + '_ {
        move || {
            reads.set(reads.get() + 1);
            Ok(())
        }
    }

    #[test]
    fn a_valid_list_is_read_once() {
        let cache: ListCache<()> = ListCache::new(Duration::from_secs(60));
        let reads = Cell::new(0);
        for _ in 0..3 {
            cache.get_with(read_counting(&reads)).unwrap();
        }
        assert_eq!(reads.get(), 1);
    }

    #[test]
    fn a_change_makes_the_next_reader_list_again() {
        let cache: ListCache<()> = ListCache::new(Duration::from_secs(60));
        let reads = Cell::new(0);
        cache.get_with(read_counting(&reads)).unwrap();
        cache.invalidate();
        cache.get_with(read_counting(&reads)).unwrap();
        cache.get_with(read_counting(&reads)).unwrap();
        assert_eq!(reads.get(), 2);
    }

    #[test]
    fn a_change_during_the_read_is_not_lost() {
        let cache: ListCache<()> = ListCache::new(Duration::from_secs(60));
        let reads = Cell::new(0);
        cache
            .get_with(|| {
                reads.set(reads.get() + 1);
                cache.invalidate(); // an event arrives while libvirt is being read
                Ok(())
            })
            .unwrap();
        cache.get_with(read_counting(&reads)).unwrap();
        assert_eq!(reads.get(), 2);
    }

    #[test]
    fn an_old_list_is_read_again() {
        let cache: ListCache<()> = ListCache::new(Duration::ZERO);
        let reads = Cell::new(0);
        cache.get_with(read_counting(&reads)).unwrap();
        cache.get_with(read_counting(&reads)).unwrap();
        assert_eq!(reads.get(), 2);
    }

    #[test]
    fn a_failed_read_is_not_cached() {
        let cache: ListCache<()> = ListCache::new(Duration::from_secs(60));
        let failed =
            cache.get_with(|| Err(super::super::LifecycleError::failed("libvirt is down")));
        assert!(failed.is_err());
        let reads = Cell::new(0);
        cache.get_with(read_counting(&reads)).unwrap();
        assert_eq!(reads.get(), 1);
    }
}
