//! Backup and snapshot schedules and retention: when a schedule is due (times in UTC), and
//! which backups of a VM a schedule's keep rules leave (Proxmox's prune rules: the last N,
//! and the newest of each of the last N days, ISO weeks and months that have one); the
//! names of scheduled snapshots and which of them go (the last N stay). Plain values.

use super::create_plan::{field, FieldError};
use serde::{Deserialize, Serialize};

const DAY: i64 = 86_400;

/// What a schedule makes of each VM it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// A backup into a backup target.
    #[default]
    Backup,
    /// A snapshot inside the VM's own disks.
    Snapshot,
}

impl ScheduleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleKind::Backup => "backup",
            ScheduleKind::Snapshot => "snapshot",
        }
    }
}

/// A snapshot schedule keeps the last N snapshots, N at least 1.
pub fn check_snapshot_keep(keep: &Keep) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    if keep.daily > 0 || keep.weekly > 0 || keep.monthly > 0 {
        errors.push(field(
            "keep_daily",
            "A snapshot schedule keeps the last N snapshots only: leave daily, weekly and monthly empty.",
        ));
    }
    if keep.last == 0 {
        errors.push(field("keep_last", "Keep at least one snapshot."));
    } else if keep.last > 100 {
        errors.push(field(
            "keep_last",
            "Keep at most 100 snapshots: each one holds every block changed since it in the VM's disks.",
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The name schedule `id` gives the snapshot it takes at `at` (unix seconds, UTC):
/// `auto-<id>-<YYYYMMDD>-<HHMMSS>`.
pub fn snapshot_name(id: i64, at: i64) -> String {
    let stamp = time::OffsetDateTime::from_unix_timestamp(at)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year][month][day]-[hour][minute][second]"
            ))
            .ok()
        })
        .unwrap_or_else(|| at.to_string());
    format!("auto-{id}-{stamp}")
}

/// Of a VM's snapshots (name, taken at), the ones schedule `id` took that go so that its
/// `keep_last` newest stay; oldest first. Snapshots it did not take are never named.
pub fn snapshots_beyond(id: i64, snapshots: &[(String, i64)], keep_last: u32) -> Vec<String> {
    let prefix = format!("auto-{id}-");
    let mut ours: Vec<&(String, i64)> = snapshots
        .iter()
        .filter(|(n, _)| n.starts_with(&prefix))
        .collect();
    ours.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    let extra = ours.len().saturating_sub(keep_last as usize);
    ours.into_iter()
        .take(extra)
        .map(|(n, _)| n.clone())
        .collect()
}

/// How often a schedule runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Every {
    Daily,
    Weekly,
}

/// What a schedule keeps of each VM's backups in its target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Keep {
    #[serde(default)]
    pub last: u32,
    #[serde(default)]
    pub daily: u32,
    #[serde(default)]
    pub weekly: u32,
    #[serde(default)]
    pub monthly: u32,
}

impl Keep {
    pub fn is_empty(&self) -> bool {
        self.last + self.daily + self.weekly + self.monthly == 0
    }
}

/// A schedule's timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub every: Every,
    /// Weekly: the day, 0 Monday … 6 Sunday.
    pub weekday: u32,
    /// Minutes after midnight, UTC.
    pub at_minute: u32,
}

