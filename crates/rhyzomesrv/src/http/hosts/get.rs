//! `GET /v1/hosts/{name}`.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::AppState;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use rhyzome_api::{ErrorBody, Host};

/// Show one libvirt host.
#[utoipa::path(get, path = "/v1/hosts/{name}", tag = "hosts",
    params(super::HostNamePath),
    responses(
        (status = 200, description = "The host", body = Host),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "The token is limited to a name prefix", body = ErrorBody),
        (status = 404, description = "No such host", body = ErrorBody),
    ))]
pub async fn get_host(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<Host>, ApiError> {
    Ok(Json(svc.get_host(&caller, &name)?))
}
