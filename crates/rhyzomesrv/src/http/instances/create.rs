//! `POST /v1/instances`.

use crate::auth::Caller;
use crate::http::error::ApiError;
use crate::http::json::ApiJson;
use crate::http::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use axum::Json;
use rhyzome_api::{ErrorBody, Instance, InstanceSpec};

/// Create an instance and boot it.
///
/// The spec is checked, the kernel is copied from its server path into the daemon's store,
/// and the guest is started. On any failure nothing is left behind.
#[utoipa::path(post, path = "/v1/instances", tag = "instances",
    request_body = InstanceSpec,
    responses(
        (status = 201, description = "Created and running", body = Instance),
        (status = 400, description = "Malformed JSON or unknown field", body = ErrorBody),
        (status = 401, description = "No or invalid token", body = ErrorBody),
        (status = 403, description = "Role, name prefix, bridge or quota forbids it", body = ErrorBody),
        (status = 409, description = "Name or MAC already taken, or no host can take it", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 422, description = "A field is invalid", body = ErrorBody),
        (status = 429, description = "Too many creates; retry later", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until a create will be accepted"))),
        (status = 502, description = "libvirt refused the guest", body = ErrorBody),
        (status = 503, description = "libvirt (or the named host) is unavailable", body = ErrorBody),
    ))]
pub async fn create_instance(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(spec): ApiJson<InstanceSpec>,
) -> Result<(StatusCode, Json<Instance>), ApiError> {
    let started = std::time::Instant::now();
    let instance = svc.create(spec, &caller).await?;
    svc.metrics()
        .observe_create(started.elapsed().as_secs_f64());
    Ok((StatusCode::CREATED, Json(instance)))
}
