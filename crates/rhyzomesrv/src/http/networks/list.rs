//! `GET /v1/networks`.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::AppState;
use axum::extract::State;
use axum::Extension;
use axum::Json;
use rhyzome_api::{ErrorBody, NetworkList};

/// List managed networks, by name.
#[utoipa::path(get, path = "/v1/networks", tag = "networks",
    responses(
        (status = 200, description = "The networks the caller sees", body = NetworkList),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 503, description = "libvirt is unavailable", body = ErrorBody),
    ))]
pub async fn list_networks(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<NetworkList>, ApiError> {
    Ok(Json(NetworkList {
        networks: svc.list_networks(&caller).await?,
    }))
}
