//! `virConnectGetAllDomainStats`: the counters of every active domain in one RPC.
//!
//! The `virt` crate (0.5) exposes this call only as raw record pointers that it never frees,
//! so it is made here through `virt::sys`: the records are read into owned values and the
//! list is released with `virDomainStatsRecordListFree` before returning, whatever happens.

use crate::backend::counters::{self, DomainCounters, ParamValue};
use crate::backend::DOMAIN_PREFIX;
use std::ffi::{c_char, CStr};
use virt::connect::Connect;
use virt::error::Error as VirtError;
use virt::sys;

/// What is asked of libvirt: CPU time, memory (the balloon group, which libvirt fills from
/// the domain's definition when it has no balloon device, as rhyzome's guests do) and NICs.
/// Left out on purpose, because each costs a QEMU monitor round trip per domain (measured in
/// docs/benchmarks.md: about 1 ms per guest under TCG for `vcpu`, 1.6 ms for `block`):
/// `vcpu` (the count is the instance's own, from the store) and `block` (rhyzome's guests
/// have no disks yet; when they do, ask `virDomainListGetStats` for those domains only).
const STATS: u32 = sys::VIR_DOMAIN_STATS_CPU_TOTAL
    | sys::VIR_DOMAIN_STATS_BALLOON
    | sys::VIR_DOMAIN_STATS_INTERFACE;

/// The counters of every active domain whose name carries rhyzome's prefix. Which of those
/// the daemon owns is the caller's decision.
pub fn all_counters(conn: &Connect) -> Result<Vec<DomainCounters>, VirtError> {
    let mut records: *mut sys::virDomainStatsRecordPtr = std::ptr::null_mut();
    // SAFETY: `conn` is a live connection for the duration of the call; libvirt allocates
    // the NULL-terminated record list and hands it over in `records`.
    let count = unsafe {
        sys::virConnectGetAllDomainStats(
            conn.as_ptr(),
            STATS,
            &mut records,
            sys::VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE,
        )
    };
    if count < 0 {
        return Err(VirtError::last_error());
    }
    let mut out = Vec::with_capacity(count as usize);
    for i in 0..count as usize {
        // SAFETY: libvirt returned `count` valid record pointers, alive until the list is
        // freed below.
        let record = unsafe { &**records.add(i) };
        if let Some(counters) = unsafe { read_record(record) } {
            out.push(counters);
        }
    }
    // SAFETY: the list came from virConnectGetAllDomainStats and is freed exactly once; no
    // reference into it outlives this point (everything above was copied).
    unsafe { sys::virDomainStatsRecordListFree(records) };
    Ok(out)
}

/// Copies one record, or `None` for a domain that is not rhyzome's by name.
///
/// # Safety
/// `record` must be a record of a list returned by `virConnectGetAllDomainStats` and not yet
/// freed.
unsafe fn read_record(record: &sys::_virDomainStatsRecord) -> Option<DomainCounters> {
    let name_ptr = unsafe { sys::virDomainGetName(record.dom) };
    if name_ptr.is_null() {
        return None;
    }
    let name = unsafe { CStr::from_ptr(name_ptr) }
        .to_string_lossy()
        .into_owned();
    if !name.starts_with(DOMAIN_PREFIX) {
        return None;
    }
    let mut uuid_buf = [0 as c_char; sys::VIR_UUID_STRING_BUFLEN as usize];
    if unsafe { sys::virDomainGetUUIDString(record.dom, uuid_buf.as_mut_ptr()) } != 0 {
        return None;
    }
    let uuid = unsafe { CStr::from_ptr(uuid_buf.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    let n = usize::try_from(record.nparams).unwrap_or(0);
    let mut params = Vec::with_capacity(n);
    for i in 0..n {
        let p = unsafe { &*record.params.add(i) };
        let key = unsafe { CStr::from_ptr(p.field.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: the union member read is the one `type_` names.
        let value = unsafe {
            match p.type_ as u32 {
                sys::VIR_TYPED_PARAM_INT => ParamValue::Signed(p.value.i.into()),
                sys::VIR_TYPED_PARAM_UINT => ParamValue::Number(p.value.ui.into()),
                sys::VIR_TYPED_PARAM_LLONG => ParamValue::Signed(p.value.l),
                sys::VIR_TYPED_PARAM_ULLONG => ParamValue::Number(p.value.ul),
                sys::VIR_TYPED_PARAM_DOUBLE => ParamValue::Float(p.value.d),
                sys::VIR_TYPED_PARAM_BOOLEAN => ParamValue::Number(u64::from(p.value.b != 0)),
                sys::VIR_TYPED_PARAM_STRING if !p.value.s.is_null() => {
                    ParamValue::Text(CStr::from_ptr(p.value.s).to_string_lossy().into_owned())
                }
                _ => continue,
            }
        };
        params.push((key, value));
    }
    Some(counters::from_params(&uuid, &name, &params))
}
