//! The boot plan of an instance: what it boots (a server path imported into the blob store,
//! or an uploaded image), the refusal of images libvirt cannot run, its devices and NICs, and
//! the domain definition that puts them together (kernel path, cmdline, NICs, console log).
//!
//! Device selection: an image with a Solo5 manifest gets exactly the devices it declares
//! (Solo5 aborts at boot on any other virtio device), one without keeps the default NIC. MACs
//! are derived from names ([`mac_for_name`]) unless the request gives one.

use super::{blocking, Service, ServiceError};
use crate::auth::{Caller, Role};
use crate::backend::{self, DomainDefinition, EmulatedPort, InterfaceKind, Nic};
use crate::console;
use crate::images::ImageError;
use crate::store::attachments::Attachment;
use crate::store::InstanceRecord;
use rhyzome_api::validate::{self, FieldError};
use rhyzome_api::{
    DeviceSelection, DeviceSource, ImageInspection, InstanceSpec, NetworkMode, Solo5Manifest,
};
use sha2::{Digest, Sha256};
use std::net::Ipv4Addr;

/// First PCI slot (bus 0) of the NICs of a multi-NIC instance; 0-2 are the host bridge, the
/// PIIX3 and, by convention, video.
pub const FIRST_NIC_SLOT: u8 = 3;

/// What a create boots, resolved from `kernel` or `image`.
pub(super) struct Boot {
    pub sha256: String,
    pub image: Option<String>,
    pub inspection: ImageInspection,
}

/// The Solo5 manifest an inspection found, if any.
pub(super) fn manifest_of(inspection: &ImageInspection) -> Option<&Solo5Manifest> {
    inspection.solo5.as_ref().and_then(|s| s.manifest.as_ref())
}

/// Which devices an instance got and why, from its boot image's manifest (`None`: the kernel
/// has none) and the NICs it has (`nic_names`: manifest device names, or the bridge of the
/// default NIC).
pub(super) fn device_selection(
    manifest: Option<&Solo5Manifest>,
    nic_names: &[String],
) -> DeviceSelection {
    let nics = nic_names.len() as u32;
    let Some(m) = manifest else {
        return DeviceSelection {
            source: DeviceSource::Default,
            manifest_devices: Vec::new(),
            nics,
            summary: match nic_names.first() {
                Some(bridge) => format!(
                    "1 NIC on bridge {bridge}: the default, since the kernel has no Solo5 manifest"
                ),
                None => "no NIC (network mode none); the kernel has no Solo5 manifest".into(),
            },
        };
    };
    let declared = m.net_devices();
    let summary = if declared.len() != nic_names.len() {
        // `network.mode` none on an image with a network device, or an instance created
        // before device selection.
        let declared = if declared.is_empty() {
            "no network device".to_string()
        } else {
            declared.join(", ")
        };
        format!("{nics} NIC(s), but the image's Solo5 manifest declares {declared}")
    } else if declared.is_empty() {
        "no devices: the image's Solo5 manifest declares none".to_string()
    } else {
        format!(
            "{nics} NIC(s) ({}), as the image's Solo5 manifest declares",
            declared.join(", ")
        )
    };
    DeviceSelection {
        source: DeviceSource::Manifest,
        manifest_devices: m.devices.clone(),
        nics,
        summary,
    }
}

/// A locally administered unicast MAC derived from the name, so that a re-created instance
/// keeps its MAC (and its neighbours' ARP caches stay right): `02` followed by the first
/// five bytes of SHA-256 of `rhyzome-mac:` and the name. The NICs of a multi-NIC instance
/// use the name `INSTANCE/DEVICE`.
pub fn mac_for_name(name: &str) -> String {
    let digest = Sha256::digest(format!("rhyzome-mac:{name}").as_bytes());
    let mut mac = [0u8; 6];
    mac[0] = 0x02;
    mac[1..].copy_from_slice(&digest[..5]);
    validate::format_mac(mac)
}

