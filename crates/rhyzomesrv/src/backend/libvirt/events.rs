//! libvirt's event loop, and the C callbacks that turn its lifecycle and connection-close
//! events into [`Notice`]s.
//!
//! libvirt delivers events (and runs keepalives) only while an event loop runs: one process-
//! wide thread, started before the first connection, runs `virEventRunDefaultImpl` forever.
//! The callbacks run on that thread; they copy what they need and hand it to the sink, which
//! must not block. The `virt` crate has no safe wrapper for domain events, hence the FFI here;
//! every pointer handed to libvirt is freed by libvirt through the matching free callback.

use super::super::{BackendError, Notice, NoticeSink};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use virt::connect::Connect;
use virt::error::Error as VirtError;
use virt::sys;

/// Starts libvirt's default event loop on a thread of its own, once per process.
pub fn ensure_event_loop() -> Result<(), BackendError> {
    static STARTED: OnceLock<Result<(), String>> = OnceLock::new();
    STARTED
        .get_or_init(|| {
            virt::event::event_register_default_impl().map_err(|e| e.message().to_string())?;
            std::thread::Builder::new()
                .name("libvirt-events".into())
                .spawn(|| loop {
                    if let Err(e) = virt::event::event_run_default_impl() {
                        tracing::warn!(error = %e.message(), "libvirt event loop iteration failed");
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                })
                .map_err(|e| e.to_string())?;
            Ok(())
        })
        .clone()
        .map_err(BackendError::Other)
}

fn event_name(event: c_int) -> &'static str {
    match event as sys::virDomainEventType {
        sys::VIR_DOMAIN_EVENT_DEFINED => "defined",
        sys::VIR_DOMAIN_EVENT_UNDEFINED => "undefined",
        sys::VIR_DOMAIN_EVENT_STARTED => "started",
        sys::VIR_DOMAIN_EVENT_SUSPENDED => "suspended",
        sys::VIR_DOMAIN_EVENT_RESUMED => "resumed",
        sys::VIR_DOMAIN_EVENT_STOPPED => "stopped",
        sys::VIR_DOMAIN_EVENT_SHUTDOWN => "shutdown",
        sys::VIR_DOMAIN_EVENT_PMSUSPENDED => "pmsuspended",
        sys::VIR_DOMAIN_EVENT_CRASHED => "crashed",
        _ => "unknown",
    }
}

/// libvirt's detail of an event; for `stopped`, whether someone destroyed the domain (a
/// `virDomainDestroy` call: `virsh destroy`, another tool, or this daemon) or the guest ended.
fn detail_name(event: c_int, detail: c_int) -> &'static str {
    if event as sys::virDomainEventType != sys::VIR_DOMAIN_EVENT_STOPPED {
        return "";
    }
    match detail as sys::virDomainEventStoppedDetailType {
        sys::VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN => "shutdown",
        sys::VIR_DOMAIN_EVENT_STOPPED_DESTROYED => "destroyed",
        sys::VIR_DOMAIN_EVENT_STOPPED_CRASHED => "crashed",
        sys::VIR_DOMAIN_EVENT_STOPPED_MIGRATED => "migrated",
        sys::VIR_DOMAIN_EVENT_STOPPED_SAVED => "saved",
        sys::VIR_DOMAIN_EVENT_STOPPED_FAILED => "failed",
        _ => "other",
    }
}

/// libvirt's `virConnectDomainEventCallback` for `VIR_DOMAIN_EVENT_ID_LIFECYCLE`.
unsafe extern "C" fn on_lifecycle(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    event: c_int,
    detail: c_int,
    opaque: *mut c_void,
) -> c_int {
    // SAFETY: `opaque` is the `NoticeSink` boxed in `register_lifecycle`, alive until
    // libvirt calls `free_sink`; `dom` is valid for the duration of the callback.
    let sink = unsafe { &*(opaque as *const NoticeSink) };
    let mut buf = [0 as c_char; sys::VIR_UUID_STRING_BUFLEN as usize];
    if unsafe { sys::virDomainGetUUIDString(dom, buf.as_mut_ptr()) } == 0 {
        let uuid = unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        sink(Notice::Lifecycle {
            uuid,
            event: event_name(event).to_string(),
            detail: detail_name(event, detail).to_string(),
        });
    }
    0
}

