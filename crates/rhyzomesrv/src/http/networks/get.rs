//! `GET /v1/networks/{name}`.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::AppState;
use axum::extract::{Path, State};
use axum::Extension;
use axum::Json;
use rhyzome_api::{ErrorBody, Network};

/// Show one managed network: subnet, gateway, mode, bridge, and the addresses in use.
#[utoipa::path(get, path = "/v1/networks/{name}", tag = "networks",
    params(("name" = String, Path, description = "Network name", example = "lab")),
    responses(
        (status = 200, description = "The network", body = Network),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 404, description = "No such network", body = ErrorBody),
        (status = 503, description = "libvirt is unavailable", body = ErrorBody),
    ))]
pub async fn get_network(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<Network>, ApiError> {
    Ok(Json(svc.get_network(&caller, &name).await?))
}