/// The bridges an instance joins, each with the request field that chose it: a NIC for a
/// manifest device (`nets.DEVICE`), or the single NIC (`network.bridge`).
pub(super) fn bridge_fields(attachments: &[Attachment]) -> Vec<(String, String)> {
    attachments
        .iter()
        .map(|a| match &a.device {
            Some(device) => (format!("nets.{device}"), a.bridge.clone()),
            None => ("network.bridge".to_string(), a.bridge.clone()),
        })
        .collect()
}

impl Service {
    /// Resolves what a create boots: imports a server path, or looks up an image. The caller
    /// holds a blob-store pin until the instance's record is written. Refuses images that
    /// libvirt cannot run, saying why.
    pub(super) async fn resolve_boot(
        &self,
        spec: &InstanceSpec,
        caller: &Caller,
    ) -> Result<Boot, ServiceError> {
        let (field, boot) = match (&spec.image, spec.kernel.is_empty()) {
            (Some(_), false) => {
                return Err(FieldError::new(
                    "image",
                    "give either `kernel` (a server path) or `image`, not both",
                )
                .into())
            }
            (Some(reference), true) => {
                // In a create request a missing image is a bad field value, not a missing
                // route target.
                let sha256 = match self.resolve_image(caller, "image", reference) {
                    Err(ServiceError::Image(ImageError::NotFound(r))) => {
                        return Err(FieldError::new(
                            "image",
                            format!("no image {r:?} is stored; push it first with rhyzomectl image push FILE --name {r}"),
                        )
                        .into())
                    }
                    other => other?,
                };
                let row = self
                    .store
                    .image(&sha256)?
                    .ok_or_else(|| ImageError::NotFound(reference.clone()))?;
                (
                    "image",
                    Boot {
                        sha256,
                        image: Some(reference.clone()),
                        inspection: row.inspection,
                    },
                )
            }
            (None, _) => {
                let requested = spec.kernel.clone();
                let kernels = self.kernels.clone();
                let kernel = match blocking(move || kernels.import(&requested)).await? {
                    Ok(kernel) => kernel,
                    // A tenant must not map the server's file system through the answers.
                    Err(e) if caller.role != Role::Admin && e.reveals_the_file_system() => {
                        return Err(ServiceError::KernelPathRefused(e))
                    }
                    Err(e) => return Err(e.into()),
                };
                let path = kernel.path.clone();
                let inspection = blocking(move || {
                    std::fs::File::open(&path)
                        .map_err(crate::images::inspect::InspectError::from)
                        .and_then(|f| crate::images::inspect::inspect(&f))
                })
                .await?
                .map_err(ImageError::from)?;
                (
                    "kernel",
                    Boot {
                        sha256: kernel.sha256,
                        image: None,
                        inspection,
                    },
                )
            }
        };
        if let Some(problem) = &boot.inspection.problem {
            let what = boot.image.as_deref().unwrap_or(spec.kernel.as_str());
            return Err(
                FieldError::new(field, format!("{what} cannot run here: it is {problem}")).into(),
            );
        }
        Ok(boot)
    }

    /// Refuses what a Solo5 manifest rules out: any network option for an image that declares
    /// no network device (Solo5 aborts at boot on a NIC it does not declare). `what` is the kernel's
    /// path or the image's reference.
    pub(super) fn check_manifest(
        spec: &InstanceSpec,
        manifest: &Solo5Manifest,
        what: &str,
    ) -> Result<(), FieldError> {
        if !manifest.net_devices().is_empty() {
            return Ok(());
        }
        let option = match (&spec.nets, &spec.network) {
            (Some(_), _) => Some(("nets", "--net")),
            (None, Some(n)) if n.bridge.is_some() => Some(("network.bridge", "--bridge")),
            (None, Some(n)) if n.mac.is_some() => Some(("network.mac", "--mac")),
            (None, Some(n)) if n.mode == NetworkMode::Bridge => Some(("network", "network")),
            _ => None,
        };
        match option {
            None => Ok(()),
            Some((option_field, cli)) => Err(FieldError::new(
                option_field,
                format!(
                    "{what} declares no network device in its Solo5 manifest (its devices: \
                     {}), so it gets no NIC: Solo5 would abort at boot on one; leave out \
                     {option_field} (CLI {cli})",
                    manifest.describe_devices()
                ),
            )),
        }
    }

