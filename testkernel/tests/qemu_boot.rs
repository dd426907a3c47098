//! End-to-end tests of the test kernel under plain QEMU (TCG).
//!
//! Needs root and qemu-system-x86_64; fails loudly without them. Every test
//! boots its own guest in its own network namespace and cleans up on drop.

use rhyzome_testkernel::*;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(20);
const EXIT: Duration = Duration::from_secs(10);
const UDP: Duration = Duration::from_secs(5);

/// A guest with a NIC on a fresh namespace. Field order matters: the guest
/// is dropped (killed) before its namespace.
struct NetGuest {
    guest: QemuGuest,
    ip: Ipv4Addr,
    mac: String,
    ns: TestNetns,
}

impl NetGuest {
    fn boot(tag: &str, extra: &str, legacy_only: bool) -> NetGuest {
        let ns = TestNetns::new(tag);
        let tap = ns.add_tap("tap0");
        let mac = unique_mac();
        let ip = ns.guest_ip(2);
        let cmdline = format!("--ipv4={} --name={tag} {extra}", ns.guest_cidr(2));
        let guest = QemuGuest::builder()
            .cmdline(cmdline)
            .nic(&ns, &tap, &mac)
            .legacy_only_nic(legacy_only)
            .spawn();
        assert!(
            guest.wait_for_line(READY_LINE, BOOT).is_some(),
            "guest never became ready\n{}",
            guest.describe()
        );
        NetGuest { guest, ip, mac, ns }
    }

    fn service(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.ip, UDP_PORT)
    }

    fn request(&self, payload: &[u8]) -> Vec<u8> {
        self.ns
            .udp_request(self.service(), payload, UDP)
            .unwrap_or_else(|e| {
                panic!(
                    "UDP {:?} to {}: {e}\n{}",
                    String::from_utf8_lossy(payload),
                    self.service(),
                    self.guest.describe()
                )
            })
    }
}

fn boot_plain(tag: &str, cmdline: &str) -> (QemuGuest, TestNetns) {
    let ns = TestNetns::new(tag);
    let guest = QemuGuest::builder().cmdline(cmdline).in_netns(&ns).spawn();
    (guest, ns)
}

fn lines(guest: &QemuGuest) -> Vec<String> {
    guest.console().lines().map(str::to_string).collect()
}

#[test]
fn elf_is_small_and_has_multiboot_header() {
    for path in [
        kernel_path(),
        kernel_path_2nic(),
        kernel_path_nonet(),
        kernel_path_block(),
        kernel_path_storage(),
    ] {
        let image = std::fs::read(&path).expect("read kernel");
        println!("{}: {} bytes", path.display(), image.len());
        assert!(image.len() < 64 * 1024, "kernel is {} bytes", image.len());
        assert_eq!(&image[..4], b"\x7fELF", "not an ELF file");
        assert_eq!(image[4], 1, "expected a 32-bit ELF");
        let off = multiboot_header_offset(&image).expect("no multiboot v1 header");
        assert!(off < 8192);
    }
}

#[test]
fn banner_cmdline_args_and_unknown_argument_warnings() {
    let cmdline = "--ipv4=10.1.2.3/24 --ipv4-gateway 10.1.2.1 --name web-1 \
                   --exit-code=5 --bogus extra --exit-after 600000 \
                   --admin-ipv4 10.1.3.4/16";
    let (guest, _ns) = boot_plain("args", cmdline);
    assert!(
        guest.wait_for_line(READY_LINE, BOOT).is_some(),
        "no ready line\n{}",
        guest.describe()
    );
    let lines = lines(&guest);
    assert_eq!(lines[0], BANNER_LINE, "banner is not the first line");
    let expect = [
        format!("{CMDLINE_PREFIX}\"{cmdline}\""),
        format!("{UNKNOWN_ARG_PREFIX}\"--bogus\""),
        format!("{UNKNOWN_ARG_PREFIX}\"extra\""),
        format!("{ARG_PREFIX}ipv4=10.1.2.3/24"),
        format!("{ARG_PREFIX}ipv4-gateway=10.1.2.1"),
        format!("{ARG_PREFIX}admin-ipv4=10.1.3.4/16"),
        format!("{ARG_PREFIX}name=web-1"),
        format!("{ARG_PREFIX}exit-after=600000"),
        format!("{ARG_PREFIX}exit-code=5"),
        NET_NONE_LINE.to_string(),
        READY_LINE.to_string(),
    ];
    for e in &expect {
        assert!(
            lines.contains(e),
            "missing line {e:?}\n{}",
            guest.describe()
        );
    }
    // Arguments are printed after parsing (i.e. after the warnings), and
    // everything before "ready".
    let pos = |l: &str| lines.iter().position(|x| x == l).unwrap();
    assert!(pos(&expect[2]) < pos(&expect[3]));
    assert!(pos(&expect[9]) < pos(READY_LINE));
    // the documented order of the argument lines
    for pair in expect[3..9].windows(2) {
        assert!(pos(&pair[0]) < pos(&pair[1]), "{pair:?}");
    }
    assert_eq!(guest.lines_with_prefix(WARNING_PREFIX).len(), 2);
}

