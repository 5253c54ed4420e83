//! Compute units: the host, after a reserve for itself, split into N equal parts.
//!
//! One unit is (usable vCPUs / N, usable memory / N, pool capacity / N). A VM takes the
//! smallest whole number of units that covers each of its resources.

use serde::{Deserialize, Serialize};

/// How the host is divided. Part of the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CapacityPolicy {
    /// Into how many units the host is split.
    pub units: u32,
    /// CPUs kept for the host itself.
    pub reserve_cpus: u32,
    /// Memory kept for the host itself.
    pub reserve_memory_mib: u64,
    /// vCPUs offered per usable physical CPU (nova's cpu_allocation_ratio; memory is
    /// never overcommitted).
    pub cpu_allocation_ratio: f64,
}

impl Default for CapacityPolicy {
    fn default() -> Self {
        CapacityPolicy {
            units: 12,
            reserve_cpus: 1,
            reserve_memory_mib: 2048,
            cpu_allocation_ratio: 4.0,
        }
    }
}

/// Why a policy cannot be applied to a host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapacityError {
    #[error("capacity.units must be at least 1")]
    NoUnits,
    #[error("the host reserve ({reserve_cpus} CPUs, {reserve_memory_mib} MiB) leaves nothing for VMs on a host with {cpus} CPUs and {memory_mib} MiB")]
    ReserveTooLarge {
        reserve_cpus: u32,
        reserve_memory_mib: u64,
        cpus: u32,
        memory_mib: u64,
    },
    #[error("capacity.cpu_allocation_ratio must be between 0.1 and 16")]
    BadRatio,
}

/// What a host offers to VMs after the reserve, and the size of one unit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct UnitModel {
    pub units_total: u32,
    pub usable_vcpus: u32,
    pub usable_memory_mib: u64,
}

/// A VM's size in resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Size {
    pub vcpus: u32,
    pub memory_mib: u64,
}

fn div_ceil_u64(a: u64, b: u64) -> u64 {
    if b == 0 {
        return u64::MAX;
    }
    a.div_ceil(b)
}

impl UnitModel {
    pub fn new(
        policy: &CapacityPolicy,
        host_cpus: u32,
        host_memory_mib: u64,
    ) -> Result<Self, CapacityError> {
        if policy.units == 0 {
            return Err(CapacityError::NoUnits);
        }
        if !(0.1..=16.0).contains(&policy.cpu_allocation_ratio) {
            return Err(CapacityError::BadRatio);
        }
        let cpus = host_cpus.saturating_sub(policy.reserve_cpus);
        let memory = host_memory_mib.saturating_sub(policy.reserve_memory_mib);
        let usable_vcpus = (f64::from(cpus) * policy.cpu_allocation_ratio).floor() as u32;
        if usable_vcpus == 0 || memory == 0 {
            return Err(CapacityError::ReserveTooLarge {
                reserve_cpus: policy.reserve_cpus,
                reserve_memory_mib: policy.reserve_memory_mib,
                cpus: host_cpus,
                memory_mib: host_memory_mib,
            });
        }
        Ok(UnitModel {
            units_total: policy.units,
            usable_vcpus,
            usable_memory_mib: memory,
        })
    }

    /// vCPUs in one unit (may be fractional).
    pub fn vcpus_per_unit(&self) -> f64 {
        f64::from(self.usable_vcpus) / f64::from(self.units_total)
    }

    pub fn memory_mib_per_unit(&self) -> u64 {
        self.usable_memory_mib / u64::from(self.units_total)
    }

    /// The size `units` units give: whole vCPUs (at least 1) and MiB.
    pub fn size_of(&self, units: u32) -> Size {
        let n = u64::from(self.units_total);
        let vcpus = (u64::from(units) * u64::from(self.usable_vcpus) / n).max(1) as u32;
        let memory_mib = u64::from(units) * self.usable_memory_mib / n;
        Size { vcpus, memory_mib }
    }

