//! `GET /v1/info`.

use super::AppState;
use crate::auth::Caller;
use axum::extract::State;
use axum::{Extension, Json};
use rhyzome_api::{ErrorBody, ServerInfo};

/// What this daemon is and how it runs guests, and who the caller is to it (its token's name,
/// role and prefix), so that a client offers only what the token allows.
#[utoipa::path(get, path = "/v1/info", tag = "server",
    responses(
        (status = 200, description = "Daemon identity and settings", body = ServerInfo),
        (status = 401, description = "No or invalid token", body = ErrorBody),
    ))]
pub async fn get_info(
    State(svc): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Json<ServerInfo> {
    Json(svc.info(&caller))
}