#[test]
fn first_word_of_multiboot_cmdline_is_dropped() {
    // QEMU passes "<kernel path> <append>"; only the path must go.
    let (guest, _ns) = boot_plain("word", "first-param second");
    let line = guest.wait_for_line(CMDLINE_PREFIX, BOOT);
    assert_eq!(
        line.as_deref(),
        Some("rhyzome-testkernel: cmdline \"first-param second\""),
        "\n{}",
        guest.describe()
    );
    let (guest, _ns) = boot_plain("empty", "");
    let line = guest.wait_for_line(CMDLINE_PREFIX, BOOT);
    assert_eq!(
        line.as_deref(),
        Some("rhyzome-testkernel: cmdline \"\""),
        "\n{}",
        guest.describe()
    );
}

#[test]
fn banner_latency_under_tcg() {
    let (guest, _ns) = boot_plain("latency", "--name=latency");
    let (_, t) = guest
        .wait_for_line_timed(BANNER_LINE, BOOT)
        .unwrap_or_else(|| panic!("no banner\n{}", guest.describe()));
    let (_, r) = guest
        .wait_for_line_timed(READY_LINE, BOOT)
        .unwrap_or_else(|| panic!("no ready\n{}", guest.describe()));
    println!(
        "qemu spawn -> banner: {:.1} ms, -> ready: {:.1} ms",
        t.as_secs_f64() * 1e3,
        r.as_secs_f64() * 1e3
    );
    // Timing belongs to benchmarks (docs/benchmarks.md, section 1); this only catches gross
    // regressions, with a bound a loaded machine meets: 2 s failed once at load average 31.
    assert!(t < Duration::from_secs(10), "banner took {t:?}");
}

#[test]
fn no_nic_prints_net_none() {
    let (guest, _ns) = boot_plain("nonic", "--ipv4=10.9.9.9/24");
    assert!(
        guest.wait_for_line(READY_LINE, BOOT).is_some(),
        "\n{}",
        guest.describe()
    );
    assert!(guest.wait_for_line(NET_NONE_LINE, Duration::ZERO).is_some());
    assert!(guest.lines_with_prefix(NET_MAC_PREFIX).is_empty());
    assert!(guest.lines_with_prefix(NET1_MAC_PREFIX).is_empty());
}

#[test]
fn ping_is_answered_and_mac_is_reported() {
    let g = NetGuest::boot("ping", "", false);
    let line = g.guest.wait_for_line(NET_MAC_PREFIX, Duration::ZERO);
    assert_eq!(line, Some(format!("{NET_MAC_PREFIX}{}", g.mac)));
    assert!(
        g.ns.ping(g.ip, Duration::from_secs(10)),
        "no ping reply from {}\n{}",
        g.ip,
        g.guest.describe()
    );
}

