//! `POST /v1/testbeds/{name}/scale`.
//!
//! A POST to a sub-resource rather than a PATCH of the bed: the bed's representation
//! (`Testbed`) is status, not the counts; a scale is a command that answers with a plan, like
//! an apply (`POST /v1/testbeds`), and like the other actions on a resource
//! (`/instances/{name}/restart`, `/networks/{name}/partition`).

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::json::ApiJson;
use crate::http::AppState;
use axum::extract::{Path, State};
use axum::Extension;
use axum::Json;
use rhyzome_api::{ErrorBody, TestbedPlan, TestbedScale};

/// Scale groups of a test bed: adds or removes the highest indices, never changing the
/// instances the file plans. The counts are stored with the bed (they survive daemon
/// restarts) and last until the next apply of a file, which resets them to the file's.
#[utoipa::path(post, path = "/v1/testbeds/{name}/scale", tag = "testbeds",
    params(("name" = String, Path, description = "Test bed name", example = "gossip")),
    request_body = TestbedScale,
    responses(
        (status = 200, description = "The plan, being carried out unless dry_run", body = TestbedPlan),
        (status = 400, description = "Malformed JSON or unknown field", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "The role may not scale", body = ErrorBody),
        (status = 404, description = "No such test bed", body = ErrorBody),
        (status = 409, description = "The bed is being destroyed", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 422, description = "Unknown group, or a count out of range or too big for the group's subnet (field counts.GROUP)", body = ErrorBody),
    ))]
pub async fn scale_testbed(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<TestbedScale>,
) -> Result<Json<TestbedPlan>, ApiError> {
    Ok(Json(svc.scale_testbed(&caller, &name, req).await?))
}
