//! Image operations of the service: upload, list, show, delete, and the digests whose blobs
//! garbage collection keeps. What a create takes from an image is in [`super::boot_plan`].
//!
//! Concurrency: an upload streams without locks; only its commit (rename into the blob store
//! and the metadata row) holds a pin on the [`crate::blobs::BlobStore`], like a kernel import,
//! so a garbage collection or an image delete (which hold its exclusive guard) never sees a
//! blob without its row. An image delete checks, under that exclusive guard, that no instance
//! boots the digest, and a create resolves its image under a pin until its record is written,
//! so a delete cannot slip between the two.

use super::authz::{authorize, Action};
use super::{blocking, now_rfc3339, Service, ServiceError};
use crate::auth::Caller;
use crate::images::ImageError;
use crate::store::images::ImageRow;
use futures_util::Stream;
use rhyzome_api::images::{parse_digest, parse_image_ref, parse_name_tag, ImageRef};
use rhyzome_api::validate::FieldError;
use rhyzome_api::{Image, ImageUpload};

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
pub(super) fn visible_to(row: &ImageRow, caller: &Caller) -> bool {
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
            let _pin = self.blobs.pin().await;
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
        let _pin = self.blobs.pin().await;
        let files = self.images.clone();
        let new_blob = blocking(move || files.commit(pending)).await??;
        // "Created" is decided by looking before inserting; two uploads of the same content
        // must not both look before either inserts, or both answer 201. The key cannot clash
        // with an instance's name, which has no spaces.
        let _registering = self.locks.lock(&format!("image sha256:{sha256}")).await;
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
    pub(super) fn resolve_image(
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
        let exclusive = self.blobs.exclusive().await;
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
        self.blobs
            .remove(&exclusive, &sha)
            .map_err(|source| ImageError::Io {
                dir: self.blobs.dir().to_path_buf(),
                source,
            })?;
        tracing::info!(sha256 = %sha, reference, "image deleted");
        Ok(())
    }

    /// Digests whose blobs garbage collection must keep: those of images.
    pub(super) fn image_blobs(&self) -> Result<std::collections::HashSet<String>, ServiceError> {
        Ok(self.store.image_digests()?)
    }
}