#[test]
fn two_nics_answer_on_their_own_addresses() {
    let ns = TestNetns::new("twonic");
    let (tap0, tap1) = (ns.add_tap("tap0"), ns.add_tap("tap1"));
    let (mac0, mac1) = (unique_mac(), unique_mac());
    let mut guest = QemuGuest::builder()
        .kernel(kernel_path_2nic())
        .cmdline(format!(
            "--ipv4={} --admin-ipv4={} --name=twonic",
            ns.guest_cidr(2),
            ns.guest_cidr(3)
        ))
        .nic(&ns, &tap0, &mac0)
        .nic(&ns, &tap1, &mac1)
        .spawn();
    assert!(
        guest.wait_for_line(READY_LINE, BOOT).is_some(),
        "guest never became ready\n{}",
        guest.describe()
    );
    let lines = lines(&guest);
    let net0 = format!("{NET_MAC_PREFIX}{mac0}");
    let at = lines
        .iter()
        .position(|l| *l == net0)
        .unwrap_or_else(|| panic!("no {net0:?}\n{}", guest.describe()));
    assert_eq!(
        lines[at + 1],
        format!("{NET1_MAC_PREFIX}{mac1}"),
        "\n{}",
        guest.describe()
    );
    assert!(lines.contains(&format!("{ARG_PREFIX}admin-ipv4={}", ns.guest_cidr(3))));

    for (host, mac) in [(2, &mac0), (3, &mac1)] {
        let ip = ns.guest_ip(host);
        assert!(
            ns.ping(ip, Duration::from_secs(10)),
            "no ping reply from {ip}\n{}",
            guest.describe()
        );
        // The ARP reply for each address came from its own NIC.
        let neigh = ns.exec("ip", &["neigh", "show", &ip.to_string()]);
        let neigh = String::from_utf8_lossy(&neigh.stdout);
        assert!(neigh.contains(mac.as_str()), "{ip}: {neigh:?}, want {mac}");
        let addr = SocketAddrV4::new(ip, UDP_PORT);
        let reply = ns
            .udp_request(addr, b"status", UDP)
            .unwrap_or_else(|e| panic!("status to {addr}: {e}\n{}", guest.describe()));
        let reply = String::from_utf8(reply).expect("utf-8");
        assert!(reply.starts_with("name=twonic "), "{reply:?}");
        // ipv4= is the address of the NIC that received the request.
        let want = format!(" ipv4={}\n", ns.guest_cidr(host));
        assert!(reply.ends_with(&want), "{reply:?}");
    }

    let admin = SocketAddrV4::new(ns.guest_ip(3), UDP_PORT);
    let reply = ns.udp_request(admin, b"exit 3", UDP);
    assert_eq!(
        reply.ok().as_deref(),
        Some(&b"ok\n"[..]),
        "\n{}",
        guest.describe()
    );
    let line = guest.wait_for_line(SOLO5_EXIT_PREFIX, EXIT);
    assert_eq!(line, Some(solo5_exit_line(3)), "\n{}", guest.describe());
    assert!(
        guest.wait_exit(EXIT).is_some(),
        "qemu still running\n{}",
        guest.describe()
    );
}

#[test]
fn legacy_only_nic_works_too() {
    let g = NetGuest::boot("legacy", "", true);
    assert!(g
        .guest
        .wait_for_line(NET_MAC_PREFIX, Duration::ZERO)
        .is_some());
    assert!(
        g.ns.ping(g.ip, Duration::from_secs(10)),
        "\n{}",
        g.guest.describe()
    );
}

#[test]
fn udp_status_reports_name_and_counters() {
    let g = NetGuest::boot("status", "", false);
    let reply = String::from_utf8(g.request(b"status")).expect("utf-8");
    println!("status: {reply:?}");
    assert!(reply.ends_with('\n'), "{reply:?}");
    let fields: Vec<&str> = reply.trim_end().split(' ').collect();
    assert_eq!(fields.len(), 5, "{reply:?}");
    assert_eq!(fields[0], "name=status");
    let num = |f: &str, key: &str| -> u64 {
        f.strip_prefix(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("bad field {f:?} in {reply:?}"))
    };
    num(fields[1], "uptime_ms=");
    assert!(num(fields[2], "rx=") >= 1);
    num(fields[3], "tx=");
    assert_eq!(fields[4], format!("ipv4={}/24", g.ip));
    // with a trailing newline, as `echo status | nc -u` sends it
    let again = String::from_utf8(g.request(b"status\n")).unwrap();
    assert!(again.starts_with("name=status "), "{again:?}");
}

#[test]
fn udp_echo() {
    let g = NetGuest::boot("echo", "", false);
    for payload in [
        &b"hello, unikernel"[..],
        &[0u8, 1, 2, 255][..],
        &[b'x'; 1400][..],
    ] {
        assert_eq!(g.request(payload), payload);
    }
}

