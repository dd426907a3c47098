//! Device selection on real libvirt (issue 10): a unikernel gets exactly the devices its Solo5
//! manifest declares, and the test kernel really is as strict as Solo5 about that, so a NIC too
//! many would be caught here.

use crate::harness::{bridge, domain_state, virsh, virsh_create, Daemon};
use rhyzome_api::{DeviceSource, InstanceState};
use rhyzome_testkernel::{
    not_in_manifest_line, solo5_exit_line, VirtioDevice, ARG_PREFIX, CMDLINE_PREFIX, NET_NONE_LINE,
    PCI_ENUMERATION_FAILED_LINE, SOLO5_ABORT_CALLED_LINE,
};
use std::path::Path;
use std::time::{Duration, Instant};

/// Copies `kernel` into the daemon's `KernelDirs` as `file`; returns its path there.
fn install_kernel(d: &Daemon, kernel: &Path, file: &str) -> String {
    let path = d.dir.path().join("kernels").join(file);
    std::fs::copy(kernel, &path).unwrap();
    path.to_str().unwrap().to_string()
}

fn blobs(d: &Daemon) -> Vec<String> {
    std::fs::read_dir(d.dir.path().join("state/blobs"))
        .map(|dir| {
            dir.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_unikernel_without_network_devices_gets_no_nic_boots_and_exits_0() {
    let d = Daemon::start("nonet");
    let hello = install_kernel(&d, &rhyzome_testkernel::kernel_path_nonet(), "hello.virtio");

    let create = [
        "instance",
        "create",
        "--name",
        "dev-hello",
        "--kernel",
        &hello,
    ];
    // Asking for a bridge is refused, and nothing is left behind.
    let refused = d.ctl(&[&create[..], &["--bridge", &bridge()]].concat());
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("network.bridge") && err.contains("declares no network device"),
        "{err}"
    );
    assert!(d.client.list_instances().unwrap().is_empty());
    assert!(!virsh(&["domstate", "rhyzome-dev-hello"]).status.success());
    assert!(blobs(&d).is_empty(), "{:?}", blobs(&d));

    // The seed command, with a kernel that declares no network device.
    let parameters = "--name=dev-hello --exit-after=4000";
    let out = d.ctl_ok(&[&create[..], &["--kernel-parameters", parameters]].concat());
    assert!(out.starts_with("created dev-hello (running"), "{out}");
    let i = d.client.get_instance("dev-hello").unwrap();
    assert_eq!(i.network, None);
    let devices = i.devices.clone().expect("devices");
    assert_eq!((devices.source, devices.nics), (DeviceSource::Manifest, 0));
    // libvirt's own view of the running guest: no interface at all.
    let xml = virsh(&["dumpxml", &i.domain_name]);
    assert!(
        xml.status.success(),
        "{}",
        String::from_utf8_lossy(&xml.stderr)
    );
    let xml = String::from_utf8_lossy(&xml.stdout);
    assert!(!xml.contains("<interface"), "{xml}");
    let shown = d.ctl_ok(&["instance", "show", "dev-hello"]);
    assert!(shown.contains("manifest declares none"), "{shown}");

    let ended = d.wait_for_state("dev-hello", InstanceState::Exited);
    assert_eq!(ended.exit_code, Some(0), "{ended:?}");
    let console = d.console("dev-hello");
    for line in [
        format!("{CMDLINE_PREFIX}\"{parameters}\""),
        format!("{ARG_PREFIX}name=dev-hello"),
        format!("{ARG_PREFIX}exit-after=4000"),
        NET_NONE_LINE.to_string(),
        solo5_exit_line(0),
    ] {
        assert!(
            console.lines().any(|l| l == line),
            "no {line:?}:\n{console}"
        );
    }
    assert!(!console.contains("not in manifest"), "{console}");
}

/// A domain this test defines by hand (no rhyzome metadata, so no daemon claims it), destroyed
/// on drop if it still runs.
struct HandMadeDomain {
    name: String,
    dir: tempfile::TempDir,
}

impl HandMadeDomain {
    /// Boots `kernel` on the lab bridge with `nics` NICs, the way rhyzome would attach them.
    fn boot(tag: &str, kernel: &Path, nics: usize) -> HandMadeDomain {
        // Bring the lab up first (the other test's daemon would do it concurrently, and
        // `lab.sh up` may restart libvirtd under a running `virsh create`).
        crate::harness::lab();
        let dir = tempfile::Builder::new()
            .prefix("rhyzome-e2e-handmade-")
            .tempdir()
            .unwrap();
        static NEXT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
        let unique = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("e2e-handmade-{tag}-{}", std::process::id());
        let kernel_copy = dir.path().join("kernel.elf");
        std::fs::copy(kernel, &kernel_copy).unwrap();
        let interfaces: String = (0..nics)
            .map(|n| {
                format!(
                    "<interface type='bridge'><source bridge='{}'/>\
                     <mac address='02:e2:e0:{:02x}:{:02x}:{n:02x}'/>\
                     <model type='virtio-transitional'/>\
                     <address type='pci' domain='0x0000' bus='0x00' slot='0x{:02x}' \
                     function='0x0'/></interface>",
                    bridge(),
                    std::process::id() as u8,
                    unique,
                    3 + n
                )
            })
            .collect();
        let xml = format!(
            "<domain type='qemu'><name>{name}</name><memory unit='MiB'>16</memory>\
             <vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type>\
             <kernel>{kernel}</kernel><cmdline>--name={tag}</cmdline></os>\
             <features><acpi/></features><on_poweroff>destroy</on_poweroff>\
             <on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>\
             <devices>{interfaces}<serial type='file'><source path='{console}'/>\
             <target port='0'/></serial><controller type='usb' model='none'/>\
             <memballoon model='none'/></devices></domain>",
            kernel = kernel_copy.display(),
            console = dir.path().join("console.log").display(),
        );
        virsh_create(&xml, &dir.path().join("domain.xml"));
        HandMadeDomain { name, dir }
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }

    /// Waits until the console has a line starting with `prefix`; returns the console.
    fn wait_for(&self, prefix: &str) -> String {
        poll_until(Duration::from_secs(30), || {
            let console = self.console();
            if console.lines().any(|l| l.starts_with(prefix)) {
                Ok(console)
            } else {
                Err(format!(
                    "{}: no {prefix:?} on the console:\n{console}",
                    self.name
                ))
            }
        })
    }

    fn running(&self) -> bool {
        domain_state(&self.name).as_deref() == Some("running")
    }
}

impl Drop for HandMadeDomain {
    fn drop(&mut self) {
        // Only this test's own domain, by the unique name it gave it.
        if self.running() {
            let _ = virsh(&["destroy", &self.name]);
        }
    }
}

/// Asserts the strict-manifest abort: the last three console lines, and the guest gone (it
/// powered off, and `on_poweroff` destroyed the domain).
fn assert_strict_abort(domain: &HandMadeDomain, undeclared: &str) {
    let console = domain.wait_for(SOLO5_ABORT_CALLED_LINE);
    let lines: Vec<&str> = console.lines().collect();
    assert_eq!(
        lines[lines.len().saturating_sub(3)..],
        [
            undeclared,
            PCI_ENUMERATION_FAILED_LINE,
            SOLO5_ABORT_CALLED_LINE
        ],
        "{console}"
    );
    poll_until(Duration::from_secs(10), || {
        if domain.running() {
            Err(format!("{} still runs after its abort", domain.name))
        } else {
            Ok(())
        }
    });
}

/// Calls `check` every 50 ms until it succeeds; fails the test with its last error after
/// `timeout`.
fn poll_until<T>(timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return v,
            Err(e) => assert!(Instant::now() < deadline, "{e}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_test_kernel_aborts_like_solo5_on_a_nic_its_manifest_does_not_declare() {
    // What rhyzome used to do to a unikernel without network devices: attach the default NIC.
    let nonet = HandMadeDomain::boot("nonet", &rhyzome_testkernel::kernel_path_nonet(), 1);
    assert_strict_abort(&nonet, &not_in_manifest_line(VirtioDevice::Net, 0, 3));
    // One NIC too many for a kernel that declares one: the second is refused.
    let extra = HandMadeDomain::boot("extra", &rhyzome_testkernel::kernel_path(), 2);
    assert_strict_abort(&extra, &not_in_manifest_line(VirtioDevice::Net, 0, 4));
    assert!(
        extra
            .console()
            .contains("rhyzome-testkernel: arg name=extra"),
        "the kernel ran up to its PCI scan:\n{}",
        extra.console()
    );
}
