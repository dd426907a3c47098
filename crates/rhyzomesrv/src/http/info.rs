//! `GET /v1/info`.

use super::AppState;
use axum::extract::State;
use axum::Json;
use rhyzome_api::{ErrorBody, ServerInfo};

/// What this daemon is and how it runs guests.
#[utoipa::path(get, path = "/v1/info", tag = "server",
    responses(
        (status = 200, description = "Daemon identity and settings", body = ServerInfo),
        (status = 401, description = "No or invalid token", body = ErrorBody),
    ))]
pub async fn get_info(State(svc): State<AppState>) -> Json<ServerInfo> {
    Json(svc.info())
}
