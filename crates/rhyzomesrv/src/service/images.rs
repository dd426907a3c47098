//! Image operations of the service (upload, list, show, delete) and what creating an instance
//! takes from an image: the blob to boot, the refusal of images libvirt cannot run, and device
//! selection: an image with a Solo5 manifest gets exactly the devices it declares (Solo5 aborts
//! at boot on any other virtio device), one without keeps the default NIC.
//!
//! Concurrency: an upload streams without locks; only its commit (rename into the blob store
//! and the metadata row) holds the service's blob-GC lock for reading, like a kernel import,
//! so a garbage collection or an image delete (which hold it for writing) never sees a blob
//! without its row. An image delete checks, under that write lock, that no instance boots the
//! digest, and a create resolves its image under the read lock until its record is written, so
//! a delete cannot slip between the two.

use super::authz::{authorize, Action};
use super::{blocking, mac_for_name, now_rfc3339, Service, ServiceError};
use crate::auth::{Caller, Role};
use crate::images::ImageError;
use crate::store::images::{ImageRow, NicRow};
use futures_util::Stream;
use rhyzome_api::images::{parse_digest, parse_image_ref, parse_name_tag, ImageRef};
use rhyzome_api::validate::{self, FieldError};
use rhyzome_api::{
    DeviceSelection, DeviceSource, Image, ImageInspection, ImageUpload, InstanceSpec, NetworkMode,
    Solo5Manifest,
};

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

fn to_api(r: ImageRow) -> Image {
    Image {
        digest: format!("sha256:{}", r.sha256),
        size: r.size,
        uploaded_at: r.uploaded_at,
        names: r.names,
        inspection: r.inspection,
    }
}

pub use crate::images::drain;

/// How an upload says which digest it expects (query parameter or header), for error fields.
pub struct ExpectedDigest {
    pub field: &'static str,
    pub value: String,
}

/// Whether `caller` may see an image: any caller without a prefix, a tenant when one of the
/// image's names lies under its prefix.
fn visible_to(row: &ImageRow, caller: &Caller) -> bool {
    caller.prefix.is_none()
        || row
            .names
            .iter()
            .any(|n| caller.sees(n.split(':').next().unwrap_or(n)))
}

/// The image as `caller` may see it: a tenant sees only its own names, and as the upload
/// time the time it first named the image, so that nothing tells it whether another tenant
/// stored the same content before.
fn to_api_for(mut row: ImageRow, caller: &Caller) -> Image {
    if caller.prefix.is_some() {
        row.names
            .retain(|n| caller.sees(n.split(':').next().unwrap_or(n)));
        if let Some(first) = row.names.iter().filter_map(|n| row.tagged_at.get(n)).min() {
            row.uploaded_at = first.clone();
        }
    }
    to_api(row)
}

