//! `/v1/hosts`: the libvirt hosts the daemon drives, one module per operation.

pub mod get;
pub mod list;

/// The `{name}` of `/v1/hosts/{name}`, as the API document describes it.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // read by the OpenAPI derive only
pub struct HostNamePath {
    /// The host's name (`Hosts[].Name`).
    #[param(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    name: String,
}