unsafe extern "C" fn free_sink(opaque: *mut c_void) {
    // SAFETY: created by Box::into_raw in `register_lifecycle`; libvirt calls this once.
    drop(unsafe { Box::from_raw(opaque as *mut NoticeSink) });
}

/// Subscribes `sink` to lifecycle events of every domain on `conn`; returns the callback id.
pub fn register_lifecycle(conn: &Connect, sink: NoticeSink) -> Result<c_int, VirtError> {
    type LifecycleCallback = unsafe extern "C" fn(
        sys::virConnectPtr,
        sys::virDomainPtr,
        c_int,
        c_int,
        *mut c_void,
    ) -> c_int;
    let opaque = Box::into_raw(Box::new(sink)) as *mut c_void;
    // SAFETY: libvirt calls a lifecycle callback with exactly this signature; the generic
    // type in its API is only a placeholder that every event-specific callback is cast to.
    let generic: sys::virConnectDomainEventGenericCallback = Some(unsafe {
        std::mem::transmute::<
            LifecycleCallback,
            unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void),
        >(on_lifecycle)
    });
    // SAFETY: `conn` is a live connection; on failure libvirt does not keep `opaque`.
    let id = unsafe {
        sys::virConnectDomainEventRegisterAny(
            conn.as_ptr(),
            std::ptr::null_mut(),
            sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE as c_int,
            generic,
            opaque,
            Some(free_sink),
        )
    };
    if id < 0 {
        // SAFETY: libvirt did not take ownership.
        drop(unsafe { Box::from_raw(opaque as *mut NoticeSink) });
        return Err(VirtError::last_error());
    }
    Ok(id)
}

unsafe extern "C" fn on_close(_conn: sys::virConnectPtr, reason: c_int, opaque: *mut c_void) {
    // SAFETY: `opaque` is the Arc<AtomicBool> leaked in `watch_close`, alive until `free_flag`.
    let flag = unsafe { &*(opaque as *const AtomicBool) };
    flag.store(true, Ordering::SeqCst);
    tracing::warn!(reason, "libvirt connection closed");
}

unsafe extern "C" fn free_flag(opaque: *mut c_void) {
    // SAFETY: created by Arc::into_raw in `watch_close`; libvirt calls this once.
    drop(unsafe { Arc::from_raw(opaque as *const AtomicBool) });
}

/// Sets keepalive on `conn` and returns a flag that turns true when libvirt closes it (libvirtd
/// restarted, or keepalive timed out).
pub fn watch_close(conn: &Connect) -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let opaque = Arc::into_raw(flag.clone()) as *mut c_void;
    // SAFETY: `conn` is live; libvirt frees `opaque` through `free_flag`.
    unsafe {
        // Only remote connections support keepalive; failure just means none.
        let _ = sys::virConnectSetKeepAlive(conn.as_ptr(), 5, 3);
        if sys::virConnectRegisterCloseCallback(
            conn.as_ptr(),
            Some(on_close),
            opaque,
            Some(free_flag),
        ) < 0
        {
            drop(Arc::from_raw(opaque as *const AtomicBool));
        }
    }
    flag
}

/// Best-effort removal of a lifecycle subscription.
pub fn unregister_lifecycle(conn: &Connect, id: c_int) {
    // SAFETY: `conn` is (or was) a valid connection object; errors are ignored on purpose.
    let _ = unsafe { sys::virConnectDomainEventDeregisterAny(conn.as_ptr(), id) };
}

/// Best-effort removal of the close callback of a connection being abandoned.
pub fn unregister_close(conn: &Connect) {
    // SAFETY: as above.
    let _ = unsafe { sys::virConnectUnregisterCloseCallback(conn.as_ptr(), Some(on_close)) };
}