    /// The fewest units that hold `size` (counted on CPU and memory).
    pub fn units_for(&self, size: Size) -> u32 {
        let n = u64::from(self.units_total);
        let by_cpu = div_ceil_u64(u64::from(size.vcpus) * n, u64::from(self.usable_vcpus));
        let by_mem = div_ceil_u64(size.memory_mib * n, self.usable_memory_mib);
        by_cpu.max(by_mem).min(u64::from(u32::MAX)) as u32
    }

    /// Disk GiB that `units` units give in a pool of `pool_capacity_gib`.
    pub fn disk_gib_of(&self, units: u32, pool_capacity_gib: u64) -> u64 {
        u64::from(units) * pool_capacity_gib / u64::from(self.units_total)
    }

    /// Units a disk of `disk_gib` takes in a pool of `pool_capacity_gib`.
    pub fn units_for_disk(&self, disk_gib: u64, pool_capacity_gib: u64) -> u32 {
        div_ceil_u64(disk_gib * u64::from(self.units_total), pool_capacity_gib)
            .min(u64::from(u32::MAX)) as u32
    }
}

/// One VM's claim on the host.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Claim {
    pub vm: String,
    pub units: u32,
    /// False for VMs defined outside virtdeck, counted by their real size.
    pub managed: bool,
}

/// The host's units: total, used, free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UnitUsage {
    pub total: u32,
    pub used: u32,
    pub free: u32,
    /// More used than exist (VMs defined outside virtdeck can overcommit).
    pub over: u32,
}

pub fn usage(model: &UnitModel, claims: &[Claim]) -> UnitUsage {
    let used: u32 = claims
        .iter()
        .map(|c| c.units)
        .fold(0u32, u32::saturating_add);
    UnitUsage {
        total: model.units_total,
        used,
        free: model.units_total.saturating_sub(used),
        over: used.saturating_sub(model.units_total),
    }
}

/// Why a VM does not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    #[error("Not enough capacity: this VM needs {needed} unit{} but only {free} of {total} are free ({short} short). Pick a smaller size or free units by deleting a VM.", if *needed == 1 { "" } else { "s" })]
    Units {
        needed: u32,
        free: u32,
        total: u32,
        short: u32,
    },
    #[error("Not enough space in pool {pool}: the disk needs {needed_gib} GiB but {available_gib} GiB are available ({short_gib} GiB short).")]
    Disk {
        pool: String,
        needed_gib: u64,
        available_gib: u64,
        short_gib: u64,
    },
}

/// Admits `needed` units against current claims, and a new disk against the pool.
pub fn admit(
    model: &UnitModel,
    claims: &[Claim],
    needed: u32,
    disk: Option<(&str, u64, u64)>,
) -> Result<(), AdmissionError> {
    let u = usage(model, claims);
    if needed > u.free {
        return Err(AdmissionError::Units {
            needed,
            free: u.free,
            total: u.total,
            short: needed - u.free,
        });
    }
    if let Some((pool, needed_gib, available_gib)) = disk {
        if needed_gib > available_gib {
            return Err(AdmissionError::Disk {
                pool: pool.to_string(),
                needed_gib,
                available_gib,
                short_gib: needed_gib - available_gib,
            });
        }
    }
    Ok(())
}