impl Service {
    /// Stores an uploaded image. `declared` is the body's Content-Length, if sent.
    pub async fn upload_image<S, B, E>(
        &self,
        body: S,
        declared: Option<u64>,
        expected: Option<ExpectedDigest>,
        name: Option<&str>,
        caller: &Caller,
    ) -> Result<ImageUpload, ServiceError>
    where
        S: Stream<Item = Result<B, E>> + Unpin,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        authorize(caller, Action::UploadImages)?;
        let mut body = body;
        let checked =
            (|| {
                let expected = match expected {
                    Some(e) => Some((e.field, parse_digest(e.field, &e.value)?)),
                    None => None,
                };
                let name = name.map(|n| parse_name_tag("name", n)).transpose()?;
                Ok::<_, FieldError>((expected, name))
            })()
            .map_err(ServiceError::from)
            .and_then(|(expected, name)| {
                // A tenant's image names live under its prefix, like its instance names, so that
                // tenants can neither see nor retag each other's images.
                if caller.prefix.is_some() {
                    match &name {
                        Some((n, _)) => caller.may_name(n)?,
                        None => return Err(FieldError::new(
                            "name",
                            "is required for a token with a name prefix: images are found by name",
                        )
                        .into()),
                    }
                }
                Ok((expected, name))
            });
        let (expected, name) = match checked {
            Ok(v) => v,
            Err(e) => {
                drain(&mut body, self.images.max_bytes()).await;
                return Err(e);
            }
        };
        // Naming an image the server already has needs no body: the client checked with HEAD.
        if let (Some((_, sha)), Some(0)) = (&expected, declared) {
            let _gc = self.blob_gc.read().await;
            // A tenant proves it has the content by sending it, unless the image is already
            // one of its own: a digest alone must not open another tenant's image.
            if self
                .store
                .image(sha)?
                .is_some_and(|row| visible_to(&row, caller))
            {
                if let Some((n, t)) = &name {
                    self.store.tag_image(n, t, sha, &now_rfc3339())?;
                }
                let row = self
                    .store
                    .image(sha)?
                    .ok_or_else(|| ImageError::NotFound(format!("sha256:{sha}")))?;
                return Ok(ImageUpload {
                    image: to_api_for(row, caller),
                    created: false,
                });
            }
        }
        let pending = self.images.receive(body, declared).await?;
        if let Some((field, sha)) = &expected {
            if *sha != pending.sha256 {
                return Err(ImageError::DigestMismatch {
                    field,
                    expected: sha.clone(),
                    actual: pending.sha256.clone(),
                }
                .into());
            }
        }
        let (pending, inspection) = blocking(move || {
            let i = pending.inspect();
            (pending, i)
        })
        .await?;
        let inspection = inspection?;
        if inspection.format == rhyzome_api::ImageFormat::Other {
            return Err(ImageError::NotAKernel(
                inspection.problem.unwrap_or(inspection.description),
            )
            .into());
        }
        let sha256 = pending.sha256.clone();
        let size = pending.size;
        let _gc = self.blob_gc.read().await;
        let files = self.images.clone();
        let new_blob = blocking(move || files.commit(pending)).await??;
        // Storage is shared, visibility is not: content another tenant stored is new to this
        // caller, and is answered as such (201).
        let known_to_caller = self
            .store
            .image(&sha256)?
            .is_some_and(|row| visible_to(&row, caller));
        let now = now_rfc3339();
        let stored = self.store.insert_image(&sha256, size, &now, &inspection)?;
        if let Some((n, t)) = &name {
            self.store.tag_image(n, t, &sha256, &now)?;
        }
        let created = stored || !known_to_caller;
        tracing::info!(sha256 = %sha256, size, new_blob, stored, created, "image uploaded");
        let row = self
            .store
            .image(&sha256)?
            .ok_or_else(|| ImageError::NotFound(format!("sha256:{sha256}")))?;
        Ok(ImageUpload {
            image: to_api_for(row, caller),
            created,
        })
    }

    /// The images `caller` may see: all of them, or for a token with a prefix those with a
    /// name under it (showing only those names).
    pub fn list_images(&self, caller: &Caller) -> Result<Vec<Image>, ServiceError> {
        Ok(self
            .store
            .images()?
            .into_iter()
            .filter(|row| visible_to(row, caller))
            .map(|row| to_api_for(row, caller))
            .collect())
    }

    /// The digest a reference names, if it names a stored image `caller` may see. Images of
    /// other tenants are reported as not found, exactly like missing ones.
    fn resolve_image(
        &self,
        caller: &Caller,
        field: &'static str,
        reference: &str,
    ) -> Result<String, ServiceError> {
        let not_found = || ImageError::NotFound(reference.to_string());
        let sha = match parse_image_ref(field, reference)? {
            ImageRef::Digest(d) => d,
            ImageRef::Named { name, tag } => {
                if !caller.sees(&name) {
                    return Err(not_found().into());
                }
                self.store.resolve_tag(&name, &tag)?.ok_or_else(not_found)?
            }
        };
        match self.store.image(&sha)? {
            Some(row) if visible_to(&row, caller) => Ok(sha),
            _ => Err(not_found().into()),
        }
    }

    pub fn get_image(&self, reference: &str, caller: &Caller) -> Result<Image, ServiceError> {
        let sha = self.resolve_image(caller, "reference", reference)?;
        let row = self
            .store
            .image(&sha)?
            .ok_or_else(|| ImageError::NotFound(reference.to_string()))?;
        Ok(to_api_for(row, caller))
    }

    /// Deletes the image a reference names, unless an instance boots it. A tenant's delete
    /// removes its own names; the image itself goes when no name of another tenant remains.
    pub async fn delete_image(&self, reference: &str, caller: &Caller) -> Result<(), ServiceError> {
        authorize(caller, Action::DeleteImages)?;
        let _gc = self.blob_gc.write().await;
        let sha = self.resolve_image(caller, "reference", reference)?;
        let row = self
            .store
            .image(&sha)?
            .ok_or_else(|| ImageError::NotFound(reference.to_string()))?;
        let foreign_names = row
            .names
            .iter()
            .any(|n| !caller.sees(n.split(':').next().unwrap_or(n)));
        if foreign_names {
            let removed = self
                .store
                .untag_image(&sha, caller.prefix.as_deref().unwrap_or(""))?;
            tracing::info!(sha256 = %sha, reference, removed, "image names of one tenant removed");
            return Ok(());
        }
        let users = self.store.instances_booting(&sha)?;
        if !users.is_empty() {
            let (seen, hidden): (Vec<String>, Vec<String>) =
                users.into_iter().partition(|u| caller.sees(u));
            let mut instances = seen.join(", ");
            if !hidden.is_empty() {
                instances = format!(
                    "{instances}{}{} instance(s) you cannot see",
                    if instances.is_empty() { "" } else { " and " },
                    hidden.len()
                );
            }
            return Err(ImageError::InUse {
                reference: reference.to_string(),
                instances,
            }
            .into());
        }
        self.store.delete_image(&sha)?;
        self.images.remove_blob(&sha)?;
        tracing::info!(sha256 = %sha, reference, "image deleted");
        Ok(())
    }

    /// Resolves what a create boots: imports a server path, or looks up an image. The caller
    /// holds the blob-GC read lock until the instance's record is written. Refuses images that
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

    /// Refuses what a Solo5 manifest rules out: block devices (not supported yet; the volumes
    /// work will attach them), and any network option for an image that declares no network
    /// device (Solo5 aborts at boot on a NIC it does not declare). `field` is `kernel` or
    /// `image`, `what` the path or reference.
    pub(super) fn check_manifest(
        spec: &InstanceSpec,
        manifest: &Solo5Manifest,
        field: &'static str,
        what: &str,
    ) -> Result<(), FieldError> {
        let blocks = manifest.block_devices();
        if !blocks.is_empty() {
            return Err(FieldError::new(
                field,
                format!(
                    "{what} declares the block device(s) {} in its Solo5 manifest; block devices \
                     are not supported yet, so it cannot run here",
                    blocks.join(", ")
                ),
            ));
        }
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
    ) -> Result<Vec<NicRow>, FieldError> {
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
            out.push(NicRow {
                device: dev.to_string(),
                bridge: bridge.clone(),
                // Names cannot contain '/', so these never equal a single-NIC instance's MAC.
                mac: mac_for_name(&format!("{}/{dev}", spec.name)),
                pci_slot: FIRST_NIC_SLOT + i as u8,
            });
        }
        Ok(out)
    }

    /// Digests whose blobs garbage collection must keep: those of images.
    pub(super) fn image_blobs(&self) -> Result<std::collections::HashSet<String>, ServiceError> {
        Ok(self.store.image_digests()?)
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