    /// The NICs of an instance whose image declares several network devices: one per device,
    /// in manifest order, at consecutive PCI slots, each on the bridge `nets` maps it to, with
    /// a MAC derived from (instance, device). Empty for images with at most one network device,
    /// which keep the single NIC of `network` (none when the manifest declares none).
    pub(super) fn plan_nics(
        &self,
        spec: &InstanceSpec,
        inspection: &ImageInspection,
    ) -> Result<Vec<Attachment>, FieldError> {
        let devices: Vec<&str> = manifest_of(inspection)
            .map(|m| m.net_devices())
            .unwrap_or_default();
        if devices.len() < 2 {
            if spec.nets.is_some() {
                return Err(FieldError::new(
                    "nets",
                    format!(
                        "the image declares {} network device(s); `nets` is only for images \
                         with several, use `network` instead",
                        devices.len()
                    ),
                ));
            }
            return Ok(Vec::new());
        }
        // The manifest comes from an uploaded file: two devices of one name would get one MAC.
        for (i, d) in devices.iter().enumerate() {
            if devices[..i].contains(d) {
                return Err(FieldError::new(
                    "image",
                    format!("declares the network device {d:?} twice; Solo5 needs unique names"),
                ));
            }
        }
        // PCI bus 0 has 32 slots and the first three are taken.
        if devices.len() > 29 {
            return Err(FieldError::new(
                "image",
                format!("declares {} network devices; at most 29 fit", devices.len()),
            ));
        }
        if spec.network.is_some() {
            return Err(FieldError::new(
                "network",
                format!(
                    "the image declares {} network devices ({}); map each to a bridge with \
                     `nets` (CLI: --net DEVICE=BRIDGE) instead of `network`",
                    devices.len(),
                    devices.join(", ")
                ),
            ));
        }
        let nets = spec.nets.clone().unwrap_or_default();
        if let Some(unknown) = nets.keys().find(|k| !devices.contains(&k.as_str())) {
            return Err(FieldError::new(
                "nets",
                format!(
                    "the image has no network device {unknown:?}; its devices are {}",
                    devices.join(", ")
                ),
            ));
        }
        let mut out = Vec::new();
        for (i, dev) in devices.iter().enumerate() {
            let bridge = nets.get(*dev).ok_or_else(|| {
                FieldError::new(
                    "nets",
                    format!(
                        "no bridge for the image's network device {dev:?}; map it with \
                         `nets` (CLI: --net {dev}=BRIDGE)"
                    ),
                )
            })?;
            validate::validate_bridge(bridge)
                .map_err(|e| FieldError::new("nets", format!("{dev}: {}", e.message)))?;
            out.push(Attachment {
                device: Some(dev.to_string()),
                bridge: bridge.clone(),
                // Names cannot contain '/', so these never equal a single-NIC instance's MAC.
                mac: mac_for_name(&format!("{}/{dev}", spec.name)),
                pci_slot: Some(FIRST_NIC_SLOT + i as u8),
                conditions: Default::default(),
                network: None,
                address: None,
                emulator_port: None,
            });
        }
        Ok(out)
    }

