//! `GET /v1/testbeds/{name}`.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::AppState;
use axum::extract::{Path, State};
use axum::Extension;
use axum::Json;
use rhyzome_api::{ErrorBody, Testbed};

/// Show one test bed: per group, desired, created, running, ready, exited and failed
/// instances, and the time to ready.
#[utoipa::path(get, path = "/v1/testbeds/{name}", tag = "testbeds",
    params(("name" = String, Path, description = "Test bed name", example = "gossip")),
    responses(
        (status = 200, description = "The test bed", body = Testbed),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 404, description = "No such test bed", body = ErrorBody),
    ))]
pub async fn get_testbed(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<Testbed>, ApiError> {
    Ok(Json(svc.get_testbed(&caller, &name)?))
}
