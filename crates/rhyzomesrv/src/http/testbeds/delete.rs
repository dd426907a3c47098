//! `DELETE /v1/testbeds/{name}`.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Extension;
use rhyzome_api::ErrorBody;

/// Destroy a test bed: its instances, then its networks, then the bed. Answers once all are
/// gone; if the daemon stops half-way, it finishes on its next start.
#[utoipa::path(delete, path = "/v1/testbeds/{name}", tag = "testbeds",
    params(("name" = String, Path, description = "Test bed name", example = "gossip")),
    responses(
        (status = 204, description = "Destroyed"),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "The role may not destroy", body = ErrorBody),
        (status = 404, description = "No such test bed", body = ErrorBody),
        (status = 502, description = "libvirt refused", body = ErrorBody),
        (status = 503, description = "libvirt is unavailable", body = ErrorBody),
    ))]
pub async fn delete_testbed(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    svc.destroy_testbed(&caller, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