#[test]
fn udp_exit_powers_off_with_code() {
    let mut g = NetGuest::boot("exit", "", false);
    assert_eq!(g.request(b"exit 3"), b"ok\n");
    let line = g.guest.wait_for_line(SOLO5_EXIT_PREFIX, EXIT);
    assert_eq!(line, Some(solo5_exit_line(3)), "\n{}", g.guest.describe());
    let t = Instant::now();
    let status = g.guest.wait_exit(EXIT);
    println!("exit line -> qemu gone: {:?}", t.elapsed());
    let status = status.unwrap_or_else(|| panic!("qemu still running\n{}", g.guest.describe()));
    assert!(status.success(), "qemu exit status {status}");
    assert_eq!(g.guest.lines_with_prefix(BANNER_LINE).len(), 1, "rebooted?");
}

#[test]
fn udp_print_fills_the_console_on_demand() {
    let g = NetGuest::boot("print", "", false);
    assert_eq!(
        g.request(b"print 0"),
        b"error: usage: print N (1 to 1000000)\n"
    );
    assert_eq!(
        g.request(b"print x"),
        b"error: usage: print N (1 to 1000000)\n"
    );
    assert_eq!(g.request(b"print 300"), b"ok\n");
    let done = g
        .guest
        .wait_for_line("rhyzome-testkernel: printed ", EXIT)
        .unwrap_or_else(|| panic!("no end line\n{}", g.guest.describe()));
    assert_eq!(done, "rhyzome-testkernel: printed 300 lines");
    let filler = g.guest.lines_with_prefix("rhyzome-testkernel: filler ");
    assert_eq!(filler.len(), 300);
    assert!(
        filler.iter().all(|l| l.len() == 63),
        "lines are 64 bytes with the newline"
    );
    assert!(filler[299].starts_with("rhyzome-testkernel: filler 0000299 "));
    // Still alive and answering afterwards.
    assert_eq!(g.request(b"ping?"), b"ping?");
}

#[test]
fn udp_crash_aborts_and_powers_off() {
    let mut g = NetGuest::boot("crash", "", false);
    assert_eq!(g.request(b"crash"), b"ok\n");
    let line = g
        .guest
        .wait_for_line(SOLO5_ABORT_PREFIX, EXIT)
        .unwrap_or_else(|| panic!("no ABORT line\n{}", g.guest.describe()));
    assert!(line.ends_with(": crash requested"), "{line:?}");
    // "Solo5: ABORT: <file>:<line>: crash requested"
    let rest = line.strip_prefix(SOLO5_ABORT_PREFIX).unwrap();
    let mut parts = rest.splitn(3, ':');
    assert!(parts.next().unwrap().ends_with(".c"), "{line:?}");
    assert!(parts.next().unwrap().parse::<u32>().is_ok(), "{line:?}");
    assert!(
        g.guest.wait_exit(EXIT).is_some(),
        "qemu still running\n{}",
        g.guest.describe()
    );
    assert!(g.guest.lines_with_prefix(SOLO5_EXIT_PREFIX).is_empty());
}

#[test]
fn exit_after_with_exit_code() {
    let (mut guest, _ns) = boot_plain("exitafter", "--exit-after=200 --exit-code=7");
    let line = guest.wait_for_line(SOLO5_EXIT_PREFIX, EXIT);
    assert_eq!(line, Some(solo5_exit_line(7)), "\n{}", guest.describe());
    let status = guest
        .wait_exit(EXIT)
        .unwrap_or_else(|| panic!("qemu still running\n{}", guest.describe()));
    assert!(status.success(), "qemu exit status {status}");
    // --exit-after is not early: at least 200 ms of guest uptime passed.
    let (_, ready) = guest
        .wait_for_line_timed(READY_LINE, Duration::ZERO)
        .unwrap();
    let (_, exit) = guest
        .wait_for_line_timed(SOLO5_EXIT_PREFIX, Duration::ZERO)
        .unwrap();
    assert!(
        exit - ready >= Duration::from_millis(150),
        "{:?}",
        exit - ready
    );
}

