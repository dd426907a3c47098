//! Image operations of the service (upload, list, show, delete) and what creating an instance
//! takes from an image: the blob to boot, the refusal of images libvirt cannot run, and one NIC
//! per network device of a Solo5 manifest.
//!
//! Concurrency: an upload streams without locks; only its commit (rename into the blob store
//! and the metadata row) holds the service's blob-GC lock for reading, like a kernel import,
//! so a garbage collection or an image delete (which hold it for writing) never sees a blob
//! without its row. An image delete checks, under that write lock, that no instance boots the
//! digest, and a create resolves its image under the read lock until its record is written, so
//! a delete cannot slip between the two.

use super::{blocking, mac_for_name, now_rfc3339, Service, ServiceError};
use crate::images::ImageError;
use crate::store::images::{ImageRow, NicRow};
use futures_util::Stream;
use rhyzome_api::images::{parse_digest, parse_image_ref, parse_name_tag, ImageRef};
use rhyzome_api::validate::{self, FieldError};
use rhyzome_api::{Image, ImageInspection, ImageUpload, InstanceSpec};

/// First PCI slot (bus 0) of the NICs of a multi-NIC instance; 0-2 are the host bridge, the
/// PIIX3 and, by convention, video.
pub const FIRST_NIC_SLOT: u8 = 3;

/// What a create boots, resolved from `kernel` or `image`.
pub(super) struct Boot {
    pub sha256: String,
    pub image: Option<String>,
    pub inspection: ImageInspection,
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

/// Reads and discards a request body (at most `limit` bytes), so that a refusal made before
/// reading it reaches a client that is still sending instead of a reset connection.
pub async fn drain<S, B, E>(body: &mut S, limit: u64)
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
{
    use futures_util::StreamExt;
    let mut seen = 0u64;
    while let Some(Ok(chunk)) = body.next().await {
        seen += chunk.as_ref().len() as u64;
        if seen > limit {
            break;
        }
    }
}

/// How an upload says which digest it expects (query parameter or header), for error fields.
pub struct ExpectedDigest {
    pub field: &'static str,
    pub value: String,
}

impl Service {
    /// Stores an uploaded image. `declared` is the body's Content-Length, if sent.
    pub async fn upload_image<S, B, E>(
        &self,
        body: S,
        declared: Option<u64>,
        expected: Option<ExpectedDigest>,
        name: Option<&str>,
    ) -> Result<ImageUpload, ServiceError>
    where
        S: Stream<Item = Result<B, E>> + Unpin,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        let mut body = body;
        let checked = (|| {
            let expected = match expected {
                Some(e) => Some((e.field, parse_digest(e.field, &e.value)?)),
                None => None,
            };
            let name = name.map(|n| parse_name_tag("name", n)).transpose()?;
            Ok::<_, FieldError>((expected, name))
        })();
        let (expected, name) = match checked {
            Ok(v) => v,
            Err(e) => {
                drain(&mut body, self.images.max_bytes()).await;
                return Err(e.into());
            }
        };
        // Naming an image the server already has needs no body: the client checked with HEAD.
        if let (Some((_, sha)), Some(0)) = (&expected, declared) {
            if self.store.image(sha)?.is_some() {
                if let Some((n, t)) = &name {
                    self.store.tag_image(n, t, sha)?;
                }
                let row = self
                    .store
                    .image(sha)?
                    .ok_or_else(|| ImageError::NotFound(format!("sha256:{sha}")))?;
                return Ok(ImageUpload {
                    image: to_api(row),
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
        let created = self
            .store
            .insert_image(&sha256, size, &now_rfc3339(), &inspection)?;
        if let Some((n, t)) = &name {
            self.store.tag_image(n, t, &sha256)?;
        }
        tracing::info!(sha256 = %sha256, size, new_blob, created, "image uploaded");
        let row = self
            .store
            .image(&sha256)?
            .ok_or_else(|| ImageError::NotFound(format!("sha256:{sha256}")))?;
        Ok(ImageUpload {
            image: to_api(row),
            created,
        })
    }

    pub fn list_images(&self) -> Result<Vec<Image>, ServiceError> {
        Ok(self.store.images()?.into_iter().map(to_api).collect())
    }

    /// The digest a reference names, if it names a stored image.
    fn resolve_image(&self, field: &'static str, reference: &str) -> Result<String, ServiceError> {
        let not_found = || ImageError::NotFound(reference.to_string());
        match parse_image_ref(field, reference)? {
            ImageRef::Digest(d) => match self.store.image(&d)? {
                Some(_) => Ok(d),
                None => Err(not_found().into()),
            },
            ImageRef::Named { name, tag } => self
                .store
                .resolve_tag(&name, &tag)?
                .ok_or_else(|| not_found().into()),
        }
    }

    pub fn get_image(&self, reference: &str) -> Result<Image, ServiceError> {
        let sha = self.resolve_image("reference", reference)?;
        let row = self
            .store
            .image(&sha)?
            .ok_or_else(|| ImageError::NotFound(reference.to_string()))?;
        Ok(to_api(row))
    }

    /// Deletes the image a reference names (with all its names), unless an instance boots it.
    pub async fn delete_image(&self, reference: &str) -> Result<(), ServiceError> {
        let _gc = self.blob_gc.write().await;
        let sha = self.resolve_image("reference", reference)?;
        let users = self.store.instances_booting(&sha)?;
        if !users.is_empty() {
            return Err(ImageError::InUse {
                reference: reference.to_string(),
                instances: users.join(", "),
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
    pub(super) async fn resolve_boot(&self, spec: &InstanceSpec) -> Result<Boot, ServiceError> {
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
                let sha256 = match self.resolve_image("image", reference) {
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
                let kernel = blocking(move || kernels.import(&requested)).await??;
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

    /// The NICs of an instance whose image declares several network devices: one per device,
    /// in manifest order, at consecutive PCI slots, each on the bridge `nets` maps it to, with
    /// a MAC derived from (instance, device). Empty for images with at most one network device,
    /// which keep the single NIC of `network`.
    pub(super) fn plan_nics(
        &self,
        spec: &InstanceSpec,
        inspection: &ImageInspection,
    ) -> Result<Vec<NicRow>, FieldError> {
        let devices: Vec<&str> = inspection
            .solo5
            .as_ref()
            .and_then(|s| s.manifest.as_ref())
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