/// "1 unit", "3 units".
pub fn units_text(n: u32) -> String {
    if n == 1 {
        "1 unit".to_string()
    } else {
        format!("{n} units")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> UnitModel {
        // 16 CPUs, 64 GiB; reserve 1 CPU and 2 GiB; no CPU overcommit:
        // 12 units of 1.25 vCPUs and 5290 MiB.
        let p = CapacityPolicy {
            cpu_allocation_ratio: 1.0,
            ..Default::default()
        };
        UnitModel::new(&p, 16, 65536).unwrap()
    }

    #[test]
    fn default_policy_overcommits_cpu_four_times_like_nova() {
        let m = UnitModel::new(&CapacityPolicy::default(), 16, 65536).unwrap();
        assert_eq!(m.usable_vcpus, 60);
        assert_eq!(
            m.size_of(1),
            Size {
                vcpus: 5,
                memory_mib: 5290
            }
        );
    }

    #[test]
    fn a_unit_is_the_usable_host_divided_by_n() {
        let m = demo();
        assert_eq!(m.usable_vcpus, 15);
        assert_eq!(m.usable_memory_mib, 63488);
        assert_eq!(m.memory_mib_per_unit(), 5290);
        assert_eq!(
            m.size_of(1),
            Size {
                vcpus: 1,
                memory_mib: 5290
            }
        );
        assert_eq!(
            m.size_of(4),
            Size {
                vcpus: 5,
                memory_mib: 21162
            }
        );
        assert_eq!(
            m.size_of(12),
            Size {
                vcpus: 15,
                memory_mib: 63488
            }
        );
    }

    #[test]
    fn units_round_up_on_the_scarcest_resource() {
        let m = demo();
        assert_eq!(
            m.units_for(Size {
                vcpus: 1,
                memory_mib: 512
            }),
            1
        );
        assert_eq!(
            m.units_for(Size {
                vcpus: 2,
                memory_mib: 512
            }),
            2,
            "2 vCPUs > 1.25"
        );
        assert_eq!(
            m.units_for(Size {
                vcpus: 1,
                memory_mib: 8192
            }),
            2,
            "8 GiB > 5290 MiB"
        );
        assert_eq!(
            m.units_for(Size {
                vcpus: 4,
                memory_mib: 8192
            }),
            4
        );
        for u in 1..=12 {
            assert_eq!(
                m.units_for(m.size_of(u)),
                u,
                "size_of and units_for agree at {u}"
            );
        }
    }

    #[test]
    fn overcommit_ratio_multiplies_cpus_only() {
        let p = CapacityPolicy {
            cpu_allocation_ratio: 4.0,
            ..Default::default()
        };
        let m = UnitModel::new(&p, 16, 65536).unwrap();
        assert_eq!(m.usable_vcpus, 60);
        assert_eq!(m.usable_memory_mib, 63488);
    }

    #[test]
    fn disk_units_follow_the_pool() {
        let m = demo();
        assert_eq!(m.disk_gib_of(1, 1200), 100);
        assert_eq!(m.units_for_disk(100, 1200), 1);
        assert_eq!(m.units_for_disk(101, 1200), 2);
    }

    #[test]
    fn admission_says_what_is_short_and_by_how_much() {
        let m = demo();
        let claims = vec![
            Claim {
                vm: "a".into(),
                units: 8,
                managed: true,
            },
            Claim {
                vm: "b".into(),
                units: 2,
                managed: false,
            },
        ];
        assert!(admit(&m, &claims, 2, None).is_ok());
        let e = admit(&m, &claims, 3, None).unwrap_err();
        assert_eq!(
            e,
            AdmissionError::Units {
                needed: 3,
                free: 2,
                total: 12,
                short: 1
            }
        );
        assert!(
            e.to_string()
                .contains("needs 3 units but only 2 of 12 are free (1 short)"),
            "{e}"
        );
        let e = admit(&m, &claims, 1, Some(("default", 50, 20))).unwrap_err();
        assert!(e.to_string().contains("30 GiB short"), "{e}");
    }

    #[test]
    fn unmanaged_overcommit_is_reported_not_hidden() {
        let m = demo();
        let claims = vec![Claim {
            vm: "big".into(),
            units: 15,
            managed: false,
        }];
        let u = usage(&m, &claims);
        assert_eq!(
            u,
            UnitUsage {
                total: 12,
                used: 15,
                free: 0,
                over: 3
            }
        );
    }

    #[test]
    fn bad_policies_are_refused() {
        let p = CapacityPolicy {
            units: 0,
            ..Default::default()
        };
        assert_eq!(UnitModel::new(&p, 16, 65536), Err(CapacityError::NoUnits));
        let p = CapacityPolicy {
            reserve_cpus: 16,
            ..Default::default()
        };
        assert!(matches!(
            UnitModel::new(&p, 16, 65536),
            Err(CapacityError::ReserveTooLarge { .. })
        ));
    }
}
