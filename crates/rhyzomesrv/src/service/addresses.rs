//! Instances on managed networks: which NICs join which network, the addresses they get
//! (IPAM), the DHCP entries that mirror them, and the kernel-parameter placeholders filled in
//! from them.
//!
//! An address is given out in the transaction that inserts the instance
//! ([`crate::store::Store::insert_with_addresses`]), so concurrent creates never share one; it
//! stays with the instance (across restarts, daemon restarts and host reboots, as it lives in
//! the store) and goes with its record. The NICs keep the bridge of their network, so the
//! domain XML is the same as for a host bridge.

use super::boot_plan::Boot;
use super::{Service, ServiceError};
use crate::auth::Caller;
use crate::backend::network::DhcpHost;
use crate::store::images::NicRow;
use crate::store::networks::{AddressRefusal, AddressRequest, NetworkRecord};
use crate::store::{InstanceRecord, StoreError};
use rhyzome_api::placeholders::{Address, NicValues, Template, Values};
use rhyzome_api::validate::FieldError;
use rhyzome_api::InstanceSpec;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The device name of an instance's single NIC when its image names none.
pub const SINGLE_NIC_DEVICE: &str = "network";

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
    /// name). Returns the spec with each managed network replaced by its bridge, for the
    /// device planning that follows.
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

    /// The address requests of a planned create: the single NIC's, or one per multi-NIC
    /// device on a managed network.
    pub(super) fn address_requests(
        managed: &ManagedAttachments,
        boot: &Boot,
        nics: &[NicRow],
        mac: Option<&str>,
    ) -> Vec<AddressRequest> {
        let mut requests = Vec::new();
        if let (Some((network, requested)), true, Some(mac)) =
            (&managed.single, nics.is_empty(), mac)
        {
            requests.push(AddressRequest {
                network_id: network.id.clone(),
                device: single_device(boot),
                mac: mac.to_string(),
                requested: *requested,
            });
        }
        for nic in nics {
            if let Some(network) = managed.devices.get(&nic.device) {
                requests.push(AddressRequest {
                    network_id: network.id.clone(),
                    device: nic.device.clone(),
                    mac: nic.mac.clone(),
                    requested: None,
                });
            }
        }
        requests
    }

    /// Checks before anything is written that every placeholder of `template` will have a
    /// value: `requests` are the addresses about to be given (their values do not matter yet).
    pub(super) fn check_placeholders(
        template: &Template,
        name: &str,
        nics: &[NicRow],
        mac: Option<&str>,
        requests: &[AddressRequest],
        boot: &Boot,
    ) -> Result<(), FieldError> {
        let planned = Address {
            ip: Ipv4Addr::UNSPECIFIED,
            prefix: 0,
            gateway: Ipv4Addr::UNSPECIFIED,
        };
        let with = |device: &str| {
            requests
                .iter()
                .any(|r| r.device == device)
                .then(|| planned.clone())
        };
        let values = values_of(name, nics, mac, &single_device(boot), with);
        // Only "has a value" is checked here: lengths are checked with the real addresses.
        match template.expand(&values) {
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
        let values = self.placeholder_values(r)?;
        Ok(template.expand(&values)?)
    }

    fn placeholder_values(&self, r: &InstanceRecord) -> Result<Values, ServiceError> {
        let nics = self.store.instance_nics(&r.id)?;
        let addresses = self.store.instance_addresses(&r.id)?;
        let networks: BTreeMap<String, NetworkRecord> = self
            .store
            .networks()?
            .into_iter()
            .map(|n| (n.name.clone(), n))
            .collect();
        // A single NIC's address row names the device it was given under.
        let single = match (nics.is_empty(), addresses.first()) {
            (true, Some(a)) => a.device.clone(),
            _ => SINGLE_NIC_DEVICE.to_string(),
        };
        let address_of = |device: &str| {
            let a = addresses.iter().find(|a| a.device == device)?;
            let n = networks.get(&a.network)?;
            Some(Address {
                ip: a.ip,
                prefix: n.subnet.prefix(),
                gateway: n.gateway,
            })
        };
        Ok(values_of(
            &r.name,
            &nics,
            r.mac.as_deref(),
            &single,
            address_of,
        ))
    }

    /// Gives out the addresses of a create: inserts the record with them, and adds the DHCP
    /// entries of networks that run DHCP. An address refused is a 409 (taken, subnet full)
    /// or a 422 (outside the subnet, the gateway) naming the field.
    pub(super) async fn insert_with_addresses(
        &self,
        record: &InstanceRecord,
        image: Option<&str>,
        nics: &[NicRow],
        requests: &[AddressRequest],
    ) -> Result<(), ServiceError> {
        let field = if nics.is_empty() {
            "network.ipv4"
        } else {
            "nets"
        };
        match self
            .store
            .insert_with_addresses(record, image, nics, requests)
        {
            Ok(_) => {}
            Err(StoreError::Address(refusal)) => {
                let message = refusal.to_string();
                return Err(match refusal {
                    AddressRefusal::Taken { .. } | AddressRefusal::Full { .. } => {
                        ServiceError::Conflict {
                            field: Some(field),
                            message,
                        }
                    }
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
        self.update_dhcp_entries(&record.id, true).await;
        Ok(())
    }

    /// Adds (`present`) or removes the DHCP entries of the instance `id`'s addresses on
    /// networks that run DHCP. A failure is logged: the networks' reconcile pass corrects the
    /// entries from the store.
    pub(super) async fn update_dhcp_entries(&self, instance_id: &str, present: bool) {
        let addresses = match self.store.instance_addresses(instance_id) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the instance's addresses");
                return;
            }
        };
        for a in addresses {
            let dhcp = matches!(self.store.network_by_name(&a.network), Ok(Some(n)) if n.dhcp);
            if !dhcp {
                continue;
            }
            let host = DhcpHost {
                mac: a.mac,
                ip: a.ip,
            };
            self.set_dhcp_entry(&a.network, host, present).await;
        }
    }
}

/// The device name an instance's single NIC is known by: its image's one network device, or
/// [`SINGLE_NIC_DEVICE`].
fn single_device(boot: &Boot) -> String {
    super::boot_plan::manifest_of(&boot.inspection)
        .map(|m| m.net_devices())
        .filter(|d| d.len() == 1)
        .map(|d| d[0].to_string())
        .unwrap_or_else(|| SINGLE_NIC_DEVICE.to_string())
}

fn values_of(
    name: &str,
    nics: &[NicRow],
    mac: Option<&str>,
    single_device: &str,
    address_of: impl Fn(&str) -> Option<Address>,
) -> Values {
    let mut values = Values {
        name: name.to_string(),
        ..Default::default()
    };
    if nics.is_empty() {
        if let Some(mac) = mac {
            let nic = NicValues {
                mac: mac.to_string(),
                address: address_of(single_device),
            };
            values
                .devices
                .insert(single_device.to_string(), nic.clone());
            values.single = Some(nic);
        }
    }
    for n in nics {
        values.devices.insert(
            n.device.clone(),
            NicValues {
                mac: n.mac.clone(),
                address: address_of(&n.device),
            },
        );
    }
    values
}
