//! Renders the libvirt domain XML of a [`DomainDefinition`], and reads rhyzome's mark back
//! from libvirt's `<metadata>`. Only the libvirt backend speaks XML; the service hands it the
//! typed definition.
//!
//! The document is written with an XML writer that escapes every text and attribute value, so
//! user strings (names, kernel parameters) cannot add elements. The shape follows what Solo5
//! `virtio` unikernels need (see `shared/platform-notes.md`): machine `pc` with ACPI so that
//! their S5 power-off ends the domain, direct kernel boot, a transitional virtio NIC with a MAC,
//! the serial console in a file, and none of the devices a unikernel never uses (USB, balloon,
//! graphics), each of which costs boot time. Pure functions; no I/O.

use crate::backend::{Disk, DomainDefinition, DomainMark};
use quick_xml::events::BytesText;
use quick_xml::Writer;
use std::path::PathBuf;

/// XML namespace of the `<metadata>` element that marks domains as rhyzome's:
/// `<instance name=".." host=".." daemon=".."/>`, where `daemon` is the identity of the daemon
/// that made it. A new namespace rather than a new attribute in the old one: a release that
/// predates identities reads only [`LEGACY_METADATA_NAMESPACE`], so it sees no mark on these
/// domains and leaves them alone instead of taking them for its own by their `host`.
pub const METADATA_NAMESPACE: &str = "urn:rhyzome:instance:2";
/// The mark of releases before daemon identities: `name` and `host` only.
pub const LEGACY_METADATA_NAMESPACE: &str = "urn:rhyzome:instance:1";
/// Prefix of that element.
pub const METADATA_PREFIX: &str = "rhyzome";
/// TCG translation-block cache per guest, in MiB (`qemu` domain type only). QEMU 7.2's default
/// is 1 GiB of address space that fills (and stays resident) as a guest runs new code; a
/// unikernel's hot code translates to a few MiB, so 16 MiB bounds that growth without
/// forcing cache flushes. Measured in `docs/benchmarks.md`.
pub const TCG_TB_CACHE_MIB: u32 = 16;

