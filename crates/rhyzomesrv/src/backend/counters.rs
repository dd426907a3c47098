//! The counters of every running domain, read in one bulk call
//! ([`super::Hypervisor::all_counters`], libvirt's `virConnectGetAllDomainStats`) for
//! `GET /metrics`, and how libvirt's flat `name = value` statistics become them.
//!
//! Parsing is separate from the libvirt call so that it is tested without libvirt: the
//! parameter names are libvirt's own (`cpu.time`, `balloon.current`, `net.0.rx.bytes`, ...).

/// What one running domain has used so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainCounters {
    pub uuid: String,
    pub name: String,
    /// Total CPU time, in nanoseconds (`cpu.time`).
    pub cpu_time_ns: u64,
    /// Memory currently given to the guest, in KiB (`balloon.current`).
    pub memory_kib: u64,
    /// Memory the guest may use at most, in KiB (`balloon.maximum`).
    pub max_memory_kib: u64,
    /// vCPUs the guest runs with (`vcpu.current`).
    pub vcpus: u64,
    /// In the order of the domain's `<interface>` elements, which is the order rhyzome wrote
    /// its NICs in.
    pub interfaces: Vec<InterfaceCounters>,
    pub blocks: Vec<BlockCounters>,
}

/// A NIC's counters as libvirt reports them (`rx` is what the guest received).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceCounters {
    /// The host side of the NIC (`vnet3`).
    pub target_device: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_drops: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_drops: u64,
}

/// A disk's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockCounters {
    /// The guest's name for the disk (`vda`).
    pub target_device: String,
    pub read_bytes: u64,
    pub read_requests: u64,
    pub write_bytes: u64,
    pub write_requests: u64,
}

/// One value of libvirt's typed parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    Number(u64),
    /// A signed value (libvirt's `-1` is "not available").
    Signed(i64),
    Float(f64),
    Text(String),
}

impl ParamValue {
    fn number(&self) -> u64 {
        match self {
            ParamValue::Number(n) => *n,
            ParamValue::Signed(n) => u64::try_from(*n).unwrap_or(0),
            ParamValue::Float(f) if *f >= 0.0 => *f as u64,
            _ => 0,
        }
    }
}

