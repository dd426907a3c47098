//! `POST /v1/testbeds`.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::json::ApiJson;
use crate::http::AppState;
use axum::extract::State;
use axum::Extension;
use axum::Json;
use rhyzome_api::{ErrorBody, TestbedApply, TestbedPlan};

/// Apply a test-bed file: check it whole, answer with the plan (what will be created,
/// replaced or deleted, and why), store it and converge the bed in the background. The same
/// file again answers `changed: false`. With `dry_run` nothing changes.
///
/// Every error in the file is a 422 whose message gives its line and column; nothing is
/// created then.
#[utoipa::path(post, path = "/v1/testbeds", tag = "testbeds",
    request_body = TestbedApply,
    responses(
        (status = 200, description = "The plan, being carried out unless dry_run", body = TestbedPlan),
        (status = 400, description = "Malformed JSON or unknown field", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "Role or name prefix forbids it", body = ErrorBody),
        (status = 409, description = "A network of the file exists outside the bed, or the bed is another's or being destroyed", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 422, description = "The file is invalid (line and column in the message)", body = ErrorBody),
    ))]
pub async fn apply_testbed(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<TestbedApply>,
) -> Result<Json<TestbedPlan>, ApiError> {
    Ok(Json(svc.apply_testbed(&caller, req).await?))
}