#[test]
fn garbage_and_overlong_cmdline_does_not_crash() {
    let mut junk = String::from(
        "--ipv4 --ipv4=999.1.1.1/24 --ipv4=1.2.3.4 --ipv4=1.2.3.4/33 --ipv4=1.2.3/8 \
         --ipv4-gateway=1.2.3.4.5 --admin-ipv4=1.2.3.4/33 --admin-ipv4 --exit-after=abc --exit-after=99999999999 \
         --exit-code=2147483648 --exit-code=- --name= -- - --=x \"quoted\" back\\slash \
         caf\u{e9} \t tab ",
    );
    junk.push_str(&format!("--name={} ", "n".repeat(300)));
    junk.push_str(&format!("--{} ", "z".repeat(2000)));
    while junk.len() < 8000 {
        junk.push_str("--what=ever ");
    }
    let ns = TestNetns::new("garbage");
    let tap = ns.add_tap("tap0");
    // A valid address at the very end: parsing must survive all of the above.
    let cmdline = format!("{junk} --ipv4={}", ns.guest_cidr(2));
    assert!(cmdline.len() < MAX_CMDLINE);
    let guest = QemuGuest::builder()
        .cmdline(cmdline)
        .nic(&ns, &tap, &unique_mac())
        .spawn();
    assert!(
        guest.wait_for_line(READY_LINE, BOOT).is_some(),
        "no ready line\n{}",
        guest.describe()
    );
    assert!(guest.lines_with_prefix(SOLO5_ABORT_PREFIX).is_empty());
    assert!(guest.lines_with_prefix(WARNING_PREFIX).len() > 20);
    assert!(guest
        .wait_for_line(
            &format!("{ARG_PREFIX}ipv4={}", ns.guest_cidr(2)),
            Duration::ZERO
        )
        .is_some());
    assert!(guest
        .wait_for_line(
            &format!("{WARNING_PREFIX}value too long for argument \"--name\""),
            Duration::ZERO
        )
        .is_some());
    assert!(
        ns.ping(ns.guest_ip(2), Duration::from_secs(10)),
        "\n{}",
        guest.describe()
    );
}

#[test]
fn command_line_over_8191_bytes_is_truncated() {
    let long = format!("--name=trunc {}", "--pad=xxxxxxxxxxxxxxxxxxx ".repeat(400));
    assert!(long.len() > MAX_CMDLINE);
    let (guest, _ns) = boot_plain("trunc", &long);
    assert!(
        guest.wait_for_line(READY_LINE, BOOT).is_some(),
        "no ready line\n{}",
        guest.describe()
    );
    assert!(guest
        .wait_for_line(
            &format!("{WARNING_PREFIX}command line too long"),
            Duration::ZERO
        )
        .is_some());
    let cl = guest.wait_for_line(CMDLINE_PREFIX, Duration::ZERO).unwrap();
    assert_eq!(
        cl.len(),
        CMDLINE_PREFIX.len() + MAX_CMDLINE + 2,
        "quoted, truncated"
    );
    assert!(guest
        .wait_for_line(&format!("{ARG_PREFIX}name=trunc"), Duration::ZERO)
        .is_some());
}

