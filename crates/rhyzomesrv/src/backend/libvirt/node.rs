//! [`NodeInfo`] of a libvirt host: what the daemon learns of a host it is given (versions,
//! CPUs, memory, the domain types it offers), in a handful of calls that work the same over a
//! local socket and over `qemu+tcp://` or `qemu+tls://`. Pure reading; callable from any thread.

use crate::backend::NodeInfo;
use virt::connect::Connect;
use virt::error::Error as VirtError;

/// libvirt's encoding of versions: `major * 1_000_000 + minor * 1_000 + release`.
pub fn version_string(v: u32) -> String {
    format!("{}.{}.{}", v / 1_000_000, (v / 1_000) % 1_000, v % 1_000)
}

/// The host's facts, asked of libvirt.
pub fn node_info(conn: &Connect) -> Result<NodeInfo, VirtError> {
    let node = conn.node_info()?;
    // virNodeGetFreeMemory answers in bytes, virNodeGetInfo in KiB.
    let free_memory_kib = conn.free_memory()? / 1024;
    Ok(NodeInfo {
        libvirt_version: version_string(conn.lib_version()?),
        hypervisor: format!(
            "{} {}",
            conn.driver_type()?,
            version_string(conn.hyp_version()?)
        ),
        cpus: node.cpus,
        memory_kib: node.memory,
        free_memory_kib,
        domain_types: domain_types(&conn.capabilities()?),
    })
}

/// The distinct `<domain type='...'>` of the `<guest>`s in libvirt's capabilities XML, in
/// their order of appearance.
pub fn domain_types(capabilities: &str) -> Vec<String> {
    let mut reader = quick_xml::Reader::from_str(capabilities);
    let mut types: Vec<String> = Vec::new();
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e))
                if e.local_name().as_ref() == b"domain" =>
            {
                if let Some(t) = e
                    .try_get_attribute("type")
                    .ok()
                    .flatten()
                    .and_then(|a| a.unescape_value().ok())
                {
                    if !types.iter().any(|known| *known == t) {
                        types.push(t.into_owned());
                    }
                }
            }
            Ok(quick_xml::events::Event::Eof) | Err(_) => return types,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_libvirts_encoding() {
        assert_eq!(version_string(9_000_000), "9.0.0");
        assert_eq!(version_string(7_002_022), "7.2.22");
        assert_eq!(version_string(10_010_001), "10.10.1");
    }

    #[test]
    fn domain_types_come_from_the_guests_of_the_capabilities() {
        // As libvirt 9.0 prints them (abridged), with kvm offered through /dev/kvm.
        let caps = "<capabilities><host><uuid>x</uuid></host>\
            <guest><os_type>hvm</os_type><arch name='i686'><wordsize>32</wordsize>\
            <domain type='qemu'/><domain type='kvm'/></arch></guest>\
            <guest><os_type>hvm</os_type><arch name='x86_64'><wordsize>64</wordsize>\
            <domain type='qemu'/><domain type='kvm'>\n</domain></arch></guest></capabilities>";
        assert_eq!(domain_types(caps), vec!["qemu", "kvm"]);
        assert!(domain_types("garbage").is_empty());
    }
}
