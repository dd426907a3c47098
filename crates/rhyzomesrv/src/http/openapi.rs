//! `GET /v1/openapi.json`: the API's own description.

use axum::http::header;
use axum::response::IntoResponse;

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "server",
    responses(
        (status = 200, description = "OpenAPI document", content_type = "application/json"),
        (status = 401, description = "No or invalid token", body = rhyzome_api::ErrorBody),
    ))]
pub async fn get_openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi_json(),
    )
}
