//! The libvirt network XML of a managed network, and reading back what matters from any
//! network's XML (its mark, subnets, bridge, DHCP hosts).
//!
//! Written with an XML writer that escapes every value. Names, MACs and addresses are
//! validated before they get here, but escaping keeps that a second line, not the only one.
//! Pure functions; no I/O.

use crate::backend::network::{DhcpHost, NetworkDefinition, NetworkMark, NetworkStatus};
use quick_xml::events::Event;
use quick_xml::Writer;
use rhyzome_api::networks::Ipv4Subnet;
use rhyzome_api::ForwardMode;
use std::net::Ipv4Addr;

/// XML namespace of the `<metadata>` element that marks networks as rhyzome's:
/// `<network name=".." daemon=".."/>`.
pub const NETWORK_METADATA_NAMESPACE: &str = "urn:rhyzome:network:1";

pub fn render(def: &NetworkDefinition) -> std::io::Result<String> {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    let address = def.gateway.to_string();
    let prefix = def.subnet.prefix().to_string();
    w.create_element("network").write_inner_content(|w| {
        w.create_element("name")
            .write_text_content(quick_xml::events::BytesText::new(&def.libvirt_name))?;
        w.create_element("metadata").write_inner_content(|w| {
            w.create_element("rhyzome:network")
                .with_attribute(("xmlns:rhyzome", NETWORK_METADATA_NAMESPACE))
                .with_attribute(("name", def.mark.name.as_str()))
                .with_attribute(("daemon", def.mark.daemon.as_str()))
                .write_empty()?;
            Ok::<_, std::io::Error>(())
        })?;
        match def.mode {
            // No <forward>: libvirt's isolated network.
            ForwardMode::Isolated => {}
            ForwardMode::Nat => {
                w.create_element("forward")
                    .with_attribute(("mode", "nat"))
                    .write_empty()?;
            }
            ForwardMode::Route => {
                w.create_element("forward")
                    .with_attribute(("mode", "route"))
                    .write_empty()?;
            }
        }
        w.create_element("bridge")
            .with_attribute(("name", def.bridge.as_str()))
            .with_attribute(("stp", "off"))
            .with_attribute(("delay", "0"))
            .write_empty()?;
        w.create_element("ip")
            .with_attribute(("address", address.as_str()))
            .with_attribute(("prefix", prefix.as_str()))
            .write_inner_content(|w| {
                if def.dhcp {
                    w.create_element("dhcp").write_inner_content(|w| {
                        for host in &def.hosts {
                            write_host(w, host)?;
                        }
                        Ok::<_, std::io::Error>(())
                    })?;
                }
                Ok::<_, std::io::Error>(())
            })?;
        Ok::<_, std::io::Error>(())
    })?;
    Ok(String::from_utf8(w.into_inner()).expect("the writer writes UTF-8"))
}

/// `<host mac=".." ip=".."/>`, the element `virNetworkUpdate` takes for a DHCP host.
pub fn host_element(host: &DhcpHost) -> std::io::Result<String> {
    let mut w = Writer::new(Vec::new());
    write_host(&mut w, host)?;
    Ok(String::from_utf8(w.into_inner()).expect("the writer writes UTF-8"))
}

fn write_host<W: std::io::Write>(w: &mut Writer<W>, host: &DhcpHost) -> std::io::Result<()> {
    let ip = host.ip.to_string();
    w.create_element("host")
        .with_attribute(("mac", host.mac.as_str()))
        .with_attribute(("ip", ip.as_str()))
        .write_empty()?;
    Ok(())
}

/// What a network's XML (`virNetworkGetXMLDesc`) says, whoever wrote it.
pub fn read(libvirt_name: &str, active: bool, xml: &str) -> NetworkStatus {
    let mut status = NetworkStatus {
        libvirt_name: libvirt_name.to_string(),
        active,
        mark: None,
        subnets: Vec::new(),
        bridge: None,
        hosts: Vec::new(),
    };
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut in_metadata = false;
    loop {
        let e = match reader.read_event() {
            Ok(Event::Start(e)) => {
                if e.local_name().as_ref() == b"metadata" {
                    in_metadata = true;
                }
                e
            }
            Ok(Event::Empty(e)) => e,
            Ok(Event::End(e)) => {
                if e.local_name().as_ref() == b"metadata" {
                    in_metadata = false;
                }
                continue;
            }
            Ok(Event::Eof) | Err(_) => return status,
            _ => continue,
        };
        let attribute = |name: &str| -> Option<String> {
            let attr = e.try_get_attribute(name).ok()??;
            attr.unescape_value().ok().map(|v| v.into_owned())
        };
        match e.local_name().as_ref() {
            b"network" if in_metadata && is_rhyzome_mark(&e) => {
                if let (Some(daemon), Some(name)) = (attribute("daemon"), attribute("name")) {
                    status.mark = Some(NetworkMark { daemon, name });
                }
            }
            b"bridge" if !in_metadata => status.bridge = attribute("name"),
            b"ip" if !in_metadata => {
                let family_v4 = attribute("family").is_none_or(|f| f == "ipv4");
                let address = attribute("address").and_then(|a| a.parse::<Ipv4Addr>().ok());
                let prefix = attribute("prefix")
                    .and_then(|p| p.parse::<u8>().ok())
                    .or_else(|| {
                        attribute("netmask")
                            .and_then(|m| m.parse::<Ipv4Addr>().ok())
                            .map(|m| u32::from(m).count_ones() as u8)
                    });
                if let (true, Some(address), Some(prefix)) = (family_v4, address, prefix) {
                    status.subnets.push(Ipv4Subnet::containing(address, prefix));
                }
            }
            b"host" if !in_metadata => {
                let ip = attribute("ip").and_then(|a| a.parse::<Ipv4Addr>().ok());
                if let (Some(mac), Some(ip)) = (attribute("mac"), ip) {
                    status.hosts.push(DhcpHost { mac, ip });
                }
            }
            _ => {}
        }
    }
}

