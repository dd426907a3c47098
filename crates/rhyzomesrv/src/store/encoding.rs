//! How the store writes values of API types into its columns, owned by the store.
//!
//! The API's types are its wire format and may change with the API; what a database holds
//! must not change with them. Each enum has its own stored spelling here, and the image
//! inspection is stored through [`StoredInspection`], a copy of the API type that only the
//! store changes (with a numbered migration when it must), so that an API change cannot turn
//! rows already written into `Corrupt` errors. Pure functions; no state.

use super::StoreError;
use rhyzome_api::{
    ForwardMode, ImageFormat, ImageInspection, InstanceState, ManifestDevice, RestartMode,
    Solo5Info, Solo5Manifest,
};
use serde::{Deserialize, Serialize};

/// Column `instances.state`.
pub(super) fn state_to_sql(state: InstanceState) -> &'static str {
    match state {
        InstanceState::Pending => "pending",
        InstanceState::Starting => "starting",
        InstanceState::Running => "running",
        InstanceState::Stopped => "stopped",
        InstanceState::Exited => "exited",
        InstanceState::Crashed => "crashed",
        InstanceState::Failed => "failed",
        InstanceState::Unknown => "unknown",
    }
}

pub(super) fn state_from_sql(s: String) -> Result<InstanceState, StoreError> {
    Ok(match s.as_str() {
        "pending" => InstanceState::Pending,
        "starting" => InstanceState::Starting,
        "running" => InstanceState::Running,
        "stopped" => InstanceState::Stopped,
        "exited" => InstanceState::Exited,
        "crashed" => InstanceState::Crashed,
        "failed" => InstanceState::Failed,
        "unknown" => InstanceState::Unknown,
        _ => {
            return Err(StoreError::Corrupt {
                what: "state",
                value: s,
            })
        }
    })
}

/// Column `instances.restart_mode`.
pub(super) fn restart_mode_to_sql(mode: RestartMode) -> &'static str {
    match mode {
        RestartMode::Never => "never",
        RestartMode::OnFailure => "on_failure",
        RestartMode::Always => "always",
    }
}

pub(super) fn forward_mode_to_sql(mode: ForwardMode) -> &'static str {
    match mode {
        ForwardMode::Isolated => "isolated",
        ForwardMode::Nat => "nat",
        ForwardMode::Route => "route",
    }
}

pub(super) fn forward_mode_from_sql(s: &str) -> Result<ForwardMode, StoreError> {
    Ok(match s {
        "isolated" => ForwardMode::Isolated,
        "nat" => ForwardMode::Nat,
        "route" => ForwardMode::Route,
        _ => {
            return Err(StoreError::Corrupt {
                what: "network mode",
                value: s.to_string(),
            })
        }
    })
}

pub(super) fn restart_mode_from_sql(s: String) -> Result<RestartMode, StoreError> {
    Ok(match s.as_str() {
        "never" => RestartMode::Never,
        "on_failure" => RestartMode::OnFailure,
        "always" => RestartMode::Always,
        _ => {
            return Err(StoreError::Corrupt {
                what: "restart mode",
                value: s,
            })
        }
    })
}

/// Column `instances.restart_exit_codes`: a JSON array of integers.
pub(super) fn exit_codes_to_sql(codes: Option<&Vec<i32>>) -> Option<String> {
    codes.map(|c| serde_json::to_string(c).expect("integers serialise"))
}

pub(super) fn exit_codes_from_sql(codes: Option<String>) -> Result<Option<Vec<i32>>, StoreError> {
    codes
        .map(|c| {
            serde_json::from_str::<Vec<i32>>(&c).map_err(|_| StoreError::Corrupt {
                what: "restart exit codes",
                value: c,
            })
        })
        .transpose()
}

