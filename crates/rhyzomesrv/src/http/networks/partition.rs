//! `POST /v1/networks/{name}/partitions`.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::json::ApiJson;
use crate::http::AppState;
use axum::extract::{Path, State};
use axum::Extension;
use axum::Json;
use rhyzome_api::{ErrorBody, NetworkConditions, PartitionRequest};

/// Cut an emulated network, both ways, between the instances matching two label selectors.
/// A selector that matches no instance now is a warning in the answer, not an error.
#[utoipa::path(post, path = "/v1/networks/{name}/partitions", tag = "networks",
    params(("name" = String, Path, description = "Network name", example = "wan")),
    request_body = PartitionRequest,
    responses(
        (status = 200, description = "What applies now, with warnings", body = NetworkConditions),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "The role may not do this", body = ErrorBody),
        (status = 404, description = "No such network", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 409, description = "The network is not emulated", body = ErrorBody),
        (status = 422, description = "A malformed selector; `field` names it", body = ErrorBody),
    ))]
pub async fn partition_network(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<PartitionRequest>,
) -> Result<Json<NetworkConditions>, ApiError> {
    Ok(Json(svc.partition_network(&caller, &name, req).await?))
}
