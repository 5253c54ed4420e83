//! A bounded history of usage points: the recent ones at full rate, older ones averaged
//! into buckets. Sizes are fixed when the history is made, so memory never grows.

use super::rates::SERIES;
use std::collections::VecDeque;

/// One moment's figures (see [`super::rates`] for their order); NaN = no figure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Unix seconds.
    pub t: u32,
    pub v: [f32; SERIES],
}

/// How much history to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiers {
    /// Points kept at full rate (e.g. an hour of 5-second samples: 720).
    pub full_points: usize,
    /// Averaged buckets kept (e.g. a day of 10-minute buckets: 144).
    pub bucket_points: usize,
    /// Seconds per averaged bucket.
    pub bucket_seconds: u32,
}

/// The running average of the bucket being filled.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    start: u32,
    sum: [f32; SERIES],
    n: [u16; SERIES],
}

impl Bucket {
    fn new(start: u32) -> Self {
        Bucket {
            start,
            sum: [0.0; SERIES],
            n: [0; SERIES],
        }
    }

    fn add(&mut self, v: &[f32; SERIES]) {
        for (i, x) in v.iter().enumerate() {
            if x.is_finite() {
                self.sum[i] += x;
                self.n[i] = self.n[i].saturating_add(1);
            }
        }
    }

    fn mean(&self) -> Point {
        let mut v = [f32::NAN; SERIES];
        for (i, out) in v.iter_mut().enumerate() {
            if self.n[i] > 0 {
                *out = self.sum[i] / f32::from(self.n[i]);
            }
        }
        Point { t: self.start, v }
    }
}

#[derive(Debug, Clone)]
pub struct History {
    tiers: Tiers,
    full: VecDeque<Point>,
    buckets: VecDeque<Point>,
    filling: Option<Bucket>,
}

fn push_bounded(q: &mut VecDeque<Point>, cap: usize, p: Point) {
    if cap == 0 {
        return;
    }
    while q.len() >= cap {
        q.pop_front();
    }
    q.push_back(p);
}

impl History {
    pub fn new(tiers: Tiers) -> History {
        History {
            tiers,
            full: VecDeque::with_capacity(tiers.full_points),
            buckets: VecDeque::with_capacity(tiers.bucket_points),
            filling: None,
        }
    }

    /// Adds a point; points must come in time order (an older one is ignored).
    pub fn push(&mut self, p: Point) {
        if self.full.back().is_some_and(|last| p.t < last.t) {
            return;
        }
        push_bounded(&mut self.full, self.tiers.full_points, p);
        let size = self.tiers.bucket_seconds.max(1);
        let start = p.t - p.t % size;
        match &mut self.filling {
            Some(b) if b.start == start => b.add(&p.v),
            slot => {
                if let Some(done) = slot.take() {
                    push_bounded(&mut self.buckets, self.tiers.bucket_points, done.mean());
                }
                let mut b = Bucket::new(start);
                b.add(&p.v);
                *slot = Some(b);
            }
        }
    }

    /// Full-rate points at or after `since` (unix seconds), oldest first.
    pub fn recent(&self, since: u32) -> Vec<Point> {
        self.full.iter().filter(|p| p.t >= since).copied().collect()
    }

    /// Averaged points at or after `since`, oldest first, the bucket being filled last.
    pub fn averaged(&self, since: u32) -> Vec<Point> {
        self.buckets
            .iter()
            .copied()
            .chain(self.filling.map(|b| b.mean()))
            .filter(|p| p.t >= since)
            .collect()
    }

    /// The newest point.
    pub fn latest(&self) -> Option<Point> {
        self.full.back().copied()
    }

    /// Bytes this history holds at most (for sizing: points are 28 bytes each).
    pub fn capacity_bytes(&self) -> usize {
        (self.full.capacity() + self.buckets.capacity()) * std::mem::size_of::<Point>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(t: u32, cpu: f32) -> Point {
        let mut v = [f32::NAN; SERIES];
        v[0] = cpu;
        Point { t, v }
    }

    fn tiers() -> Tiers {
        Tiers {
            full_points: 4,
            bucket_points: 2,
            bucket_seconds: 60,
        }
    }

    #[test]
    fn the_full_rate_tier_keeps_the_newest_points() {
        let mut h = History::new(tiers());
        for i in 0..10 {
            h.push(p(i * 5, i as f32));
        }
        let r = h.recent(0);
        assert_eq!(r.iter().map(|p| p.t).collect::<Vec<_>>(), [30, 35, 40, 45]);
        assert_eq!(h.latest().map(|p| p.v[0]), Some(9.0));
        assert_eq!(h.recent(40).len(), 2);
    }

    #[test]
    fn older_points_are_averaged_into_buckets_and_bounded() {
        let mut h = History::new(tiers());
        // Minute 0: 0,10,20 → 10; minute 1: 30 → 30; minute 2: 40 (filling); minute 3: 50.
        for (t, v) in [(0, 0.0), (20, 10.0), (40, 20.0), (60, 30.0), (120, 40.0)] {
            h.push(p(t, v));
        }
        let a = h.averaged(0);
        assert_eq!(
            a.iter().map(|p| (p.t, p.v[0])).collect::<Vec<_>>(),
            [(0, 10.0), (60, 30.0), (120, 40.0)]
        );
        h.push(p(180, 50.0));
        let a = h.averaged(0);
        // Two buckets kept plus the one being filled; the oldest is gone.
        assert_eq!(
            a.iter().map(|p| (p.t, p.v[0])).collect::<Vec<_>>(),
            [(60, 30.0), (120, 40.0), (180, 50.0)]
        );
        assert!(h.capacity_bytes() >= 6 * 28);
    }

    #[test]
    fn missing_figures_do_not_pull_averages_down() {
        let mut h = History::new(tiers());
        h.push(p(0, 10.0));
        h.push(p(5, f32::NAN));
        h.push(p(10, 30.0));
        let a = h.averaged(0);
        assert_eq!(a[0].v[0], 20.0);
        assert!(a[0].v[1].is_nan(), "a figure never given stays missing");
    }

    #[test]
    fn out_of_order_points_are_ignored() {
        let mut h = History::new(tiers());
        h.push(p(100, 1.0));
        h.push(p(50, 2.0));
        assert_eq!(h.recent(0).len(), 1);
    }

    #[test]
    fn the_size_is_fixed() {
        let mut h = History::new(Tiers {
            full_points: 720,
            bucket_points: 144,
            bucket_seconds: 600,
        });
        let before = h.capacity_bytes();
        for i in 0..20_000u32 {
            h.push(p(i * 5, 1.0));
        }
        assert_eq!(h.capacity_bytes(), before);
        assert_eq!(std::mem::size_of::<Point>(), 28);
        assert!(before < 32 * 1024, "{before} bytes for a day of one VM");
    }
}