/// The counters of one domain from its flat statistics. Absent values are zero, as the
/// exporters report them.
pub fn from_params(uuid: &str, name: &str, params: &[(String, ParamValue)]) -> DomainCounters {
    let mut out = DomainCounters {
        uuid: uuid.to_string(),
        name: name.to_string(),
        ..Default::default()
    };
    for (key, value) in params {
        let mut parts = key.splitn(3, '.');
        let (Some(group), Some(second)) = (parts.next(), parts.next()) else {
            continue;
        };
        let rest = parts.next();
        match (group, second, rest) {
            ("cpu", "time", None) => out.cpu_time_ns = value.number(),
            ("balloon", "current", None) => out.memory_kib = value.number(),
            ("balloon", "maximum", None) => out.max_memory_kib = value.number(),
            ("vcpu", "current", None) => out.vcpus = value.number(),
            ("net", index, Some(field)) => {
                let Some(nic) = slot(&mut out.interfaces, index) else {
                    continue;
                };
                match field {
                    "name" => {
                        if let ParamValue::Text(t) = value {
                            nic.target_device = t.clone();
                        }
                    }
                    "rx.bytes" => nic.rx_bytes = value.number(),
                    "rx.pkts" => nic.rx_packets = value.number(),
                    "rx.errs" => nic.rx_errors = value.number(),
                    "rx.drop" => nic.rx_drops = value.number(),
                    "tx.bytes" => nic.tx_bytes = value.number(),
                    "tx.pkts" => nic.tx_packets = value.number(),
                    "tx.errs" => nic.tx_errors = value.number(),
                    "tx.drop" => nic.tx_drops = value.number(),
                    _ => {}
                }
            }
            ("block", index, Some(field)) => {
                let Some(disk) = slot(&mut out.blocks, index) else {
                    continue;
                };
                match field {
                    "name" => {
                        if let ParamValue::Text(t) = value {
                            disk.target_device = t.clone();
                        }
                    }
                    "rd.bytes" => disk.read_bytes = value.number(),
                    "rd.reqs" => disk.read_requests = value.number(),
                    "wr.bytes" => disk.write_bytes = value.number(),
                    "wr.reqs" => disk.write_requests = value.number(),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    out
}

/// The entry numbered `index` (libvirt numbers devices from 0), growing the list to it. A
/// malformed or absurd index is ignored rather than allowed to allocate without bound.
fn slot<'a, T: Default>(list: &'a mut Vec<T>, index: &str) -> Option<&'a mut T> {
    const MAX_DEVICES: usize = 256;
    let index = index.parse::<usize>().ok().filter(|i| *i < MAX_DEVICES)?;
    if list.len() <= index {
        list.resize_with(index + 1, T::default);
    }
    list.get_mut(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(k: &str, v: ParamValue) -> (String, ParamValue) {
        (k.to_string(), v)
    }

    #[test]
    fn libvirt_statistics_become_counters() {
        use ParamValue::*;
        // As libvirt 9.0 reports a one-NIC Solo5 guest (virsh domstats, abridged).
        let params = vec![
            p("state.state", Signed(1)),
            p("cpu.time", Number(1_234_567_890)),
            p("cpu.user", Number(5)),
            p("balloon.current", Number(32768)),
            p("balloon.maximum", Number(65536)),
            p("vcpu.current", Signed(2)),
            p("vcpu.maximum", Signed(2)),
            p("net.count", Number(1)),
            p("net.0.name", Text("vnet7".into())),
            p("net.0.rx.bytes", Number(1000)),
            p("net.0.rx.pkts", Number(10)),
            p("net.0.rx.errs", Number(1)),
            p("net.0.rx.drop", Number(2)),
            p("net.0.tx.bytes", Number(2000)),
            p("net.0.tx.pkts", Number(20)),
            p("net.0.tx.errs", Number(3)),
            p("net.0.tx.drop", Number(4)),
            p("block.count", Number(1)),
            p("block.0.name", Text("vda".into())),
            p("block.0.rd.bytes", Number(512)),
            p("block.0.rd.reqs", Number(1)),
            p("block.0.wr.bytes", Number(1024)),
            p("block.0.wr.reqs", Number(2)),
        ];
        let c = from_params("u-1", "rhyzome-a", &params);
        assert_eq!(c.cpu_time_ns, 1_234_567_890);
        assert_eq!((c.memory_kib, c.max_memory_kib, c.vcpus), (32768, 65536, 2));
        assert_eq!(
            c.interfaces,
            vec![InterfaceCounters {
                target_device: "vnet7".into(),
                rx_bytes: 1000,
                rx_packets: 10,
                rx_errors: 1,
                rx_drops: 2,
                tx_bytes: 2000,
                tx_packets: 20,
                tx_errors: 3,
                tx_drops: 4,
            }]
        );
        assert_eq!(
            c.blocks,
            vec![BlockCounters {
                target_device: "vda".into(),
                read_bytes: 512,
                read_requests: 1,
                write_bytes: 1024,
                write_requests: 2,
            }]
        );
    }

    #[test]
    fn missing_and_unavailable_values_are_zero() {
        let params = vec![
            p("net.1.rx.bytes", ParamValue::Signed(-1)),
            p("net.999999999999.rx.bytes", ParamValue::Number(5)),
            p("garbage", ParamValue::Number(5)),
        ];
        let c = from_params("u", "n", &params);
        assert_eq!(c.cpu_time_ns, 0);
        assert_eq!(c.interfaces.len(), 2, "{c:?}");
        assert_eq!(c.interfaces[1].rx_bytes, 0);
    }
}
