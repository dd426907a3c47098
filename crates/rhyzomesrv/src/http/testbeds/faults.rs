//! `POST /v1/testbeds/{name}/faults`.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::json::ApiJson;
use crate::http::AppState;
use axum::extract::{Path, State};
use axum::Extension;
use axum::Json;
use rhyzome_api::{ErrorBody, TestbedFault, TestbedFaultResult};

/// Inject a fault: `kill` or `restart` `count` instances of `group`, picked deterministically
/// from the seed (see `TestbedFault`), or `partition`/`heal` the emulated networks two groups
/// share. The answer lists what was picked; the fault is also published as an event of
/// `testbed:NAME`.
#[utoipa::path(post, path = "/v1/testbeds/{name}/faults", tag = "testbeds",
    params(("name" = String, Path, description = "Test bed name", example = "gossip")),
    request_body = TestbedFault,
    responses(
        (status = 200, description = "The fault, injected", body = TestbedFaultResult),
        (status = 400, description = "Malformed JSON or unknown field", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "The role may not inject faults", body = ErrorBody),
        (status = 404, description = "No such test bed", body = ErrorBody),
        (status = 409, description = "The bed is being destroyed, or its groups are not on an emulated network (partition, heal)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 422, description = "Unknown group, a count out of range, or groups sharing no network", body = ErrorBody),
        (status = 502, description = "libvirt refused", body = ErrorBody),
        (status = 503, description = "libvirt is unavailable", body = ErrorBody),
    ))]
pub async fn testbed_fault(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<TestbedFault>,
) -> Result<Json<TestbedFaultResult>, ApiError> {
    Ok(Json(svc.testbed_fault(&caller, &name, req).await?))
}