#[test]
fn block_device_sector0_checksum() {
    let dir = std::env::temp_dir().join(format!("rzt-disk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let disk = dir.join("disk.img");
    let mut data = vec![0u8; 1 << 20];
    for (i, b) in data.iter_mut().enumerate().take(512) {
        *b = (i * 7 + 3) as u8;
    }
    std::fs::write(&disk, &data).unwrap();
    let mut h: u32 = 2166136261;
    for &b in &data[..512] {
        h ^= u32::from(b);
        h = h.wrapping_mul(16777619);
    }
    let ns = TestNetns::new("blk");
    let guest = QemuGuest::builder()
        .kernel(kernel_path_block())
        .in_netns(&ns)
        .disk(&disk)
        .spawn();
    let line = guest.wait_for_line(BLOCK_CHECKSUM_PREFIX, BOOT);
    let ready = guest.wait_for_line(READY_LINE, BOOT);
    let console = guest.describe();
    drop(guest);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        line,
        Some(format!("{BLOCK_CHECKSUM_PREFIX}{h:08x}")),
        "\n{console}"
    );
    assert!(ready.is_some(), "\n{console}");
}

/// Asserts that `guest` printed Solo5's strict-manifest abort for `undeclared`
/// (the device line, "not in manifest", the enumeration failure and
/// `solo5_abort()`, in this order, as the last lines), never became ready, and
/// powered off.
fn assert_aborts_on_undeclared(mut guest: QemuGuest, undeclared: &str) {
    assert!(
        guest.wait_for_line(SOLO5_ABORT_CALLED_LINE, BOOT).is_some(),
        "no abort\n{}",
        guest.describe()
    );
    assert!(
        guest.wait_exit(EXIT).is_some(),
        "qemu still running after the abort\n{}",
        guest.describe()
    );
    let lines = lines(&guest);
    let tail: Vec<&str> = lines
        .iter()
        .rev()
        .take(3)
        .rev()
        .map(String::as_str)
        .collect();
    assert_eq!(
        tail,
        [
            undeclared,
            PCI_ENUMERATION_FAILED_LINE,
            SOLO5_ABORT_CALLED_LINE
        ],
        "\n{}",
        guest.describe()
    );
    assert!(guest.lines_with_prefix(READY_LINE).is_empty());
    assert!(guest.lines_with_prefix(SOLO5_EXIT_PREFIX).is_empty());
}

#[test]
fn nonet_kernel_aborts_like_solo5_when_given_a_nic() {
    let ns = TestNetns::new("strict");
    let tap = ns.add_tap("tap0");
    let guest = QemuGuest::builder()
        .kernel(kernel_path_nonet())
        .cmdline("--name=strict")
        .nic(&ns, &tap, &unique_mac())
        .spawn();
    // The builder's first NIC sits at PCI 00:03.
    assert_aborts_on_undeclared(guest, &not_in_manifest_line(VirtioDevice::Net, 0, 3));
}

#[test]
fn one_nic_kernel_aborts_like_solo5_on_a_second_nic() {
    let ns = TestNetns::new("strict2");
    let (tap0, tap1) = (ns.add_tap("tap0"), ns.add_tap("tap1"));
    let guest = QemuGuest::builder()
        .cmdline("--name=strict2")
        .nic(&ns, &tap0, &unique_mac())
        .nic(&ns, &tap1, &unique_mac())
        .spawn();
    // NIC 0 (00:03) takes the manifest's one network device; NIC 1 (00:04)
    // finds none left.
    assert_aborts_on_undeclared(guest, &not_in_manifest_line(VirtioDevice::Net, 0, 4));
}

#[test]
fn kernel_without_block_device_aborts_like_solo5_on_a_disk() {
    let dir = std::env::temp_dir().join(format!("rzt-strict-disk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let disk = dir.join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let ns = TestNetns::new("strictblk");
    let guest = QemuGuest::builder().in_netns(&ns).disk(&disk).spawn();
    let undeclared = guest
        .wait_for_line("Solo5: Virtio block: PCI:", BOOT)
        .unwrap_or_else(|| panic!("no block abort\n{}", guest.describe()));
    std::fs::remove_dir_all(&dir).unwrap();
    // QEMU places the disk itself: read its slot back from the line, then
    // check the exact wording.
    let dev = u8::from_str_radix(&undeclared["Solo5: Virtio block: PCI:00:".len()..][..2], 16)
        .unwrap_or_else(|e| panic!("{undeclared:?}: {e}"));
    assert_aborts_on_undeclared(guest, &not_in_manifest_line(VirtioDevice::Block, 0, dev));
}

#[test]
fn nonet_kernel_boots_echoes_its_parameters_and_exits_0() {
    let (mut guest, _ns) = {
        let ns = TestNetns::new("nonet");
        let guest = QemuGuest::builder()
            .kernel(kernel_path_nonet())
            .cmdline("--name=hello --exit-after=100")
            .in_netns(&ns)
            .spawn();
        (guest, ns)
    };
    let line = guest.wait_for_line(SOLO5_EXIT_PREFIX, BOOT);
    assert_eq!(line, Some(solo5_exit_line(0)), "\n{}", guest.describe());
    assert!(guest.wait_exit(EXIT).is_some(), "\n{}", guest.describe());
    for expected in [
        format!("{CMDLINE_PREFIX}\"--name=hello --exit-after=100\""),
        format!("{ARG_PREFIX}name=hello"),
        format!("{ARG_PREFIX}exit-after=100"),
        NET_NONE_LINE.to_string(),
        READY_LINE.to_string(),
    ] {
        assert!(
            lines(&guest).contains(&expected),
            "missing {expected:?}\n{}",
            guest.describe()
        );
    }
    assert!(guest.lines_with_prefix(SOLO5_ABORT_CALLED_LINE).is_empty());
}

/// The storage build (a block device, no NIC): a write survives the guest, a read-only disk
/// refuses writes with Solo5's `SOLO5_R_EUNSPEC`, and the capacity is the disk's.
#[test]
fn block_writes_persist_and_a_read_only_disk_refuses_them() {
    let dir = std::env::temp_dir().join(format!("rzt-blkrw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let disk = dir.join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let boot = |writable: bool, cmdline: &str| {
        let ns = TestNetns::new("blkrw");
        let builder = QemuGuest::builder()
            .kernel(kernel_path_storage())
            .cmdline(cmdline)
            .in_netns(&ns);
        let mut guest = if writable {
            builder.writable_disk(&disk)
        } else {
            builder.disk(&disk)
        }
        .spawn();
        assert!(
            guest.wait_exit(EXIT).is_some(),
            "the guest did not exit\n{}",
            guest.describe()
        );
        guest.console()
    };
    let first = boot(true, "--blk-write=7:kept-across-boots --exit-after=10");
    assert!(
        first.contains(&format!("{BLOCK_CAPACITY_PREFIX}2048 sectors read_only=0")),
        "{first}"
    );
    assert!(
        first.contains(&format!("{BLOCK_WRITE_PREFIX}7 ok")),
        "{first}"
    );
    let second = boot(false, "--blk-write=8:refused --blk-read=7 --exit-after=10");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(second.contains("read_only=1"), "{second}");
    assert!(
        second.contains(&format!("{BLOCK_WRITE_PREFIX}8 error=SOLO5_R_EUNSPEC")),
        "{second}"
    );
    assert!(
        second.contains(&format!("{BLOCK_READ_PREFIX}7 text=\"kept-across-boots\"")),
        "{second}"
    );
}

/// Milliseconds since the Unix epoch, as an injector puts them in a rumor.
fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Sends `clock-set` samples of the host's clock to the guest at `ip`, at uneven intervals
/// (the guest polls at 100 Hz, and keeps the sample delayed least).
fn set_clock(ns: &TestNetns, ip: Ipv4Addr) {
    for i in 0..8u64 {
        let msg = format!("clock-set {}", epoch_ms());
        let reply = ns
            .udp_request(SocketAddrV4::new(ip, UDP_PORT), msg.as_bytes(), UDP)
            .unwrap();
        assert!(String::from_utf8_lossy(&reply).contains("set=1"));
        std::thread::sleep(Duration::from_millis(3 + 7 * i % 11));
    }
}

/// Per guest, bounds of its wall clock minus the host's (ms), from a `clock` request: the
/// guest read its clock between sending and receiving. Waits for the first RTC edge.
fn clock_offsets(ns: &TestNetns, ips: &[Ipv4Addr]) -> Vec<(i64, i64)> {
    let mut offsets = Vec::new();
    for ip in ips {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let before = epoch_ms();
            let reply = ns
                .udp_request(SocketAddrV4::new(*ip, UDP_PORT), b"clock", UDP)
                .unwrap();
            let after = epoch_ms();
            let reply = String::from_utf8(reply).unwrap();
            let f = fields(&reply);
            if f["synced"] == "1" {
                let wall: i64 = f["wall_ms"].parse().unwrap();
                offsets.push((wall - after as i64, wall - before as i64));
                break;
            }
            assert!(Instant::now() < deadline, "{ip} never synced: {reply}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    offsets
}

/// The `key=value` words of a line.
fn fields(line: &str) -> std::collections::HashMap<&str, &str> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .collect()
}

/// Gossip over three guests on one bridge, peers in a ring a -> b -> c -> a (c also knows
/// a, so b's forward to c and c's forward back to a are duplicates): a rumor injected at
/// a reaches every guest once, with its hop count, and a time measured against the host's
/// clock; a second injection of the same rumor prints nothing anywhere. Also measures the
/// guests' wall clocks against the host's (the `clock` command) and prints the spread.
#[test]
fn gossip_reaches_every_peer_once_with_hops_and_time() {
    let ns = TestNetns::new("gossip");
    let ips: Vec<Ipv4Addr> = (2..5).map(|h| ns.guest_ip(h)).collect();
    let peers = [
        format!("{}", ips[1]),
        format!("{},{}", ips[2], ips[0]),
        format!("{}", ips[0]),
    ];
    let guests: Vec<QemuGuest> = (0..3)
        .map(|i| {
            let tap = ns.add_tap(&format!("tap{i}"));
            QemuGuest::builder()
                .cmdline(format!(
                    "--ipv4={} --name=g{i} --peers={}",
                    ns.guest_cidr(i as u32 + 2),
                    peers[i]
                ))
                .nic(&ns, &tap, &unique_mac())
                .spawn()
        })
        .collect();
    for (i, g) in guests.iter().enumerate() {
        assert!(
            g.wait_for_line(READY_LINE, BOOT).is_some(),
            "{}",
            g.describe()
        );
        assert!(
            lines(g).contains(&format!("{ARG_PREFIX}peers={}", peers[i])),
            "{}",
            g.describe()
        );
    }
    // The RTC gives each guest a clock at its first second edge (at most a second after
    // boot), behind the host's by up to a second; `clock-set` corrects it.
    let rtc_only = clock_offsets(&ns, &ips);
    eprintln!("guest RTC clock minus host's, bounds in ms per guest: {rtc_only:?}");
    for ip in &ips {
        set_clock(&ns, *ip);
    }
    let offsets = clock_offsets(&ns, &ips);
    eprintln!("after clock-set, guest clock minus host's, bounds in ms: {offsets:?}");
    for (lo, hi) in &offsets {
        assert!(*lo <= 15 && *hi >= -15, "a guest clock is off: {offsets:?}");
    }
    // The TSC carries the set time forward: no drift to speak of over a few seconds.
    std::thread::sleep(Duration::from_secs(3));
    let later = clock_offsets(&ns, &ips);
    eprintln!("3 s later, bounds in ms: {later:?}");
    for (lo, hi) in &later {
        assert!(*lo <= 15 && *hi >= -15, "a guest clock drifted: {later:?}");
    }

    let rumor = format!("rumor r1 0 {}", epoch_ms());
    let seed = SocketAddrV4::new(ips[0], GOSSIP_PORT);
    ns.udp_send(seed, rumor.as_bytes()).unwrap();
    let mut hops = Vec::new();
    for g in &guests {
        let line = g
            .wait_for_line(RUMOR_RESULT_PREFIX, UDP)
            .unwrap_or_else(|| panic!("no RESULT\n{}", g.describe()));
        let f = fields(&line);
        assert_eq!(f["rumor"], "r1", "{line}");
        let ms: i64 = f["ms"].parse().unwrap_or_else(|_| panic!("{line}"));
        assert!((-50..2000).contains(&ms), "{line}");
        hops.push(f["hops"].to_string());
    }
    assert_eq!(hops, ["0", "1", "2"]);
    // Again: every guest has seen r1, so nothing is printed or forwarded.
    ns.udp_send(seed, rumor.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    for g in &guests {
        assert_eq!(
            g.lines_with_prefix(RUMOR_RESULT_PREFIX).len(),
            1,
            "{}",
            g.describe()
        );
    }
}

/// `--peers=` is an empty list, not a missing value: no warning, and a rumor is printed and
/// forwarded to nobody.
#[test]
fn gossip_with_no_peers_prints_and_forwards_nothing() {
    let g = NetGuest::boot("nopeers", "--peers=", false);
    assert!(lines(&g.guest).contains(&format!("{ARG_PREFIX}peers=")));
    assert!(g.guest.lines_with_prefix(WARNING_PREFIX).is_empty());
    clock_offsets(&g.ns, &[g.ip]);
    let rumor = format!("rumor only 4 {}", epoch_ms());
    g.ns.udp_send(SocketAddrV4::new(g.ip, GOSSIP_PORT), rumor.as_bytes())
        .unwrap();
    let line = g.guest.wait_for_line(RUMOR_RESULT_PREFIX, UDP).unwrap();
    // Never set by clock-set: the time is the RTC's, and the line says so.
    assert!(line.starts_with("RESULT rumor=only hops=4 ms="), "{line}");
    assert!(line.ends_with(" clock=rtc"), "{line}");
    // Malformed rumors are dropped.
    for bad in [
        "rumor",
        "rumor x",
        "rumor x y 1",
        "rumor a/b 0 1",
        "rumour x 0 1",
    ] {
        g.ns.udp_send(SocketAddrV4::new(g.ip, GOSSIP_PORT), bad.as_bytes())
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        g.guest.lines_with_prefix("RESULT").len(),
        1,
        "{}",
        g.guest.describe()
    );
}
