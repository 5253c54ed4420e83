//! Usage counters in one bulk call: `virConnectGetAllDomainStats` for every VM, plus the
//! node's CPU and memory statistics. (virt 0.5's `get_all_domain_stats` leaks its list
//! and cannot read the parameters, so this uses libvirt's C API directly.)

use super::{call, HvResult};
use crate::domain::usage::{self, HostCounters, Stat, UsageSample, VmCounters};
use std::ffi::CStr;
use std::os::raw::{c_char, c_int};
use virt::connect::Connect;
use virt::sys;

/// The statistics groups virtdeck reads.
const GROUPS: u32 = sys::VIR_DOMAIN_STATS_STATE
    | sys::VIR_DOMAIN_STATS_CPU_TOTAL
    | sys::VIR_DOMAIN_STATS_BALLOON
    | sys::VIR_DOMAIN_STATS_VCPU
    | sys::VIR_DOMAIN_STATS_INTERFACE
    | sys::VIR_DOMAIN_STATS_BLOCK;

/// The list libvirt returned; freed (with its domain references) when dropped.
struct RecordList(*mut sys::virDomainStatsRecordPtr);

impl Drop for RecordList {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from virConnectGetAllDomainStats and is freed once.
            unsafe { sys::virDomainStatsRecordListFree(self.0) };
        }
    }
}