    /// What the hypervisor is asked to run for `r`: its blob, command line, NICs and disks in
    /// order. Disks follow the NICs: Solo5 binds each kind in PCI order, and a fixed slot keeps
    /// libvirt's allocator from reordering them.
    pub(super) fn definition(&self, r: &InstanceRecord) -> Result<DomainDefinition, ServiceError> {
        let emulator_ports = self.emulator_ports(&r.attachments)?;
        // Loopback on a local host; the controller's and the host's addresses on a remote one.
        let (emulator_address, local_address) = match self.frame_route(&r.host) {
            Ok(Some(route)) => (route.emulator, route.host),
            Ok(None) => (Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST),
            Err(why) if !emulator_ports.is_empty() => {
                return Err(ServiceError::Conflict {
                    field: Some("host"),
                    message: format!("instance {:?} is on an emulated network: {why}", r.name),
                })
            }
            Err(_) => (Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST),
        };
        // A store error must not quietly yield a guest without the disks its image needs.
        let disks = self.disks_of(&r.id, FIRST_NIC_SLOT + r.attachments.len() as u8)?;
        Ok(DomainDefinition {
            domain_type: self.domain_type,
            domain_name: backend::domain_name(&r.name),
            uuid: r.id.clone(),
            instance_name: r.name.clone(),
            hostname: self.config.hostname.clone(),
            daemon_id: self.daemon_id.clone(),
            memory_mib: r.memory_mib,
            vcpus: r.vcpus,
            kernel: self.blobs.path(&r.kernel_sha256),
            cmdline: self.expanded_parameters(r)?,
            console_log: console::log_path(&self.config.state_dir, &r.id),
            nics: r
                .attachments
                .iter()
                .map(|a| Nic {
                    bridge: a.bridge.clone(),
                    mac: a.mac.clone(),
                    pci_slot: a.pci_slot,
                    emulated: a
                        .network
                        .as_ref()
                        .and_then(|n| emulator_ports.get(n))
                        .zip(a.emulator_port)
                        .map(|(&emulator_port, local_port)| EmulatedPort {
                            emulator_address,
                            emulator_port,
                            local_address,
                            local_port,
                        }),
                    // On an emulated network the emulator shapes the rate.
                    rate_bps: a
                        .conditions
                        .rate_bps
                        .filter(|_| a.emulator_port.is_none())
                        .map(|r| r as u64),
                })
                .collect(),
            disks,
        })
    }

    /// The NICs of a create, in order: those of a multi-NIC image, or the single NIC (bridge
    /// and MAC) of `network`, or none when the image's Solo5 manifest declares no network
    /// device. Refuses what the manifest rules out; which bridges the caller may use is
    /// checked once the NICs on managed networks are known (`Service::check_host_bridges`).
    pub(super) fn plan_devices(
        &self,
        spec: &InstanceSpec,
        boot: &Boot,
        bridge: Option<String>,
        mac: Option<String>,
    ) -> Result<Vec<Attachment>, ServiceError> {
        let manifest = manifest_of(&boot.inspection);
        if let Some(m) = manifest {
            let what = match &boot.image {
                Some(reference) => reference.as_str(),
                None => spec.kernel.as_str(),
            };
            Self::check_manifest(spec, m, what)?;
        }
        let nics = self.plan_nics(spec, &boot.inspection)?;
        if !nics.is_empty() || manifest.is_some_and(|m| m.net_devices().is_empty()) {
            return Ok(nics);
        }
        let (Some(bridge), Some(mac)) = (bridge, mac) else {
            return Ok(Vec::new()); // `network.mode` none.
        };
        Ok(vec![Attachment {
            device: None,
            bridge,
            mac,
            pci_slot: None,
            conditions: Default::default(),
            network: None,
            address: None,
            emulator_port: None,
        }])
    }

