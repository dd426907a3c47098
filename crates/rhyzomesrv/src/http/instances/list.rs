//! `GET /v1/instances`.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::query::ApiQuery;
use crate::http::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use rhyzome_api::{ErrorBody, InstanceList, InstanceListQuery};

/// List the instances the caller may see, ordered by name; with `selector`, only those
/// carrying every label it names. Served from the daemon's store (no libvirt call).
#[utoipa::path(get, path = "/v1/instances", tag = "instances",
    params(InstanceListQuery),
    responses(
        (status = 200, description = "All instances", body = InstanceList),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 422, description = "`selector` is not `key=value[,key=value...]`", body = ErrorBody),
        (status = 500, description = "Store failure", body = ErrorBody),
    ))]
pub async fn list_instances(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(query): ApiQuery<InstanceListQuery>,
) -> Result<Response, ApiError> {
    let json = svc.list_json(&caller, query.selector.as_deref())?;
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}
