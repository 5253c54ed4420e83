//! Login throttling: pure decision from failure counts.

use crate::config::LoginConfig;

/// What to do with a login attempt, decided before the password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// Check the password now.
    Allow,
    /// Check it, but answer only after this many milliseconds.
    Slow { delay_ms: u64 },
    /// Refuse without checking until `until` (unix seconds).
    Locked { until: i64 },
}

/// Failure history of the account and of the address within the window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Failures {
    pub user_count: u32,
    pub user_latest: Option<i64>,
    pub address_count: u32,
    pub address_latest: Option<i64>,
}

pub fn decide(cfg: &LoginConfig, f: Failures, now: i64) -> Throttle {
    let lock = cfg.lock_seconds as i64;
    let locked_until = |count: u32, threshold: u32, latest: Option<i64>| {
        (count >= threshold)
            .then(|| latest.map(|t| t + lock))
            .flatten()
            .filter(|until| *until > now)
    };
    let user_lock = locked_until(f.user_count, cfg.lock_after_failures, f.user_latest);
    let addr_lock = locked_until(
        f.address_count,
        cfg.address_lock_after_failures,
        f.address_latest,
    );
    if let Some(until) = user_lock.max(addr_lock) {
        return Throttle::Locked { until };
    }
    if f.user_count.max(f.address_count) >= cfg.slow_after_failures {
        return Throttle::Slow {
            delay_ms: cfg.slow_delay_ms,
        };
    }
    Throttle::Allow
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LoginConfig {
        LoginConfig {
            window_seconds: 900,
            slow_after_failures: 3,
            slow_delay_ms: 500,
            lock_after_failures: 5,
            address_lock_after_failures: 20,
            lock_seconds: 600,
            max_parallel_password_checks: 2,
        }
    }

    #[test]
    fn escalates_from_allow_to_slow_to_locked() {
        let mut f = Failures {
            user_count: 2,
            user_latest: Some(100),
            ..Default::default()
        };
        assert_eq!(decide(&cfg(), f, 101), Throttle::Allow);
        f.user_count = 3;
        assert_eq!(decide(&cfg(), f, 101), Throttle::Slow { delay_ms: 500 });
        f.user_count = 5;
        assert_eq!(decide(&cfg(), f, 101), Throttle::Locked { until: 700 });
        assert_eq!(
            decide(&cfg(), f, 701),
            Throttle::Slow { delay_ms: 500 },
            "lock expired"
        );
    }

    #[test]
    fn an_address_spraying_many_accounts_is_locked() {
        let f = Failures {
            address_count: 20,
            address_latest: Some(50),
            ..Default::default()
        };
        assert_eq!(decide(&cfg(), f, 60), Throttle::Locked { until: 650 });
    }
}
