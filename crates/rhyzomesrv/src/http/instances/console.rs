//! `GET /v1/instances/{name}/console`.

use crate::http::error::ApiError;
use crate::http::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use rhyzome_api::{ConsoleQuery, ErrorBody};

/// The serial console output recorded so far (all runs of the instance), as raw bytes.
#[utoipa::path(get, path = "/v1/instances/{name}/console", tag = "instances",
    params(("name" = String, Path, description = "Instance name"), ConsoleQuery),
    responses(
        (status = 200, description = "Console output", content_type = "text/plain", body = String),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 404, description = "No such instance", body = ErrorBody),
    ))]
pub async fn get_console(
    State(svc): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<ConsoleQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(query) = query.map_err(|rej| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", rej.body_text())
            .with_field("tail_bytes")
    })?;
    let bytes = svc.console(&name, query.tail_bytes).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], bytes))
}
