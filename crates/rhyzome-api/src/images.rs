//! Image types and image references (`name[:tag]` or `sha256:<hex>`), shared by the daemon,
//! the CLI and the tests. Pure data and parsing; no I/O, no state.

use crate::validate::FieldError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Header in which a client may send the SHA-256 of an upload (64 hex digits).
pub const SHA256_HEADER: &str = "X-Rhyzome-Sha256";

/// Tag an image name gets when the reference gives none.
pub const DEFAULT_TAG: &str = "latest";

/// An image in the daemon's content-addressed store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Image {
    /// `sha256:<hex>`: the image's identity and a reference to it.
    #[schema(example = "sha256:3f5a...")]
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// RFC 3339 time of the first upload; for a token with a name prefix, the time its first
    /// name for this image was given.
    pub uploaded_at: String,
    /// The `name:tag` references that point to this image (for a token with a prefix, its own).
    pub names: Vec<String>,
    /// What the daemon found in the image.
    pub inspection: ImageInspection,
}

/// `GET /v1/images`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImageList {
    pub images: Vec<Image>,
}

/// The answer to an upload: the image, and whether this request stored it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImageUpload {
    pub image: Image,
    /// `false` when the caller already had this content (under a name it can see); content
    /// that only other tenants stored counts as new (it is stored once nonetheless).
    pub created: bool,
}

/// What kind of file an image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImageFormat {
    /// An ELF with a multiboot v1 header: 32-bit, or 64-bit with the a.out kludge (Solo5
    /// `virtio` images are the latter). QEMU boots it with `-kernel`.
    Multiboot,
    /// A Linux kernel (`bzImage`).
    LinuxBzimage,
    /// An ELF file without a multiboot header (QEMU cannot boot it directly).
    Elf,
    /// Anything else.
    Other,
}

/// Findings of the image inspection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImageInspection {
    pub format: ImageFormat,
    /// 32 or 64 for ELF files.
    pub elf_class: Option<u8>,
    /// For multiboot images: whether the header uses the a.out kludge (load addresses in the
    /// header rather than in the ELF program headers).
    pub multiboot_aout_kludge: Option<bool>,
    /// One line for people, e.g. `64-bit ELF, multiboot v1 with a.out kludge`.
    pub description: String,
    /// What the image's Solo5 notes say, if it has any.
    pub solo5: Option<Solo5Info>,
    /// Why the image cannot run as a libvirt/QEMU guest, and what to do; `null` when it can.
    pub problem: Option<String>,
}

/// The Solo5 notes of an image (`.note.solo5.abi`, `.note.solo5.manifest`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Solo5Info {
    /// ABI target: `hvt`, `spt`, `virtio`, `muen`, `genode`, `xen`, or `unknown(N)`.
    pub abi_target: Option<String>,
    pub abi_version: Option<u32>,
    pub manifest: Option<Solo5Manifest>,
}

/// The application manifest: the devices the unikernel expects, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Solo5Manifest {
    pub version: u32,
    pub devices: Vec<ManifestDevice>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ManifestDevice {
    pub name: String,
    /// `NET_BASIC` or `BLOCK_BASIC`.
    #[serde(rename = "type")]
    pub kind: String,
}

impl Solo5Manifest {
    /// Names of the network devices, in manifest order.
    pub fn net_devices(&self) -> Vec<&str> {
        self.names_of_kind("NET_BASIC")
    }

    /// Names of the block devices, in manifest order.
    pub fn block_devices(&self) -> Vec<&str> {
        self.names_of_kind("BLOCK_BASIC")
    }

    fn names_of_kind(&self, kind: &str) -> Vec<&str> {
        self.devices
            .iter()
            .filter(|d| d.kind == kind)
            .map(|d| d.name.as_str())
            .collect()
    }

    /// The devices for people: `service (NET_BASIC), disk (BLOCK_BASIC)`, or `none`.
    pub fn describe_devices(&self) -> String {
        if self.devices.is_empty() {
            return "none".to_string();
        }
        self.devices
            .iter()
            .map(|d| format!("{} ({})", d.name, d.kind))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Query of `POST /v1/images`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// `name[:tag]` to give the image (tag defaults to `latest`; an existing tag moves).
    #[serde(default)]
    #[param(pattern = "^(?!sha256(:|$))[a-z0-9][a-z0-9._-]{0,127}(:[A-Za-z0-9._-]{1,128})?$")]
    pub name: Option<String>,
    /// Expected SHA-256 of the body (64 hex digits, optionally prefixed `sha256:`); the upload
    /// is refused with 422 when the body differs. May also be sent as header
    /// `X-Rhyzome-Sha256`. When the image is already stored, the body may be empty: the request
    /// then only applies `name`.
    #[serde(default)]
    #[param(pattern = "^(sha256:)?[0-9a-fA-F]{64}$")]
    pub sha256: Option<String>,
}

/// `InstanceSpec` as it arrives: `kernel` may be absent when `image` is given, but not both,
/// and the error for neither keeps serde's wording ("missing field `kernel`") so that it names
/// the field like every other missing field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InstanceSpecWire {
    name: String,
    #[serde(default)]
    kernel: Option<String>,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    nets: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    volumes: Option<std::collections::BTreeMap<String, crate::volumes::VolumeMount>>,
    #[serde(default)]
    kernel_parameters: String,
    #[serde(default)]
    memory_mib: Option<u32>,
    #[serde(default)]
    vcpus: Option<u32>,
    #[serde(default, deserialize_with = "object_only")]
    network: Option<crate::NetworkSpec>,
    #[serde(default, deserialize_with = "object_only")]
    restart: Option<crate::RestartPolicy>,
    #[serde(default)]
    startup_priority: Option<i32>,
    #[serde(default)]
    autostart: Option<bool>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    #[serde(default, deserialize_with = "object_only")]
    link: Option<crate::LinkConditions>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    host_selector: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    placement: Option<crate::hosts::PlacementPolicy>,
    #[serde(default)]
    failover: Option<bool>,
}

