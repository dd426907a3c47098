//! `POST /v1/networks`.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::json::ApiJson;
use crate::http::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use axum::Json;
use rhyzome_api::{ErrorBody, Network, NetworkCreate};

/// Create a managed network and start it in libvirt.
///
/// libvirt makes the bridge (and, with `dhcp`, runs its DHCP server). The subnet must not
/// overlap another managed network, another libvirt network, or an address of the libvirt
/// host. On any failure nothing is left in libvirt.
#[utoipa::path(post, path = "/v1/networks", tag = "networks",
    request_body = NetworkCreate,
    responses(
        (status = 201, description = "Created and running", body = Network),
        (status = 400, description = "Malformed JSON or unknown field", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "Role or name prefix forbids it", body = ErrorBody),
        (status = 409, description = "Name already taken", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 422, description = "A field is invalid, or the subnet overlaps", body = ErrorBody),
        (status = 502, description = "libvirt refused the network", body = ErrorBody),
        (status = 503, description = "libvirt is unavailable", body = ErrorBody),
    ))]
pub async fn create_network(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<NetworkCreate>,
) -> Result<(StatusCode, Json<Network>), ApiError> {
    let network = svc.create_network(req, &caller).await?;
    Ok((StatusCode::CREATED, Json(network)))
}
