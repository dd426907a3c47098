//! Wire types of the Rhyzome HTTP API, shared by the daemon (`rhyzomesrv`), the CLI
//! (`rhyzomectl`) and the tests, so that the three cannot disagree about a field.
//!
//! The daemon derives its OpenAPI document from these types (`utoipa::ToSchema`), and a test
//! compares that document with the committed `openapi/rhyzome.json`.
//!
//! With the `client` feature the crate also offers [`client::Client`], a typed blocking HTTP
//! client. Nothing here holds state or spawns threads.

pub mod collect;
pub mod hosts;
pub mod images;
pub mod networks;
pub mod placeholders;
pub mod testbed;
pub mod types;
pub mod validate;
pub mod volumes;

#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "client")]
pub mod pinning;

pub use hosts::{Host, HostList, Placement, PlacementPolicy};
pub use images::{
    Image, ImageFormat, ImageInspection, ImageList, ImageUpload, ManifestDevice, Solo5Info,
    Solo5Manifest, UploadQuery,
};
pub use networks::{
    ForwardMode, Network, NetworkAddress, NetworkConditions, NetworkCreate, NetworkLink,
    NetworkList, NicConditions, PartitionRequest, PartitionState,
};
pub use testbed::ops::{TestbedFault, TestbedFaultResult, TestbedScale};
pub use testbed::{
    ChangeKind, Testbed, TestbedApply, TestbedChange, TestbedGroupStatus, TestbedList, TestbedPlan,
};
pub use types::*;
pub use volumes::{
    Volume, VolumeAttachment, VolumeFormat, VolumeList, VolumeMount, VolumeResize, VolumeSpec,
    VolumeUploadQuery, VolumeUploaded, VolumeUse,
};

/// Path prefix of every API route.
pub const API_PREFIX: &str = "/v1";

/// Upper bound that Solo5 puts on a unikernel's command line (it keeps at most 8191 bytes).
pub const MAX_KERNEL_PARAMETERS_BYTES: usize = 8191;

/// Memory an instance gets when the request does not say.
pub const DEFAULT_MEMORY_MIB: u32 = 32;

/// Virtual CPUs an instance gets when the request does not say.
pub const DEFAULT_VCPUS: u32 = 1;