/// Checks a schedule's timing and keep rules.
pub fn check(timing: &Timing, keep: &Keep) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    if timing.at_minute >= 24 * 60 {
        errors.push(field("at", "Give the time as HH:MM (UTC), 00:00 to 23:59."));
    }
    if timing.weekday > 6 {
        errors.push(field("weekday", "Choose a day of the week."));
    }
    if keep.is_empty() {
        errors.push(field(
            "keep_last",
            "Keep at least one backup (last, daily, weekly or monthly).",
        ));
    }
    if [keep.last, keep.daily, keep.weekly, keep.monthly]
        .iter()
        .any(|k| *k > 1000)
    {
        errors.push(field("keep_last", "Keep at most 1,000 of each."));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// `HH:MM` → minutes after midnight.
pub fn parse_time(text: &str) -> Option<u32> {
    let (h, m) = text.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// Day number (days since 1970-01-01, UTC) of a Unix time.
fn day_of(t: i64) -> i64 {
    t.div_euclid(DAY)
}

/// 0 Monday … 6 Sunday (1970-01-01 was a Thursday).
fn weekday_of_day(day: i64) -> u32 {
    (day + 3).rem_euclid(7) as u32
}

/// The first time the schedule runs strictly after `after`.
pub fn next_run_after(t: &Timing, after: i64) -> i64 {
    let mut day = day_of(after);
    loop {
        let slot = day * DAY + i64::from(t.at_minute) * 60;
        let day_ok = t.every == Every::Daily || weekday_of_day(day) == t.weekday;
        if slot > after && day_ok {
            return slot;
        }
        day += 1;
    }
}

/// Whether the schedule should run at `now`: a slot passed since it last ran (or since it
/// was made). A schedule missed while virtdeck was down is due once, not once per slot.
pub fn due(t: &Timing, last_run: Option<i64>, created_at: i64, now: i64) -> bool {
    next_run_after(t, last_run.unwrap_or(created_at)) <= now
}

/// Year and month of a day number (proleptic Gregorian, UTC).
fn year_month(day: i64) -> (i64, u32) {
    // Howard Hinnant's days-to-civil.
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month)
}

/// The ISO week a day is in, as the day number of its Monday.
fn week_of(day: i64) -> i64 {
    day - i64::from(weekday_of_day(day))
}

/// The ids (of `backups`: (id, created_at), any order) the keep rules leave.
pub fn kept(backups: &[(i64, i64)], keep: &Keep) -> Vec<i64> {
    let mut newest_first: Vec<(i64, i64)> = backups.to_vec();
    newest_first.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
    let mut out: Vec<i64> = newest_first
        .iter()
        .take(keep.last as usize)
        .map(|b| b.0)
        .collect();
    let mut by_period = |n: u32, period: &dyn Fn(i64) -> i64| {
        let mut seen = Vec::new();
        for (id, at) in &newest_first {
            if seen.len() >= n as usize {
                break;
            }
            let p = period(day_of(*at));
            if !seen.contains(&p) {
                seen.push(p);
                if !out.contains(id) {
                    out.push(*id);
                }
            }
        }
    };
    by_period(keep.daily, &|d| d);
    by_period(keep.weekly, &week_of);
    by_period(keep.monthly, &|d| {
        let (y, m) = year_month(d);
        y * 12 + i64::from(m)
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-12-02 (a Wednesday) 00:00 UTC.
    const WED: i64 = 1_796_169_600;

    #[test]
    fn scheduled_snapshots_are_named_by_time_and_only_a_schedules_own_go() {
        assert_eq!(
            snapshot_name(3, WED + 2 * 3600 + 5),
            "auto-3-20261202-020005"
        );
        assert_eq!(snapshot_name(12, 0), "auto-12-19700101-000000");
        assert_eq!(
            snapshot_name(1, WED - 1),
            "auto-1-20261201-235959",
            "the day before, at its last second"
        );
        let snaps = vec![
            ("auto-3-20261202-020000".to_string(), WED + 7200),
            ("before-upgrade".to_string(), WED),
            ("auto-3-20261201-020000".to_string(), WED - DAY + 7200),
            ("auto-30-20261130-020000".to_string(), WED - 2 * DAY),
            ("auto-3-20261130-020000".to_string(), WED - 2 * DAY + 7200),
        ];
        assert_eq!(
            snapshots_beyond(3, &snaps, 1),
            vec!["auto-3-20261130-020000", "auto-3-20261201-020000"]
        );
        assert!(snapshots_beyond(3, &snaps, 3).is_empty());
        assert!(snapshots_beyond(7, &snaps, 1).is_empty());
    }

    #[test]
    fn snapshot_schedules_keep_the_last_n_only() {
        let last = |n| Keep {
            last: n,
            ..Keep::default()
        };
        assert!(check_snapshot_keep(&last(3)).is_ok());
        let fields = |k: &Keep| -> Vec<String> {
            check_snapshot_keep(k)
                .unwrap_err()
                .into_iter()
                .map(|e| e.field.to_string())
                .collect()
        };
        assert_eq!(fields(&last(0)), vec!["keep_last"]);
        assert_eq!(fields(&last(101)), vec!["keep_last"]);
        assert_eq!(
            fields(&Keep {
                last: 2,
                weekly: 1,
                ..Keep::default()
            }),
            vec!["keep_daily"]
        );
    }

    #[test]
    fn calendar_facts() {
        assert_eq!(weekday_of_day(day_of(WED)), 2, "Wednesday");
        assert_eq!(year_month(day_of(WED)), (2026, 12));
        assert_eq!(year_month(0), (1970, 1));
        assert_eq!(year_month(day_of(WED) - 2), (2026, 11));
        assert_eq!(parse_time("02:30"), Some(150));
        assert_eq!(parse_time("24:00"), None);
        assert_eq!(parse_time("2"), None);
    }

    #[test]
    fn daily_and_weekly_slots_and_a_missed_one_runs_once() {
        let daily = Timing {
            every: Every::Daily,
            weekday: 0,
            at_minute: 150,
        };
        assert_eq!(next_run_after(&daily, WED), WED + 150 * 60);
        assert_eq!(next_run_after(&daily, WED + 150 * 60), WED + DAY + 150 * 60);
        let weekly = Timing {
            every: Every::Weekly,
            weekday: 4, // Friday
            at_minute: 0,
        };
        assert_eq!(next_run_after(&weekly, WED), WED + 2 * DAY);
        // Made Wednesday; down until Sunday: due once, then not until the next slot.
        assert!(!due(&daily, None, WED, WED + 100 * 60));
        assert!(due(&daily, None, WED, WED + 4 * DAY));
        assert!(!due(&daily, Some(WED + 4 * DAY), WED, WED + 4 * DAY + 60));
    }

    #[test]
    fn keep_rules_follow_prune_semantics() {
        // Two backups a day for ten days.
        let all: Vec<(i64, i64)> = (0..20)
            .map(|i| (i + 1, WED - 10 * DAY + i * DAY / 2 + 3600))
            .collect();
        let keep_last = kept(
            &all,
            &Keep {
                last: 2,
                ..Keep::default()
            },
        );
        assert_eq!(keep_last, vec![20, 19]);
        let daily = kept(
            &all,
            &Keep {
                daily: 3,
                ..Keep::default()
            },
        );
        // The newest of each of the last three days.
        assert_eq!(daily, vec![20, 18, 16]);
        let both = kept(
            &all,
            &Keep {
                last: 1,
                daily: 2,
                ..Keep::default()
            },
        );
        assert_eq!(both, vec![20, 18]);
        let monthly = kept(
            &all,
            &Keep {
                monthly: 2,
                ..Keep::default()
            },
        );
        // December's newest, then November's.
        assert_eq!(monthly.len(), 2);
        assert_eq!(monthly[0], 20);
        assert!(check(
            &Timing {
                every: Every::Daily,
                weekday: 0,
                at_minute: 0
            },
            &Keep::default()
        )
        .is_err());
    }
}
