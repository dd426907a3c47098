//! `GET /v1/volumes`.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::AppState;
use axum::extract::State;
use axum::{Extension, Json};
use rhyzome_api::{ErrorBody, VolumeList};

/// List the volumes the caller sees, by name.
#[utoipa::path(get, path = "/v1/volumes", tag = "volumes",
    responses(
        (status = 200, description = "The volumes", body = VolumeList),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 502, description = "libvirt refused", body = ErrorBody),
        (status = 503, description = "libvirt is unavailable", body = ErrorBody),
    ))]
pub async fn list_volumes(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<VolumeList>, ApiError> {
    let volumes = svc.list_volumes(&caller).await?;
    Ok(Json(VolumeList { volumes }))
}
