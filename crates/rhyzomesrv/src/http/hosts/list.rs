//! `GET /v1/hosts`.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::AppState;
use axum::extract::State;
use axum::{Extension, Json};
use rhyzome_api::{ErrorBody, HostList};

/// List the libvirt hosts, the primary first: reachability, libvirt version, domain type,
/// CPUs, memory and free memory, this daemon's instances, and labels.
#[utoipa::path(get, path = "/v1/hosts", tag = "hosts",
    responses(
        (status = 200, description = "The hosts", body = HostList),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "The token is limited to a name prefix", body = ErrorBody),
    ))]
pub async fn list_hosts(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<HostList>, ApiError> {
    Ok(Json(HostList {
        hosts: svc.list_hosts(&caller)?,
    }))
}
