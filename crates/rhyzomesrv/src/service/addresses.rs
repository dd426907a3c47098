//! Instances on managed networks: which NICs join which network, the addresses they get
//! (IPAM), the DHCP entries that mirror them, and the kernel-parameter placeholders filled in
//! from them.
//!
//! A NIC on a managed network is an attachment with the network's bridge, its `network` and
//! its `address` (`store::attachments::Attachment`), so the domain XML is the same as for a
//! host bridge. The address is given in the transaction that inserts the instance
//! ([`crate::store::Store::insert_with_addresses`]), so concurrent creates never share one; it
//! stays with the instance (across restarts, daemon restarts and host reboots, as it lives in
//! the store) and goes with its record.

use super::{Service, ServiceError};
use crate::auth::Caller;
use crate::backend::network::DhcpHost;
use crate::store::attachments::Attachment;
use crate::store::networks::{AddressRefusal, NetworkRecord};
use crate::store::{InstanceRecord, StoreError};
use rhyzome_api::placeholders::{Address, NicValues, Template, Values};
use rhyzome_api::validate::FieldError;
use rhyzome_api::InstanceSpec;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

/// The managed networks a create asked for, resolved.
#[derive(Debug, Default)]
pub(super) struct ManagedAttachments {
    /// The single NIC's network and the address asked for.
    pub single: Option<(NetworkRecord, Option<Ipv4Addr>)>,
    /// Managed networks of `nets`, by device.
    pub devices: BTreeMap<String, NetworkRecord>,
}

impl Service {
    /// Resolves `network.name` (which must be a managed network the caller sees) and the
    /// values of `nets` that name one (a managed network wins over a host bridge of the same
    /// name). Returns the spec with each managed network replaced by its bridge, and the
    /// single NIC's bridge, for the device planning that follows.
    pub(super) fn resolve_managed(
        &self,
        spec: &InstanceSpec,
        network_name: Option<&str>,
        requested: Option<Ipv4Addr>,
        caller: &Caller,
    ) -> Result<(InstanceSpec, Option<String>, ManagedAttachments), ServiceError> {
        let visible = |name: &str| -> Result<Option<NetworkRecord>, ServiceError> {
            Ok(self
                .store
                .network_by_name(name)?
                .filter(|_| caller.sees(name)))
        };
        let mut managed = ManagedAttachments::default();
        let mut bridge = None;
        if let Some(name) = network_name {
            let network = visible(name)?.ok_or_else(|| {
                FieldError::new(
                    "network.name",
                    format!("there is no managed network named {name:?}"),
                )
            })?;
            bridge = Some(network.bridge.clone());
            managed.single = Some((network, requested));
        }
        let mut spec = spec.clone();
        if let Some(nets) = spec.nets.as_mut() {
            for (device, target) in nets.iter_mut() {
                if let Some(network) = visible(target)? {
                    *target = network.bridge.clone();
                    managed.devices.insert(device.clone(), network);
                }
            }
        }
        Ok((spec, bridge, managed))
    }

    /// Marks the planned attachments that are on managed networks: the single NIC with
    /// `network.name`'s network (and the address asked for), each device with its own.
    pub(super) fn join_networks(managed: &ManagedAttachments, attachments: &mut [Attachment]) {
        for a in attachments.iter_mut() {
            let joined = match &a.device {
                None => managed.single.as_ref().map(|(n, ip)| (n, *ip)),
                Some(device) => managed.devices.get(device).map(|n| (n, None)),
            };
            if let Some((network, requested)) = joined {
                a.network = Some(network.id.clone());
                a.address = requested;
            }
        }
    }

    /// Checks the host bridges of `attachments` against the bridges `caller`'s token may use.
    /// A NIC on a managed network is not checked here: the caller sees that network (its
    /// name prefix), which is what lets it use the network's bridge.
    pub(super) fn check_host_bridges(
        attachments: &[Attachment],
        caller: &Caller,
    ) -> Result<(), ServiceError> {
        for a in attachments.iter().filter(|a| a.network.is_none()) {
            let field = if a.device.is_some() {
                "nets"
            } else {
                "network.bridge"
            };
            caller.check_bridge(&a.bridge, field)?;
        }
        Ok(())
    }

