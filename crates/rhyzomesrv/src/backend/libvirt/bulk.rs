//! `virConnectGetAllDomainStats`: the counters of every active domain in one RPC (plus one
//! `virDomainListGetStats` for the disks of the domains that have some).
//!
//! The `virt` crate (0.5) exposes these calls only as raw record pointers that it never frees,
//! so they are made here through `virt::sys`: the records are read into owned values and each
//! list is released with `virDomainStatsRecordListFree` when it drops, whatever happens.

use crate::backend::counters::{self, DomainCounters, ParamValue};
use crate::backend::DOMAIN_PREFIX;
use std::collections::HashSet;
use std::ffi::{c_char, CStr};
use virt::connect::Connect;
use virt::error::Error as VirtError;
use virt::sys;

/// What is asked of libvirt for every domain: CPU time, memory (the balloon group, which
/// libvirt fills from the domain's definition when it has no balloon device, as rhyzome's
/// guests do) and NICs. Left out on purpose, because each costs a QEMU monitor round trip per
/// domain (measured in docs/benchmarks.md: about 1 ms per guest under TCG for `vcpu`, 1.6 ms
/// for `block`): `vcpu` (the count is the instance's own, from the store) and `block`, which
/// is asked in a second call for the domains that have disks only ([`all_counters`]).
const STATS: u32 = sys::VIR_DOMAIN_STATS_CPU_TOTAL
    | sys::VIR_DOMAIN_STATS_BALLOON
    | sys::VIR_DOMAIN_STATS_INTERFACE;

/// A record list libvirt allocated, freed on drop whatever happens in between.
struct RecordList {
    records: *mut sys::virDomainStatsRecordPtr,
    count: usize,
}

impl RecordList {
    fn records(&self) -> impl Iterator<Item = &sys::_virDomainStatsRecord> {
        // SAFETY: libvirt returned `count` valid record pointers, alive until the list is
        // freed in `drop`, and the borrow of `self` keeps them from outliving it.
        (0..self.count).map(move |i| unsafe { &**self.records.add(i) })
    }
}

impl Drop for RecordList {
    fn drop(&mut self) {
        if !self.records.is_null() {
            // SAFETY: the list came from libvirt and is freed exactly once; no reference into
            // it outlives `self`.
            unsafe { sys::virDomainStatsRecordListFree(self.records) };
        }
    }
}

/// The counters of every active domain whose name carries rhyzome's prefix, with the disk
/// counters of those whose UUID is in `block_stats_of` (the daemon's instances with volumes).
/// Which of those domains the daemon owns is the caller's decision.
///
/// One bulk call for all domains; a second, `virDomainListGetStats` with the `block` group,
/// for the listed domains alone, so that guests without disks do not pay its monitor round
/// trip.
pub fn all_counters(
    conn: &Connect,
    block_stats_of: &HashSet<String>,
) -> Result<Vec<DomainCounters>, VirtError> {
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
    let list = RecordList {
        records,
        count: count as usize,
    };
    let mut out = Vec::with_capacity(list.count);
    let mut with_disks: Vec<sys::virDomainPtr> = Vec::new();
    for record in list.records() {
        // SAFETY: a record of a live list.
        if let Some(counters) = unsafe { read_record(record) } {
            if block_stats_of.contains(&counters.uuid) {
                with_disks.push(record.dom);
            }
            out.push(counters);
        }
    }
    if with_disks.is_empty() {
        return Ok(out);
    }
    with_disks.push(std::ptr::null_mut());
    let mut block_records: *mut sys::virDomainStatsRecordPtr = std::ptr::null_mut();
    // SAFETY: `with_disks` is a NULL-terminated array of domain pointers owned by `list`,
    // alive until it drops at the end of this function.
    let count = unsafe {
        sys::virDomainListGetStats(
            with_disks.as_mut_ptr(),
            sys::VIR_DOMAIN_STATS_BLOCK,
            &mut block_records,
            0,
        )
    };
    if count < 0 {
        // The CPU, memory and NIC counters are still good: report them without disks.
        tracing::warn!(error = %VirtError::last_error(), "no block statistics from libvirt");
        return Ok(out);
    }
    let blocks = RecordList {
        records: block_records,
        count: count as usize,
    };
    for record in blocks.records() {
        // SAFETY: a record of a live list.
        if let Some(counters) = unsafe { read_record(record) } {
            if let Some(d) = out.iter_mut().find(|d| d.uuid == counters.uuid) {
                d.blocks = counters.blocks;
            }
        }
    }
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
