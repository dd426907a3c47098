//! The lab's second libvirt host, driven over libvirt's remote protocol (`qemu+tcp://`) with
//! nothing of rhyzome's on it: the backend learns the host's facts, puts a kernel there, makes
//! a console log there, boots a unikernel from them and reads its console back, all through
//! libvirt's API. Needs root and the lab (`scripts/lab.sh up`, which this test runs); without
//! them it fails, never skips.

#[path = "e2e/harness.rs"]
mod harness;

use rhyzomesrv::backend::host_files::HostFiles;
use rhyzomesrv::backend::libvirt::LibvirtBackend;
use rhyzomesrv::backend::{domain_name, BackendError, DomainDefinition, Hypervisor};
use std::time::{Duration, Instant};

/// Removes what the test made on host 2, whatever happens: its domain (only when it carries
/// this test's own daemon identity), its kernel volume and its console volume.
struct Made<'a> {
    backend: &'a LibvirtBackend,
    daemon_id: String,
    uuid: Option<String>,
    kernel: String,
    /// A second kernel volume, put by two threads at once.
    twin: String,
    console: String,
}

impl Drop for Made<'_> {
    fn drop(&mut self) {
        if let Some(uuid) = &self.uuid {
            if let Ok(Some(mark)) = self.backend.mark(uuid) {
                if mark.daemon.as_deref() == Some(self.daemon_id.as_str()) {
                    let _ = self.backend.destroy(uuid);
                }
            }
        }
        let _ = self.backend.remove_kernel(&self.kernel);
        let _ = self.backend.remove_kernel(&self.twin);
        let _ = self.backend.remove_console(&self.console);
    }
}