    /// Checks before anything is written that every placeholder of `template` will have a
    /// value (the planned attachments say which NICs will have addresses).
    pub(super) fn check_placeholders(
        template: &Template,
        name: &str,
        attachments: &[Attachment],
    ) -> Result<(), FieldError> {
        let planned = |a: &Attachment| {
            a.network.as_ref().map(|_| Address {
                ip: Ipv4Addr::UNSPECIFIED,
                prefix: 0,
                gateway: Ipv4Addr::UNSPECIFIED,
            })
        };
        // Only "has a value" is checked here: lengths are checked with the real addresses.
        match template.expand(&values_of(name, attachments, planned)) {
            Err(e) if e.message.contains("has no value") => Err(e),
            _ => Ok(()),
        }
    }

    /// The kernel parameters of `r` with their placeholders filled in, as they reach the
    /// guest. Instances made before placeholders existed may hold text that does not parse
    /// as a template; theirs are used as written.
    pub(super) fn expanded_parameters(&self, r: &InstanceRecord) -> Result<String, ServiceError> {
        let Ok(template) = Template::parse(&r.kernel_parameters) else {
            return Ok(r.kernel_parameters.clone());
        };
        let networks: HashMap<String, NetworkRecord> = self
            .store
            .networks()?
            .into_iter()
            .map(|n| (n.id.clone(), n))
            .collect();
        let address_of = |a: &Attachment| {
            let n = networks.get(a.network.as_ref()?)?;
            Some(Address {
                ip: a.address?,
                prefix: n.subnet.prefix(),
                gateway: n.gateway,
            })
        };
        Ok(template.expand(&values_of(&r.name, &r.attachments, address_of))?)
    }

    /// Inserts `record`, giving its NICs on managed networks their addresses, and adds the
    /// DHCP entries of networks that run DHCP. Returns the record with the addresses given.
    /// An address refused is a 409 (taken, subnet full) or a 422 (outside the subnet, the
    /// gateway) naming the field.
    pub(super) async fn insert_with_addresses(
        &self,
        mut record: InstanceRecord,
        image: Option<&str>,
        volumes: &[crate::store::volumes::AttachmentRow],
    ) -> Result<InstanceRecord, ServiceError> {
        let single = record.attachments.iter().all(|a| a.device.is_none());
        let field = if single { "network.ipv4" } else { "nets" };
        match self.store.insert_with_addresses(&record, image, volumes) {
            Ok(attachments) => record.attachments = attachments,
            Err(StoreError::Address(refusal)) => {
                let message = refusal.to_string();
                return Err(match refusal {
                    AddressRefusal::Taken { .. }
                    | AddressRefusal::Full { .. }
                    | AddressRefusal::NoEmulatorPort => ServiceError::Conflict {
                        field: Some(field),
                        message,
                    },
                    AddressRefusal::Outside { .. } | AddressRefusal::Gateway { .. } => {
                        FieldError::new(field, message).into()
                    }
                    AddressRefusal::NoNetwork(_) => ServiceError::Conflict {
                        field: Some("network.name"),
                        message: "the network was deleted meanwhile".into(),
                    },
                });
            }
            Err(e) => return Err(Self::explain_insert_error(e)),
        }
        self.update_dhcp_entries(&record, true).await;
        Ok(record)
    }

    /// Adds (`present`) or removes the DHCP entries of `r`'s addresses on networks that run
    /// DHCP. A failure is logged: the networks' reconcile pass corrects the entries from the
    /// store.
    pub(super) async fn update_dhcp_entries(&self, r: &InstanceRecord, present: bool) {
        for a in &r.attachments {
            let (Some(network_id), Some(ip)) = (&a.network, a.address) else {
                continue;
            };
            let network = match self.store.network_by_id(network_id) {
                Ok(Some(n)) if n.dhcp => n,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read a network");
                    continue;
                }
            };
            let host = DhcpHost {
                mac: a.mac.clone(),
                ip,
            };
            self.set_dhcp_entry("", &network.name, host.clone(), present)
                .await;
            // A guest on another host takes its address from that host's copy of the network.
            if self.host_name(&r.host) != self.hosts().primary().name() {
                self.set_dhcp_entry(&r.host, &network.name, host, present)
                    .await;
            }
        }
    }
}

/// What the placeholders of an instance with these attachments can take.
fn values_of(
    name: &str,
    attachments: &[Attachment],
    address_of: impl Fn(&Attachment) -> Option<Address>,
) -> Values {
    let nic = |a: &Attachment| NicValues {
        mac: a.mac.clone(),
        address: address_of(a),
    };
    Values {
        name: name.to_string(),
        single: match attachments {
            [only] => Some(nic(only)),
            _ => None,
        },
        devices: attachments
            .iter()
            .filter_map(|a| Some((a.device.clone()?, nic(a))))
            .collect(),
    }
}