#[derive(Debug, thiserror::Error)]
pub enum DomainXmlError {
    #[error("cannot write domain XML: {0}")]
    Write(#[from] std::io::Error),
    #[error("{what} is not valid UTF-8: {path}")]
    NonUtf8Path { what: &'static str, path: PathBuf },
}

type W = Writer<Vec<u8>>;

fn text_element(w: &mut W, name: &str, text: &str) -> std::io::Result<()> {
    w.create_element(name)
        .write_text_content(BytesText::new(text))?;
    Ok(())
}

fn path_str<'a>(what: &'static str, p: &'a std::path::Path) -> Result<&'a str, DomainXmlError> {
    p.to_str().ok_or_else(|| DomainXmlError::NonUtf8Path {
        what,
        path: p.to_path_buf(),
    })
}

/// `vda`, `vdb`, ... `vdz`, `vdaa`, ...: the target name libvirt wants (the guest never sees
/// it; Solo5 finds disks by PCI order).
fn disk_target(i: usize) -> String {
    let letter = |n: usize| (b'a' + (n % 26) as u8) as char;
    if i < 26 {
        format!("vd{}", letter(i))
    } else {
        format!("vd{}{}", letter(i / 26 - 1), letter(i))
    }
}

fn write_disk(w: &mut W, i: usize, disk: &Disk) -> std::io::Result<()> {
    let target = disk_target(i);
    w.create_element("disk")
        .with_attribute(("type", "volume"))
        .with_attribute(("device", "disk"))
        // Solo5 speaks legacy virtio-pci only, as for NICs.
        .with_attribute(("model", "virtio-transitional"))
        .write_inner_content(|w| {
            w.create_element("driver")
                .with_attribute(("name", "qemu"))
                .with_attribute(("type", disk.format))
                .write_empty()?;
            w.create_element("source")
                .with_attribute(("pool", disk.pool.as_str()))
                .with_attribute(("volume", disk.volume.as_str()))
                .write_empty()?;
            w.create_element("target")
                .with_attribute(("dev", target.as_str()))
                .with_attribute(("bus", "virtio"))
                .write_empty()?;
            if disk.read_only {
                w.create_element("readonly").write_empty()?;
            }
            write_pci_address(w, disk.pci_slot)?;
            Ok::<_, std::io::Error>(())
        })?;
    Ok(())
}

/// A fixed address on PCI bus 0: Solo5 binds devices of a kind in PCI order.
fn write_pci_address(w: &mut W, slot: u8) -> std::io::Result<()> {
    let slot = format!("0x{slot:02x}");
    w.create_element("address")
        .with_attribute(("type", "pci"))
        .with_attribute(("domain", "0x0000"))
        .with_attribute(("bus", "0x00"))
        .with_attribute(("slot", slot.as_str()))
        .with_attribute(("function", "0x0"))
        .write_empty()?;
    Ok(())
}

pub fn render(def: &DomainDefinition) -> Result<String, DomainXmlError> {
    let kernel = path_str("kernel path", &def.kernel)?;
    let console = path_str("console log path", &def.console_log)?;
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    let memory = def.memory_mib.to_string();
    let vcpus = def.vcpus.to_string();
    let xmlns = format!("xmlns:{METADATA_PREFIX}");
    let meta_element = format!("{METADATA_PREFIX}:instance");
    w.create_element("domain")
        .with_attribute(("type", def.domain_type))
        .write_inner_content(|w| {
            text_element(w, "name", &def.domain_name)?;
            text_element(w, "uuid", &def.uuid)?;
            w.create_element("metadata").write_inner_content(|w| {
                w.create_element(meta_element.as_str())
                    .with_attribute((xmlns.as_str(), METADATA_NAMESPACE))
                    .with_attribute(("name", def.instance_name.as_str()))
                    .with_attribute(("host", def.hostname.as_str()))
                    .with_attribute(("daemon", def.daemon_id.as_str()))
                    .write_empty()?;
                Ok::<_, std::io::Error>(())
            })?;
            w.create_element("memory")
                .with_attribute(("unit", "MiB"))
                .write_text_content(BytesText::new(&memory))?;
            text_element(w, "vcpu", &vcpus)?;
            w.create_element("os").write_inner_content(|w| {
                w.create_element("type")
                    .with_attribute(("arch", "x86_64"))
                    .with_attribute(("machine", "pc"))
                    .write_text_content(BytesText::new("hvm"))?;
                text_element(w, "kernel", kernel)?;
                text_element(w, "cmdline", &def.cmdline)?;
                Ok::<_, std::io::Error>(())
            })?;
            // Without <acpi/> libvirt passes -no-acpi, Solo5's S5 power-off only halts, and
            // the domain would stay "running" after the unikernel exited.
            w.create_element("features").write_inner_content(|w| {
                w.create_element("acpi").write_empty()?;
                // tb-cache is a TCG setting; libvirt rejects <tcg> for other domain types.
                if def.domain_type == "qemu" {
                    w.create_element("tcg").write_inner_content(|w| {
                        w.create_element("tb-cache")
                            .with_attribute(("unit", "MiB"))
                            .write_text_content(BytesText::new(&TCG_TB_CACHE_MIB.to_string()))?;
                        Ok::<_, std::io::Error>(())
                    })?;
                }
                Ok::<_, std::io::Error>(())
            })?;
            w.create_element("clock")
                .with_attribute(("offset", "utc"))
                .write_empty()?;
            // A unikernel that powers off, reboots (triple fault) or crashes is finished;
            // the daemon decides about restarts, not libvirt.
            text_element(w, "on_poweroff", "destroy")?;
            text_element(w, "on_reboot", "destroy")?;
            text_element(w, "on_crash", "destroy")?;
            w.create_element("devices").write_inner_content(|w| {
                for nic in &def.nics {
                    let slot = nic.pci_slot.map(|s| format!("0x{s:02x}"));
                    let kind = if nic.emulated.is_some() {
                        "udp"
                    } else {
                        "bridge"
                    };
                    w.create_element("interface")
                        .with_attribute(("type", kind))
                        .write_inner_content(|w| {
                            match nic.emulated {
                                // QEMU's `-netdev socket,udp=`: one frame per datagram, to
                                // the emulator and from the NIC's own port.
                                Some(port) => {
                                    let emulator = port.emulator_port.to_string();
                                    let local = port.local_port.to_string();
                                    let emulator_address = port.emulator_address.to_string();
                                    let local_address = port.local_address.to_string();
                                    w.create_element("source")
                                        .with_attribute(("address", emulator_address.as_str()))
                                        .with_attribute(("port", emulator.as_str()))
                                        .write_inner_content(|w| {
                                            w.create_element("local")
                                                .with_attribute(("address", local_address.as_str()))
                                                .with_attribute(("port", local.as_str()))
                                                .write_empty()?;
                                            Ok::<_, std::io::Error>(())
                                        })?;
                                }
                                None => {
                                    w.create_element("source")
                                        .with_attribute(("bridge", nic.bridge.as_str()))
                                        .write_empty()?;
                                }
                            }
                            w.create_element("mac")
                                .with_attribute(("address", nic.mac.as_str()))
                                .write_empty()?;
                            // Solo5 speaks legacy virtio-pci only; "transitional" stays
                            // legacy-capable on any machine type.
                            w.create_element("model")
                                .with_attribute(("type", "virtio-transitional"))
                                .write_empty()?;
                            if let Some(bps) = nic.rate_bps {
                                // libvirt counts in kilobytes (1024 bytes) per second;
                                // `outbound` is what the guest sends. The burst is 10 ms of
                                // the rate, at least one full frame.
                                let kib = (bps / 8 / 1024).max(1);
                                let burst = (kib / 100).max(2);
                                w.create_element("bandwidth").write_inner_content(|w| {
                                    w.create_element("outbound")
                                        .with_attribute(("average", kib.to_string().as_str()))
                                        .with_attribute(("burst", burst.to_string().as_str()))
                                        .write_empty()?;
                                    Ok::<_, std::io::Error>(())
                                })?;
                            }
                            if let Some(slot) = &slot {
                                w.create_element("address")
                                    .with_attribute(("type", "pci"))
                                    .with_attribute(("domain", "0x0000"))
                                    .with_attribute(("bus", "0x00"))
                                    .with_attribute(("slot", slot.as_str()))
                                    .with_attribute(("function", "0x0"))
                                    .write_empty()?;
                            }
                            Ok::<_, std::io::Error>(())
                        })?;
                }
                for (i, disk) in def.disks.iter().enumerate() {
                    write_disk(w, i, disk)?;
                }
                w.create_element("serial")
                    .with_attribute(("type", "file"))
                    .write_inner_content(|w| {
                        w.create_element("source")
                            .with_attribute(("path", console))
                            .with_attribute(("append", "on"))
                            .write_empty()?;
                        w.create_element("target")
                            .with_attribute(("port", "0"))
                            .write_empty()?;
                        Ok::<_, std::io::Error>(())
                    })?;
                w.create_element("controller")
                    .with_attribute(("type", "usb"))
                    .with_attribute(("model", "none"))
                    .write_empty()?;
                w.create_element("memballoon")
                    .with_attribute(("model", "none"))
                    .write_empty()?;
                Ok::<_, std::io::Error>(())
            })?;
            Ok::<_, std::io::Error>(())
        })?;
    let bytes = w.into_inner();
    // The writer only ever receives &str, so its output is UTF-8.
    Ok(String::from_utf8(bytes).expect("XML writer output is UTF-8"))
}

/// Which of rhyzome's metadata namespaces a libvirt `<metadata>` element was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkVersion {
    Current,
    Legacy,
}

/// The mark in rhyzome's metadata element as libvirt returns it for one namespace
/// (`<instance xmlns="urn:rhyzome:instance:2" name=".." host=".." daemon=".."/>`).
pub fn mark_from_metadata(xml: &str, version: MarkVersion) -> Option<DomainMark> {
    let mut reader = quick_xml::Reader::from_str(xml);
    loop {
        match reader.read_event().ok()? {
            quick_xml::events::Event::Empty(e) | quick_xml::events::Event::Start(e)
                if e.local_name().as_ref() == b"instance" =>
            {
                let attribute = |name: &str| -> Option<String> {
                    let attr = e.try_get_attribute(name).ok()??;
                    attr.unescape_value().ok().map(|v| v.into_owned())
                };
                let host = attribute("host")?;
                let daemon = match version {
                    // A current mark without its daemon is not one this code wrote.
                    MarkVersion::Current => Some(attribute("daemon")?),
                    MarkVersion::Legacy => None,
                };
                return Some(DomainMark { daemon, host });
            }
            quick_xml::events::Event::Eof => return None,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Nic;
    use quick_xml::events::Event;
    use quick_xml::Reader;

    /// The mark recorded in a whole domain XML document (its `<metadata>` element), if any; the
    /// current namespace wins over the legacy one.
    fn mark_from_domain_xml(xml: &str) -> Option<DomainMark> {
        if xml.contains(METADATA_NAMESPACE) {
            mark_from_metadata(xml, MarkVersion::Current)
        } else if xml.contains(LEGACY_METADATA_NAMESPACE) {
            mark_from_metadata(xml, MarkVersion::Legacy)
        } else {
            None
        }
    }

    fn sample() -> DomainDefinition {
        DomainDefinition {
            domain_type: "qemu",
            domain_name: "rhyzome-msgrouter".into(),
            uuid: "6c1b1d4e-2a53-4ac1-9e2b-7d1f0a4b9c11".into(),
            instance_name: "msgrouter".into(),
            hostname: "localhost".into(),
            daemon_id: "0b6f1f8e-1d52-4c43-9a1e-3f7e2b8a9c10".into(),
            memory_mib: 32,
            vcpus: 1,
            kernel: "/var/lib/rhyzome/blobs/sha256-ab".into(),
            cmdline: "--ipv4-gateway 192.168.100.1 --ipv4 192.168.100.43/24".into(),
            nics: vec![Nic {
                bridge: "br0".into(),
                mac: "02:52:01:02:03:04".into(),
                pci_slot: None,
                emulated: None,
                rate_bps: None,
            }],
            console_log: "/var/lib/rhyzome/consoles/x.log".into(),
            disks: Vec::new(),
        }
    }

    #[test]
    fn several_nics_get_fixed_slots_in_order() {
        let mut d = sample();
        d.nics = (0..2)
            .map(|i| Nic {
                bridge: format!("br{i}"),
                mac: format!("02:00:00:00:00:0{i}"),
                pci_slot: Some(3 + i),
                emulated: None,
                rate_bps: None,
            })
            .collect();
        let xml = render(&d).unwrap();
        assert_eq!(xml.matches("<interface").count(), 2, "{xml}");
        let first = xml.find("<source bridge=\"br0\"/>").unwrap();
        let second = xml.find("<source bridge=\"br1\"/>").unwrap();
        assert!(first < second);
        assert!(xml.contains("slot=\"0x03\""));
        assert!(xml.contains("slot=\"0x04\""));
        assert!(!render(&sample()).unwrap().contains("<address"));
    }

    /// Text of every element called `name`, unescaped, in document order.
    fn texts(xml: &str, name: &str) -> Vec<String> {
        let mut r = Reader::from_str(xml);
        let mut out = Vec::new();
        let mut inside = false;
        loop {
            match r.read_event().expect("well-formed XML") {
                Event::Start(e) if e.name().as_ref() == name.as_bytes() => inside = true,
                Event::Text(t) if inside => {
                    out.push(t.unescape().unwrap().into_owned());
                    inside = false;
                }
                Event::Eof => break,
                _ => {}
            }
        }
        out
    }

    #[test]
    fn solo5_needs_are_met() {
        let xml = render(&sample()).unwrap();
        for needle in [
            "<domain type=\"qemu\">",
            "machine=\"pc\"",
            "<acpi/>",
            "<on_poweroff>destroy</on_poweroff>",
            "<model type=\"virtio-transitional\"/>",
            "<mac address=\"02:52:01:02:03:04\"/>",
            "<source bridge=\"br0\"/>",
            "<serial type=\"file\">",
            "<controller type=\"usb\" model=\"none\"/>",
            "<memballoon model=\"none\"/>",
            "<memory unit=\"MiB\">32</memory>",
            "xmlns:rhyzome=\"urn:rhyzome:instance:2\"",
            "daemon=\"0b6f1f8e-1d52-4c43-9a1e-3f7e2b8a9c10\"",
            "<tb-cache unit=\"MiB\">16</tb-cache>",
        ] {
            assert!(xml.contains(needle), "missing {needle} in\n{xml}");
        }
        assert!(!xml.contains("<graphics"));
        assert_eq!(texts(&xml, "cmdline"), vec![sample().cmdline]);
    }

    #[test]
    fn tb_cache_only_under_tcg() {
        let xml = render(&sample()).unwrap();
        assert_eq!(texts(&xml, "tb-cache"), vec!["16".to_string()]);
        let mut d = sample();
        d.domain_type = "kvm";
        let xml = render(&d).unwrap();
        assert!(
            !xml.contains("<tcg"),
            "kvm domain with a TCG setting:\n{xml}"
        );
        assert!(xml.contains("<acpi/>"));
    }

    #[test]
    fn an_emulated_nic_is_a_udp_socket_pair_and_a_rate_is_bandwidth() {
        let mut d = sample();
        let local = std::net::Ipv4Addr::LOCALHOST;
        d.nics[0].emulated = Some(crate::backend::EmulatedPort {
            emulator_address: local,
            emulator_port: 40000,
            local_address: local,
            local_port: 40001,
        });
        let xml = render(&d).unwrap();
        for needle in [
            "<interface type=\"udp\">",
            "<source address=\"127.0.0.1\" port=\"40000\">",
            "<local address=\"127.0.0.1\" port=\"40001\"/>",
            "<mac address=\"02:52:01:02:03:04\"/>",
            "<model type=\"virtio-transitional\"/>",
        ] {
            assert!(xml.contains(needle), "missing {needle} in\n{xml}");
        }
        assert!(!xml.contains("bridge="), "{xml}");
        assert!(!xml.contains("<bandwidth"));
        // On a remote host: to the controller's address, from the host's.
        d.nics[0].emulated = Some(crate::backend::EmulatedPort {
            emulator_address: "10.8.0.1".parse().unwrap(),
            emulator_port: 40000,
            local_address: "10.8.0.2".parse().unwrap(),
            local_port: 40001,
        });
        let xml = render(&d).unwrap();
        assert!(
            xml.contains("<source address=\"10.8.0.1\" port=\"40000\">"),
            "{xml}"
        );
        assert!(
            xml.contains("<local address=\"10.8.0.2\" port=\"40001\"/>"),
            "{xml}"
        );

        let mut d = sample();
        d.nics[0].rate_bps = Some(10_000_000);
        let xml = render(&d).unwrap();
        assert!(
            xml.contains("<outbound average=\"1220\" burst=\"12\"/>"),
            "{xml}"
        );
        assert_eq!(xml.matches("<bandwidth>").count(), 1);
    }

    #[test]
    fn no_network_means_no_interface() {
        let mut d = sample();
        d.nics.clear();
        assert!(!render(&d).unwrap().contains("<interface"));
    }

    #[test]
    fn hostile_strings_stay_text() {
        let mut d = sample();
        d.cmdline = "</cmdline><devices><disk type='file'/></devices> & \"'".into();
        d.hostname = "h\"/><evil/>".into();
        let xml = render(&d).unwrap();
        assert_eq!(texts(&xml, "cmdline"), vec![d.cmdline.clone()]);
        assert!(!xml.contains("<disk"));
        assert!(!xml.contains("<evil"));
        assert_eq!(
            mark_from_domain_xml(&xml).map(|m| m.host).as_deref(),
            Some("h\"/><evil/>")
        );
    }

    #[test]
    fn marks_are_read_back_from_libvirt_metadata() {
        let current =
            r#"<instance xmlns="urn:rhyzome:instance:2" name="a" host="node&amp;1" daemon="d-1"/>"#;
        assert_eq!(
            mark_from_metadata(current, MarkVersion::Current),
            Some(DomainMark {
                daemon: Some("d-1".into()),
                host: "node&1".into()
            })
        );
        let legacy = r#"<instance xmlns="urn:rhyzome:instance:1" name="a" host="h"/>"#;
        assert_eq!(
            mark_from_metadata(legacy, MarkVersion::Legacy),
            Some(DomainMark {
                daemon: None,
                host: "h".into()
            })
        );
        // A current-namespace mark without its daemon is nobody's.
        assert_eq!(mark_from_metadata(legacy, MarkVersion::Current), None);
        assert_eq!(mark_from_metadata("<other/>", MarkVersion::Legacy), None);
        assert_eq!(
            mark_from_domain_xml("<domain><name>x</name></domain>"),
            None
        );
        let rendered = render(&sample()).unwrap();
        assert_eq!(
            mark_from_domain_xml(&rendered).and_then(|m| m.daemon),
            Some(sample().daemon_id)
        );
        let old = rendered
            .replace("urn:rhyzome:instance:2", "urn:rhyzome:instance:1")
            .replace(" daemon=\"0b6f1f8e-1d52-4c43-9a1e-3f7e2b8a9c10\"", "");
        assert_eq!(mark_from_domain_xml(&old).unwrap().daemon, None);
    }

    #[test]
    fn disks_follow_in_order_at_their_slots_with_their_mode() {
        let mut def = sample();
        def.disks = vec![
            Disk {
                pool: "pool <&>".into(),
                volume: "rhyzome-vol-1".into(),
                format: "raw",
                read_only: false,
                pci_slot: 4,
            },
            Disk {
                pool: "p".into(),
                volume: "rhyzome-vol-2".into(),
                format: "qcow2",
                read_only: true,
                pci_slot: 5,
            },
        ];
        let xml = render(&def).unwrap();
        let first = xml.find("rhyzome-vol-1").unwrap();
        let second = xml.find("rhyzome-vol-2").unwrap();
        assert!(first < second, "{xml}");
        assert!(
            xml.contains("<source pool=\"pool &lt;&amp;&gt;\" volume=\"rhyzome-vol-1\"/>"),
            "{xml}"
        );
        assert!(
            xml.contains("<driver name=\"qemu\" type=\"qcow2\"/>"),
            "{xml}"
        );
        assert!(xml.contains("slot=\"0x04\""), "{xml}");
        assert!(xml.contains("slot=\"0x05\""), "{xml}");
        assert!(
            xml.contains("<target dev=\"vdb\" bus=\"virtio\"/>"),
            "{xml}"
        );
        assert_eq!(xml.matches("<readonly/>").count(), 1, "{xml}");
        assert!(xml.find("<readonly/>").unwrap() > first, "{xml}");
        assert_eq!(disk_target(27), "vdab");
    }
}