/// Column `images.inspection`: the JSON of this type, which is spelled as the API's
/// `ImageInspection` was when images were first stored.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct StoredInspection {
    format: StoredFormat,
    elf_class: Option<u8>,
    multiboot_aout_kludge: Option<bool>,
    description: String,
    solo5: Option<StoredSolo5>,
    problem: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StoredFormat {
    Multiboot,
    LinuxBzimage,
    Elf,
    Other,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredSolo5 {
    abi_target: Option<String>,
    abi_version: Option<u32>,
    manifest: Option<StoredManifest>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredManifest {
    version: u32,
    devices: Vec<StoredDevice>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredDevice {
    name: String,
    #[serde(rename = "type")]
    kind: String,
}

pub(super) fn inspection_to_sql(i: &ImageInspection) -> String {
    let stored = StoredInspection {
        format: match i.format {
            ImageFormat::Multiboot => StoredFormat::Multiboot,
            ImageFormat::LinuxBzimage => StoredFormat::LinuxBzimage,
            ImageFormat::Elf => StoredFormat::Elf,
            ImageFormat::Other => StoredFormat::Other,
        },
        elf_class: i.elf_class,
        multiboot_aout_kludge: i.multiboot_aout_kludge,
        description: i.description.clone(),
        solo5: i.solo5.as_ref().map(|s| StoredSolo5 {
            abi_target: s.abi_target.clone(),
            abi_version: s.abi_version,
            manifest: s.manifest.as_ref().map(|m| StoredManifest {
                version: m.version,
                devices: m
                    .devices
                    .iter()
                    .map(|d| StoredDevice {
                        name: d.name.clone(),
                        kind: d.kind.clone(),
                    })
                    .collect(),
            }),
        }),
        problem: i.problem.clone(),
    };
    serde_json::to_string(&stored).expect("inspection serialises")
}

pub(super) fn inspection_from_sql(json: String) -> Result<ImageInspection, StoreError> {
    let Ok(s) = serde_json::from_str::<StoredInspection>(&json) else {
        return Err(StoreError::Corrupt {
            what: "image inspection",
            value: json,
        });
    };
    Ok(ImageInspection {
        format: match s.format {
            StoredFormat::Multiboot => ImageFormat::Multiboot,
            StoredFormat::LinuxBzimage => ImageFormat::LinuxBzimage,
            StoredFormat::Elf => ImageFormat::Elf,
            StoredFormat::Other => ImageFormat::Other,
        },
        elf_class: s.elf_class,
        multiboot_aout_kludge: s.multiboot_aout_kludge,
        description: s.description,
        solo5: s.solo5.map(|s| Solo5Info {
            abi_target: s.abi_target,
            abi_version: s.abi_version,
            manifest: s.manifest.map(|m| Solo5Manifest {
                version: m.version,
                devices: m
                    .devices
                    .into_iter()
                    .map(|d| ManifestDevice {
                        name: d.name,
                        kind: d.kind,
                    })
                    .collect(),
            }),
        }),
        problem: s.problem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored spelling is fixed: these literals are what existing databases hold.
    #[test]
    fn stored_spellings_read_back_and_stay_as_written() {
        for (state, text) in [
            (InstanceState::Pending, "pending"),
            (InstanceState::Starting, "starting"),
            (InstanceState::Running, "running"),
            (InstanceState::Stopped, "stopped"),
            (InstanceState::Exited, "exited"),
            (InstanceState::Crashed, "crashed"),
            (InstanceState::Failed, "failed"),
        ] {
            assert_eq!(state_to_sql(state), text);
            assert_eq!(state_from_sql(text.into()).unwrap(), state);
        }
        for (mode, text) in [
            (RestartMode::Never, "never"),
            (RestartMode::OnFailure, "on_failure"),
            (RestartMode::Always, "always"),
        ] {
            assert_eq!(restart_mode_to_sql(mode), text);
            assert_eq!(restart_mode_from_sql(text.into()).unwrap(), mode);
        }
        for (mode, text) in [
            (ForwardMode::Isolated, "isolated"),
            (ForwardMode::Nat, "nat"),
            (ForwardMode::Route, "route"),
        ] {
            assert_eq!(forward_mode_to_sql(mode), text);
            assert_eq!(forward_mode_from_sql(text).unwrap(), mode);
        }
        assert!(forward_mode_from_sql("bridged").is_err());
        assert!(matches!(
            state_from_sql("sleeping".into()),
            Err(StoreError::Corrupt { what: "state", .. })
        ));
        let json = r#"{"format":"multiboot","elf_class":64,"multiboot_aout_kludge":true,"description":"d","solo5":{"abi_target":"virtio","abi_version":2,"manifest":{"version":1,"devices":[{"name":"service","type":"NET_BASIC"}]}},"problem":null}"#;
        let inspection = inspection_from_sql(json.into()).unwrap();
        assert_eq!(inspection.format, ImageFormat::Multiboot);
        assert_eq!(
            inspection
                .solo5
                .as_ref()
                .unwrap()
                .manifest
                .as_ref()
                .unwrap()
                .devices[0]
                .kind,
            "NET_BASIC"
        );
        assert_eq!(inspection_to_sql(&inspection), json);
    }
}