/// Reads the console from `from` on, a chunk at a time, until `line` has appeared; the whole
/// log read so far.
fn read_until(backend: &LibvirtBackend, console: &str, line: &str, timeout: Duration) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    let mut log = Vec::new();
    loop {
        // Small chunks, so that reading at an offset > 0 is what collects the log.
        let chunk = backend
            .read_console(console, log.len() as u64, 64)
            .expect("read the console on host 2")
            .expect("the console volume exists");
        assert!(
            chunk.size >= log.len() as u64,
            "the console shrank: {} < {}",
            chunk.size,
            log.len()
        );
        log.extend_from_slice(&chunk.bytes);
        if String::from_utf8_lossy(&log).contains(line) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "no {line:?} on host 2's console within {timeout:?}; it printed:\n{}",
            String::from_utf8_lossy(&log)
        );
        if chunk.bytes.is_empty() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn kernels_and_consoles_travel_over_libvirts_remote_protocol() {
    harness::lab();
    let uri = harness::host2_uri();
    assert!(uri.starts_with("qemu+tcp://"), "{uri}");
    let started = Instant::now();
    let backend = LibvirtBackend::connect(&uri).expect("connect to host 2 over TCP");
    eprintln!("connected to {uri} in {:?}", started.elapsed());

    let info = backend.node_info().expect("node_info of host 2");
    eprintln!("host 2: {info:?}");
    assert!(info.libvirt_version.split('.').count() == 3, "{info:?}");
    assert!(info.hypervisor.starts_with("QEMU "), "{info:?}");
    assert!(info.cpus > 0 && info.memory_kib > 0, "{info:?}");
    assert!(info.free_memory_kib <= info.memory_kib, "{info:?}");
    assert!(info.domain_types.iter().any(|t| t == "qemu"), "{info:?}");

    let tag = format!(
        "h2t-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    );
    let mut made = Made {
        backend: &backend,
        daemon_id: format!("test-{tag}"),
        uuid: None,
        kernel: format!("{tag}.virtio"),
        twin: format!("{tag}-twin.virtio"),
        console: format!("{tag}.log"),
    };

    // The kernel: uploaded once, then found there.
    let kernel = rhyzome_testkernel::kernel_path_nonet();
    let size = std::fs::metadata(&kernel).unwrap().len();
    let t = Instant::now();
    let put = backend.put_kernel(&made.kernel, &kernel).unwrap();
    eprintln!("uploaded {size} bytes of kernel in {:?}", t.elapsed());
    assert!(put.uploaded);
    assert!(put.path.ends_with(&made.kernel), "{put:?}");
    let t = Instant::now();
    let again = backend.put_kernel(&made.kernel, &kernel).unwrap();
    eprintln!("second put_kernel (no upload) in {:?}", t.elapsed());
    assert_eq!(again.path, put.path);
    assert!(!again.uploaded);
    assert_eq!(
        backend.kernel_volumes(&tag).unwrap(),
        vec![made.kernel.clone()]
    );
    // Two boots of one new kernel at once: one uploads, the other finds it whole.
    let twins: Vec<_> = std::thread::scope(|s| {
        let put = || backend.put_kernel(&made.twin, &kernel).unwrap();
        let (a, b) = (s.spawn(put), s.spawn(put));
        vec![a.join().unwrap(), b.join().unwrap()]
    });
    assert_eq!(twins.iter().filter(|p| p.uploaded).count(), 1, "{twins:?}");
    assert_eq!(
        backend.kernel_volumes(&tag).unwrap(),
        vec![made.twin.clone(), made.kernel.clone()]
    );
    assert!(backend.remove_kernel(&made.twin).unwrap());

    // The console: an empty volume the guest's serial port writes to.
    let console_path = backend.console_volume(&made.console).unwrap();
    assert!(console_path.ends_with(&made.console), "{console_path}");
    let empty = backend
        .read_console(&made.console, 0, 1024)
        .unwrap()
        .unwrap();
    assert_eq!((empty.size, empty.bytes.len()), (0, 0));
    assert_eq!(
        backend.read_console(&format!("{tag}-none"), 0, 1).unwrap(),
        None
    );

    // A unikernel on host 2 booted from them.
    let def = DomainDefinition {
        domain_type: "qemu",
        domain_name: domain_name(&tag),
        uuid: uuid::Uuid::new_v4().to_string(),
        instance_name: tag.clone(),
        hostname: "host2-test".into(),
        daemon_id: made.daemon_id.clone(),
        memory_mib: 32,
        vcpus: 1,
        kernel: put.path.clone().into(),
        cmdline: "--name=host2 --exit-after=300".into(),
        console_log: console_path.into(),
        nics: Vec::new(),
        disks: Vec::new(),
    };
    let t = Instant::now();
    backend.create(&def).expect("create the domain on host 2");
    made.uuid = Some(def.uuid.clone());
    eprintln!("created the domain in {:?}", t.elapsed());
    let exit = rhyzome_testkernel::solo5_exit_line(0);
    let log = read_until(&backend, &made.console, &exit, Duration::from_secs(30));
    eprintln!("exit line read {:?} after create", t.elapsed());
    let text = String::from_utf8_lossy(&log);
    assert!(
        text.contains(rhyzome_testkernel::SOLO5_VERSION_LINE),
        "{text}"
    );
    assert!(text.contains("host2"), "{text}");

    // A read of the tail alone, at an offset: the same bytes as the log's end.
    let t = Instant::now();
    let tail = backend
        .read_console(&made.console, log.len() as u64 - 10, 1 << 20)
        .unwrap()
        .unwrap();
    eprintln!("one console read in {:?}", t.elapsed());
    assert!(tail.size >= log.len() as u64);
    assert_eq!(&tail.bytes[..10], &log[log.len() - 10..]);
    let past = backend
        .read_console(&made.console, tail.size + 100, 10)
        .unwrap()
        .unwrap();
    assert!(past.bytes.is_empty());

    // The guest powered off, and its transient domain went with it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while backend.status(&def.uuid).unwrap().is_some() {
        assert!(Instant::now() < deadline, "the domain outlived its guest");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!backend.destroy(&def.uuid).unwrap());

    // Host 2's libvirtd goes away: calls say so; it comes back: the backend reconnects.
    harness::lab_command("host2-stop");
    assert_eq!(harness::host2_libvirtd_pid(), None);
    match backend.node_info() {
        Err(BackendError::Unavailable(_)) => {}
        other => panic!("node_info with host 2's libvirtd stopped: {other:?}"),
    }
    harness::lab_command("host2-start");
    assert!(harness::host2_libvirtd_pid().is_some());
    backend
        .node_info()
        .expect("node_info after host 2 came back");
    let whole = backend
        .read_console(&made.console, 0, 1 << 20)
        .unwrap()
        .unwrap();
    assert_eq!(whole.size, tail.size);
    assert!(whole.bytes.starts_with(&log));

    // Cleaned: what the test made is gone, and saying so twice is fine.
    assert!(backend.remove_kernel(&made.kernel).unwrap());
    assert!(!backend.remove_kernel(&made.kernel).unwrap());
    // A copy virtlogd rotated out of the log (made here through libvirt) goes with it.
    let rotated = format!("{}.0", made.console);
    backend.console_volume(&rotated).unwrap();
    assert!(backend.remove_console(&made.console).unwrap());
    assert_eq!(backend.read_console(&rotated, 0, 1).unwrap(), None);
    assert!(!backend.remove_console(&made.console).unwrap());
    assert!(backend.kernel_volumes(&tag).unwrap().is_empty());
    assert_eq!(backend.read_console(&made.console, 0, 1).unwrap(), None);
}