/// An optional struct that must be written as a JSON object or `null`: serde's derived
/// `Deserialize` would also read a struct from an array of its fields in order, which a
/// request must not rely on (its meaning changes when a field is added).
fn object_only<'de, D, T>(de: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct ObjectOrNull<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ObjectOrNull<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object or null")
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }
    de.deserialize_any(ObjectOrNull(std::marker::PhantomData))
}

impl TryFrom<InstanceSpecWire> for crate::InstanceSpec {
    type Error = String;

    fn try_from(w: InstanceSpecWire) -> Result<Self, String> {
        if w.kernel.is_none() && w.image.is_none() {
            return Err(
                "missing field `kernel`: give `kernel` (a kernel path on the server) \
                        or `image` (an uploaded image: name[:tag] or sha256:<hex>)"
                    .into(),
            );
        }
        Ok(crate::InstanceSpec {
            name: w.name,
            kernel: w.kernel.unwrap_or_default(),
            image: w.image,
            nets: w.nets,
            volumes: w.volumes,
            kernel_parameters: w.kernel_parameters,
            memory_mib: w.memory_mib,
            vcpus: w.vcpus,
            network: w.network,
            restart: w.restart,
            startup_priority: w.startup_priority,
            autostart: w.autostart,
            labels: w.labels,
            link: w.link,
            host: w.host,
            host_selector: w.host_selector,
            placement: w.placement,
            failover: w.failover,
        })
    }
}

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// A content digest (64 lower-case hex digits, without `sha256:`).
    Digest(String),
    Named {
        name: String,
        tag: String,
    },
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageRef::Digest(d) => write!(f, "sha256:{d}"),
            ImageRef::Named { name, tag } => write!(f, "{name}:{tag}"),
        }
    }
}

/// Parses `sha256:<hex>` (or bare 64 hex digits) into lower-case hex.
pub fn parse_digest(field: &'static str, s: &str) -> Result<String, FieldError> {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(FieldError::new(
            field,
            format!("{s:?} is not a SHA-256 digest; expected 64 hex digits, optionally after \"sha256:\""),
        ));
    }
    Ok(hex.to_ascii_lowercase())
}

/// Parses `name[:tag]` (names: lower-case letters, digits, `.`, `_`, `-`, starting with a
/// letter or digit, at most 128; tags: letters, digits, `.`, `_`, `-`, at most 128).
pub fn parse_name_tag(field: &'static str, s: &str) -> Result<(String, String), FieldError> {
    let (name, tag) = match s.split_once(':') {
        Some((n, t)) => (n, t),
        None => (s, DEFAULT_TAG),
    };
    let bad = |m: String| Err(FieldError::new(field, m));
    if name.is_empty() || name.len() > 128 {
        return bad(format!("{s:?}: the name must be 1 to 128 characters long"));
    }
    if name == "sha256" {
        return bad("\"sha256\" is reserved for digests (sha256:<hex>)".into());
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return bad(format!(
            "{s:?}: the name must start with a lower-case letter or a digit"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')))
    {
        return bad(format!(
            "{s:?}: the name contains {c:?}; use a-z, 0-9, '.', '_' and '-'"
        ));
    }
    if tag.is_empty() || tag.len() > 128 {
        return bad(format!("{s:?}: the tag must be 1 to 128 characters long"));
    }
    if let Some(c) = tag
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return bad(format!(
            "{s:?}: the tag contains {c:?}; use letters, digits, '.', '_' and '-'"
        ));
    }
    Ok((name.to_string(), tag.to_string()))
}

/// Parses `name[:tag]` or `sha256:<hex>`.
pub fn parse_image_ref(field: &'static str, s: &str) -> Result<ImageRef, FieldError> {
    if s.starts_with("sha256:") {
        return parse_digest(field, s).map(ImageRef::Digest);
    }
    parse_name_tag(field, s).map(|(name, tag)| ImageRef::Named { name, tag })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse() {
        let d = "ab".repeat(32);
        assert_eq!(
            parse_image_ref("image", &format!("sha256:{}", d.to_uppercase())),
            Ok(ImageRef::Digest(d.clone()))
        );
        assert_eq!(
            parse_image_ref("image", "web"),
            Ok(ImageRef::Named {
                name: "web".into(),
                tag: "latest".into()
            })
        );
        assert_eq!(
            parse_image_ref("image", "web:1.0").unwrap().to_string(),
            "web:1.0"
        );
        for bad in [
            "",
            "Web",
            "-web",
            "web:",
            "web:a/b",
            "a/b",
            "sha256:12",
            "sha256",
            "web:1:2",
        ] {
            assert!(parse_image_ref("image", bad).is_err(), "{bad}");
        }
    }
}
