//! `GET /v1/testbeds`.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::AppState;
use axum::extract::State;
use axum::Extension;
use axum::Json;
use rhyzome_api::{ErrorBody, TestbedList};

/// List test beds, by name, each with its groups' counts.
#[utoipa::path(get, path = "/v1/testbeds", tag = "testbeds",
    responses(
        (status = 200, description = "The test beds the caller sees", body = TestbedList),
        (status = 401, description = "No or invalid token", body = ErrorBody),
    ))]
pub async fn list_testbeds(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<TestbedList>, ApiError> {
    Ok(Json(TestbedList {
        testbeds: svc.list_testbeds(&caller)?,
    }))
}
