//! Wire types of volumes (`/v1/volumes`): block storage that outlives instances, attached to
//! the `BLOCK_BASIC` devices of an image's Solo5 manifest, and the checks on them shared by
//! the daemon and the CLI.

use crate::validate::FieldError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Volume sizes are whole 512-byte sectors (what a virtio-blk device addresses).
pub const SECTOR_BYTES: u64 = 512;

/// On-disk format of a volume.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VolumeFormat {
    /// A plain image: what the guest sees, byte for byte (sparse on a `dir` pool).
    #[default]
    Raw,
    /// QEMU copy-on-write; what clones are.
    Qcow2,
}

/// `POST /v1/volumes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    /// Volume name: 1 to 63 characters of `[a-z0-9-]`, not starting or ending with `-`.
    #[schema(
        example = "store0",
        min_length = 1,
        max_length = 63,
        pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
    )]
    pub name: String,
    /// Size in bytes: a positive multiple of 512, no more than the pool has free. Optional
    /// for a clone (default: the base's size; never smaller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 512, example = 67108864)]
    pub size_bytes: Option<u64>,
    /// `raw` (default) or `qcow2`; a clone is always `qcow2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<VolumeFormat>,
    /// Name of a volume to clone: the new volume is its copy-on-write child (a qcow2 file
    /// whose backing file is the base), which costs almost nothing until written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub clone: Option<String>,
}

/// A volume given to a block device at create time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeMount {
    /// The volume's name.
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub volume: String,
    /// Attach it read-only (the guest's writes fail); default read-write.
    #[serde(default)]
    pub read_only: bool,
}

/// A volume attached to an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VolumeAttachment {
    /// The manifest's block device.
    pub device: String,
    pub volume: String,
    pub read_only: bool,
}

/// Parses the CLI's `DEVICE=VOLUME[:ro]`.
pub fn parse_volume_arg(s: &str) -> Result<(String, VolumeMount), String> {
    let (device, rest) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected DEVICE=VOLUME[:ro]"))?;
    let (volume, read_only) = match rest.split_once(':') {
        None => (rest, false),
        Some((v, "ro")) => (v, true),
        Some((v, "rw")) => (v, false),
        Some((_, other)) => {
            return Err(format!("{s:?}: unknown mode {other:?} (use :ro or :rw)"));
        }
    };
    if device.is_empty() || volume.is_empty() {
        return Err(format!("{s:?}: expected DEVICE=VOLUME[:ro]"));
    }
    Ok((
        device.to_string(),
        VolumeMount {
            volume: volume.to_string(),
            read_only,
        },
    ))
}

/// `POST /v1/volumes/{name}/resize`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeResize {
    /// New size in bytes: a multiple of 512, larger than the current size (volumes only grow).
    #[schema(minimum = 512)]
    pub size_bytes: u64,
}

/// An instance using a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VolumeUse {
    pub instance: String,
    /// The manifest's block device the volume is attached as.
    pub device: String,
    pub read_only: bool,
}

/// A volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Volume {
    pub name: String,
    pub format: VolumeFormat,
    /// Size the guest sees, in bytes.
    pub size_bytes: u64,
    /// Bytes the volume takes in its pool now.
    pub allocation_bytes: u64,
    /// The volume this one is a copy-on-write clone of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// Volumes cloned from this one (it cannot be changed or removed while they exist).
    #[serde(default)]
    pub clones: Vec<String>,
    /// Instances it is attached to, and how.
    #[serde(default)]
    pub attached: Vec<VolumeUse>,
    pub created_at: String,
}

/// `GET /v1/volumes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VolumeList {
    pub volumes: Vec<Volume>,
}

/// Query of `PUT /v1/volumes/{name}/content`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VolumeUploadQuery {
    /// Expected SHA-256 of the body (64 hex digits, optionally prefixed `sha256:`); the upload
    /// is refused with 422, and the volume left as it was, when the body differs. May also be
    /// sent as header `X-Rhyzome-Sha256`.
    #[serde(default)]
    #[param(pattern = "^(sha256:)?[0-9a-fA-F]{64}$")]
    pub sha256: Option<String>,
}

/// What an upload did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VolumeUploaded {
    pub volume: Volume,
    /// Bytes received.
    pub bytes: u64,
    /// SHA-256 of what was received, hex.
    pub sha256: String,
}

/// Checks a size in bytes for `field`: positive and whole sectors.
pub fn validate_size(field: &'static str, bytes: u64) -> Result<(), FieldError> {
    if bytes == 0 {
        return Err(FieldError::new(field, "must be more than 0 bytes"));
    }
    if !bytes.is_multiple_of(SECTOR_BYTES) {
        return Err(FieldError::new(
            field,
            format!("is {bytes} bytes, not a multiple of {SECTOR_BYTES} (the sector size)"),
        ));
    }
    Ok(())
}

/// Parses a size as the CLI takes it: bytes, or with a binary suffix `K`, `M`, `G`, `T`
/// (optionally followed by `iB` or `B`): `64M` is 64 MiB.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &t[digits.len()..];
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (try 64M or 1G)"))?;
    let shift = match suffix.trim_end_matches("iB").trim_end_matches('B') {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        "T" | "t" => 40,
        _ => return Err(format!("{s:?}: unknown unit {suffix:?} (use K, M, G or T)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_whole_sectors() {
        assert_eq!(
            validate_size("size_bytes", 0).unwrap_err().field,
            "size_bytes"
        );
        assert!(validate_size("size_bytes", 1000).is_err());
        assert!(validate_size("size_bytes", 1024).is_ok());
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("12X").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
