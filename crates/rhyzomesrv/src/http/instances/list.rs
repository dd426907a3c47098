//! `GET /v1/instances`.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use rhyzome_api::{ErrorBody, InstanceList};

/// List the instances the caller may see, ordered by name. Served from the daemon's store (no libvirt call).
#[utoipa::path(get, path = "/v1/instances", tag = "instances",
    responses(
        (status = 200, description = "All instances", body = InstanceList),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 500, description = "Store failure", body = ErrorBody),
    ))]
pub async fn list_instances(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    let json = svc.list_json(&caller)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}