/// Whether an element in `<metadata>` is in rhyzome's network namespace (libvirt keeps the
/// prefix it was written with, so the namespace declaration is what counts).
fn is_rhyzome_mark(e: &quick_xml::events::BytesStart<'_>) -> bool {
    e.attributes().flatten().any(|a| {
        a.key.as_ref().starts_with(b"xmlns")
            && a.unescape_value()
                .is_ok_and(|v| v == NETWORK_METADATA_NAMESPACE)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NetworkDefinition {
        NetworkDefinition {
            libvirt_name: "rhyzome-lab".into(),
            bridge: "rzn-0123abcd".into(),
            subnet: Ipv4Subnet::parse("10.20.0.0/24").unwrap(),
            gateway: Ipv4Addr::new(10, 20, 0, 1),
            mode: ForwardMode::Isolated,
            dhcp: true,
            hosts: vec![DhcpHost {
                mac: "02:00:00:00:00:01".into(),
                ip: Ipv4Addr::new(10, 20, 0, 2),
            }],
            mark: NetworkMark {
                daemon: "d-1".into(),
                name: "lab".into(),
            },
        }
    }

    #[test]
    fn what_is_rendered_is_read_back() {
        let def = sample();
        let xml = render(&def).unwrap();
        assert!(!xml.contains("<forward"), "isolated has no forward: {xml}");
        let status = read("rhyzome-lab", true, &xml);
        assert_eq!(status.mark, Some(def.mark.clone()));
        assert_eq!(status.subnets, vec![def.subnet]);
        assert_eq!(status.bridge.as_deref(), Some("rzn-0123abcd"));
        assert_eq!(status.hosts, def.hosts);
        let nat = render(&NetworkDefinition {
            mode: ForwardMode::Nat,
            dhcp: false,
            ..def
        })
        .unwrap();
        assert!(nat.contains("<forward mode=\"nat\"/>"), "{nat}");
        assert!(!nat.contains("<dhcp"), "{nat}");
    }

    #[test]
    fn marks_are_read_as_libvirt_returns_them() {
        // As libvirt 9.0 prints a network defined with our metadata (lab, net-dumpxml).
        let xml = "<network>\n  <name>rhyzome-probe</name>\n  <uuid>e523acfc-6139-473d-a507-35c7e4878060</uuid>\n  \
                   <metadata>\n    <rhyzome:network xmlns:rhyzome=\"urn:rhyzome:network:1\" name=\"probe\" daemon=\"abc\"/>\n  </metadata>\n  \
                   <bridge name='rzn-probe0' stp='off' delay='0'/>\n  <mac address='52:54:00:98:8c:59'/>\n  \
                   <ip address='10.77.0.1' prefix='24'>\n    <dhcp>\n      <host mac='02:00:00:00:00:01' ip='10.77.0.5'/>\n    </dhcp>\n  </ip>\n</network>\n";
        let status = read("rhyzome-probe", false, xml);
        assert_eq!(
            status.mark,
            Some(NetworkMark {
                daemon: "abc".into(),
                name: "probe".into()
            })
        );
        assert_eq!(
            status.subnets,
            vec![Ipv4Subnet::parse("10.77.0.0/24").unwrap()]
        );
        // libvirt's default network: a netmask, no mark.
        let default = "<network><name>default</name><bridge name='virbr0'/>\
                       <ip address='192.168.122.1' netmask='255.255.255.0'/></network>";
        let status = read("default", false, default);
        assert_eq!(status.mark, None);
        assert_eq!(
            status.subnets,
            vec![Ipv4Subnet::parse("192.168.122.0/24").unwrap()]
        );
        // Another tool's metadata in another namespace is no mark.
        let foreign = "<network><metadata><x:network xmlns:x='urn:other' name='a' daemon='b'/>\
                       </metadata></network>";
        assert_eq!(read("n", true, foreign).mark, None);
    }

    #[test]
    fn hostile_strings_stay_attribute_values() {
        let mut def = sample();
        def.mark.name = "\"/><forward mode='nat'/><x a=\"".into();
        let xml = render(&def).unwrap();
        assert!(!xml.contains("<forward"), "{xml}");
        assert_eq!(read("x", true, &xml).mark.unwrap().name, def.mark.name);
    }
}