    /// Keeps what the manifest of blob `sha256` says, for [`Self::devices_of`]. Blobs are
    /// content-addressed, so the entry never goes stale.
    pub(super) fn remember_manifest(
        &self,
        sha256: &str,
        inspection: &rhyzome_api::ImageInspection,
    ) {
        let manifest = manifest_of(inspection).cloned();
        self.manifests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sha256.to_string(), manifest);
    }

    /// The Solo5 manifest of blob `sha256` (`Ok(None)`: it has none), inspected once per
    /// daemon run.
    pub(super) fn manifest_of_blob(
        &self,
        sha256: &str,
    ) -> Result<Option<rhyzome_api::Solo5Manifest>, crate::images::inspect::InspectError> {
        if let Some(m) = self
            .manifests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sha256)
        {
            return Ok(m.clone());
        }
        let file = std::fs::File::open(self.blobs.path(sha256))?;
        let inspection = crate::images::inspect::inspect(&file)?;
        self.remember_manifest(sha256, &inspection);
        Ok(manifest_of(&inspection).cloned())
    }

    /// Which devices `r` got and why; `None` (with a warning) when its blob cannot be read.
    pub(super) fn devices_of(&self, r: &InstanceRecord) -> Option<rhyzome_api::DeviceSelection> {
        let manifest = match self.manifest_of_blob(&r.kernel_sha256) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(instance = %r.name, error = %e, "cannot inspect the kernel blob");
                return None;
            }
        };
        // A NIC for a manifest device is named by its device, the single NIC by its bridge.
        let names: Vec<String> = r
            .attachments
            .iter()
            .map(|a| a.device.clone().unwrap_or_else(|| a.bridge.clone()))
            .collect();
        Some(device_selection(manifest.as_ref(), &names))
    }

    /// Asks the hypervisor's host whether each bridge exists and is a bridge, so that a wrong
    /// one is a 422 naming its field rather than libvirt failing to start the guest (for `lo`
    /// it says only "Cannot set interface MTU on 'vnetN'"). libvirt answers for the network
    /// namespace it runs in, which need not be the daemon's. When it cannot say, the start is
    /// the check, and [`Self::explain_start_error`] names the field.
    pub(super) async fn check_bridges(
        &self,
        host: &str,
        attachments: Vec<(String, String)>,
    ) -> Result<(), ServiceError> {
        let backend = self.backend_on(host)?;
        let on = if self.hosts.all().len() > 1 {
            format!(
                "on host {:?}",
                self.hosts.of(host).map(|h| h.name()).unwrap_or(host)
            )
        } else {
            "on the libvirt host".to_string()
        };
        // Checked under the host's own name for each bridge (its `Bridges`).
        let attachments: Vec<(String, String, String)> = attachments
            .into_iter()
            .map(|(field, bridge)| {
                let local = self.bridge_on(host, &bridge);
                (field, bridge, local)
            })
            .collect();
        blocking(move || {
            for (field, bridge, local) in attachments {
                let on = if local == bridge {
                    on.clone()
                } else {
                    format!("{on} (as {local:?}, its Bridges say)")
                };
                let problem = match backend
                    .interface_kind(&local)
                    .map_err(ServiceError::Backend)?
                {
                    InterfaceKind::Bridge | InterfaceKind::Unknown => continue,
                    InterfaceKind::Missing => format!("does not exist {on}"),
                    InterfaceKind::Other(kind) => {
                        format!("is not a bridge {on} (it is a {kind} interface)")
                    }
                };
                return Err(FieldError::new(field, format!("{bridge:?} {problem}")).into());
            }
            Ok(())
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::device_selection;
    use rhyzome_api::{DeviceSource, ManifestDevice, Solo5Manifest};

    fn manifest(nets: &[&str]) -> Solo5Manifest {
        Solo5Manifest {
            version: 1,
            devices: nets
                .iter()
                .map(|n| ManifestDevice {
                    name: n.to_string(),
                    kind: "NET_BASIC".into(),
                })
                .collect(),
        }
    }

    #[test]
    fn device_selection_says_where_the_devices_come_from_and_any_mismatch() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let none = device_selection(Some(&manifest(&[])), &[]);
        assert_eq!((none.source, none.nics), (DeviceSource::Manifest, 0));
        assert!(none.summary.contains("declares none"), "{}", none.summary);
        let two = device_selection(
            Some(&manifest(&["service", "admin"])),
            &names(&["service", "admin"]),
        );
        assert!(
            two.summary.starts_with("2 NIC(s) (service, admin), as"),
            "{}",
            two.summary
        );
        // A NIC the manifest does not declare (made before device selection) is not hidden.
        let stale = device_selection(Some(&manifest(&[])), &names(&["br0"]));
        assert!(
            stale
                .summary
                .contains("but the image's Solo5 manifest declares no network device"),
            "{}",
            stale.summary
        );
        let off = device_selection(Some(&manifest(&["service"])), &[]);
        assert!(off.summary.contains("0 NIC(s), but"), "{}", off.summary);
        let default = device_selection(None, &names(&["br0"]));
        assert_eq!((default.source, default.nics), (DeviceSource::Default, 1));
        assert!(
            default.summary.contains("on bridge br0"),
            "{}",
            default.summary
        );
        assert!(default.manifest_devices.is_empty());
    }
}