fn field_name(field: &[c_char]) -> String {
    // SAFETY: libvirt NUL-terminates field names within the fixed-size array; the
    // slice bound keeps a read inside it either way.
    let bytes: Vec<u8> = field
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The whole-number parameters of one record, by name.
fn typed_params(params: *const sys::virTypedParameter, n: c_int) -> Vec<Stat> {
    if params.is_null() || n <= 0 {
        return Vec::new();
    }
    // SAFETY: libvirt gives `n` parameters at `params`, alive until the list is freed.
    let params = unsafe { std::slice::from_raw_parts(params, n as usize) };
    params
        .iter()
        .filter_map(|p| {
            // SAFETY: the union member read is the one `type_` names.
            let value = unsafe {
                match p.type_ as u32 {
                    sys::VIR_TYPED_PARAM_INT => u64::try_from(p.value.i).ok(),
                    sys::VIR_TYPED_PARAM_UINT => Some(u64::from(p.value.ui)),
                    sys::VIR_TYPED_PARAM_LLONG => u64::try_from(p.value.l).ok(),
                    sys::VIR_TYPED_PARAM_ULLONG => Some(p.value.ul),
                    _ => None,
                }
            }?;
            Some((field_name(&p.field), value))
        })
        .collect()
}

fn vm_counters(conn: &Connect) -> HvResult<Vec<VmCounters>> {
    let mut list: *mut sys::virDomainStatsRecordPtr = std::ptr::null_mut();
    // SAFETY: a live connection; libvirt allocates the list and we free it in RecordList.
    let n = unsafe { sys::virConnectGetAllDomainStats(conn.as_ptr(), GROUPS, &mut list, 0) };
    let list = RecordList(list);
    if n < 0 {
        return Err(call("read VM statistics")(virt::error::Error::last_error()));
    }
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n as usize {
        // SAFETY: the list holds `n` records followed by NULL.
        let rec = unsafe { *list.0.add(i) };
        if rec.is_null() {
            break;
        }
        // SAFETY: a record from the list, alive until the list is freed.
        let rec = unsafe { &*rec };
        let name_ptr = unsafe { sys::virDomainGetName(rec.dom) };
        if name_ptr.is_null() {
            continue;
        }
        // SAFETY: libvirt's NUL-terminated name, owned by the domain object.
        let name = unsafe { CStr::from_ptr(name_ptr) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: as above; an inactive VM has no id (u32::MAX).
        let id = unsafe { sys::virDomainGetID(rec.dom) };
        let run_id = (id != u32::MAX).then_some(id);
        let stats = typed_params(rec.params, rec.nparams);
        out.push(usage::vm_counters(&name, run_id, &stats));
    }
    Ok(out)
}

/// Reads node statistics of `T` (virNodeCPUStats or virNodeMemoryStats, same layout):
/// first how many, then the values.
fn node_stats<T: Copy + Default>(
    conn: &Connect,
    get: unsafe extern "C" fn(sys::virConnectPtr, c_int, *mut T, *mut c_int, u32) -> c_int,
    fields: impl Fn(&T) -> (&[c_char], u64),
) -> Option<Vec<Stat>> {
    let mut n: c_int = 0;
    // SAFETY: a NULL array asks libvirt for the number of parameters.
    let r = unsafe { get(conn.as_ptr(), -1, std::ptr::null_mut(), &mut n, 0) };
    if r < 0 || n <= 0 {
        return None;
    }
    let mut buf = vec![T::default(); n as usize];
    // SAFETY: `buf` holds `n` parameters.
    let r = unsafe { get(conn.as_ptr(), -1, buf.as_mut_ptr(), &mut n, 0) };
    if r < 0 {
        return None;
    }
    Some(
        buf.iter()
            .take(n.max(0) as usize)
            .map(|p| {
                let (f, v) = fields(p);
                (field_name(f), v)
            })
            .collect(),
    )
}

#[derive(Clone, Copy)]
#[repr(transparent)]
struct CpuStat(sys::virNodeCPUStats);
impl Default for CpuStat {
    fn default() -> Self {
        CpuStat(sys::virNodeCPUStats {
            field: [0; 80],
            value: 0,
        })
    }
}
#[derive(Clone, Copy)]
#[repr(transparent)]
struct MemStat(sys::virNodeMemoryStats);
impl Default for MemStat {
    fn default() -> Self {
        MemStat(sys::virNodeMemoryStats {
            field: [0; 80],
            value: 0,
        })
    }
}

unsafe extern "C" fn cpu_stats(
    c: sys::virConnectPtr,
    cpu: c_int,
    p: *mut CpuStat,
    n: *mut c_int,
    f: u32,
) -> c_int {
    // SAFETY: CpuStat is a transparent wrapper of virNodeCPUStats.
    unsafe { sys::virNodeGetCPUStats(c, cpu, p as *mut sys::virNodeCPUStats, n, f) }
}

unsafe extern "C" fn memory_stats(
    c: sys::virConnectPtr,
    cell: c_int,
    p: *mut MemStat,
    n: *mut c_int,
    f: u32,
) -> c_int {
    // SAFETY: MemStat is a transparent wrapper of virNodeMemoryStats.
    unsafe { sys::virNodeGetMemoryStats(c, cell, p as *mut sys::virNodeMemoryStats, n, f) }
}

fn host_counters(conn: &Connect) -> HvResult<HostCounters> {
    let node = conn
        .node_info()
        .map_err(call("read the host's CPU and memory"))?;
    let cpu = node_stats(conn, cpu_stats, |s: &CpuStat| (&s.0.field[..], s.0.value))
        .and_then(|s| usage::host_cpu_times(&s));
    let memory_used_kib = node_stats(conn, memory_stats, |s: &MemStat| {
        (&s.0.field[..], s.0.value)
    })
    .and_then(|s| usage::host_memory_used_kib(&s))
    .or_else(|| {
        // Drivers without memory statistics (the test driver) still report free memory.
        conn.free_memory()
            .ok()
            .map(|free| node.memory.saturating_sub(free / 1024))
    });
    Ok(HostCounters {
        cpus: node.cpus,
        cpu_busy_ns: cpu.map(|c| c.0),
        cpu_total_ns: cpu.map(|c| c.1),
        memory_total_kib: node.memory,
        memory_used_kib,
    })
}

/// One sample of the host and every VM.
pub(super) fn usage_sample(conn: &Connect) -> HvResult<UsageSample> {
    let vms = vm_counters(conn)?;
    let host = host_counters(conn)?;
    Ok(UsageSample { host, vms })
}
