//! The HTTP API under `/v1`, on axum. One module per operation (`instances/create.rs`, ...);
//! each handler is annotated for OpenAPI, and the router is built with `utoipa-axum`, so a
//! route cannot exist without its documentation. The generated document is served at
//! `/v1/openapi.json` and committed as `openapi/rhyzome.json`; a test fails when they differ.
//!
//! Handlers are thin: they extract, call the [`Service`], and map its errors to [`ApiError`].

pub mod error;
pub mod events;
pub mod info;
pub mod instances;
pub mod json;
pub mod openapi;

use crate::service::Service;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::Router;
use error::ApiError;
use std::sync::Arc;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Largest request body accepted. Instance specs are small (kernel parameters are capped at
/// 8191 bytes); anything bigger is a mistake or an attack.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub type AppState = Arc<Service>;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Rhyzome API",
        description = "Provision MirageOS/Solo5 unikernels as libvirt guests.",
        license(name = "Apache-2.0"),
    ),
    tags(
        (name = "instances", description = "Unikernel instances and their lifecycle"),
        (name = "server", description = "The daemon itself"),
    ),
    components(schemas(rhyzome_api::ErrorBody))
)]
struct ApiDoc;

/// The router without state, and the OpenAPI document derived from the same route table.
fn api_router() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(
            instances::create::create_instance,
            instances::list::list_instances
        ))
        .routes(routes!(
            instances::get::get_instance,
            instances::delete::delete_instance
        ))
        .routes(routes!(instances::start::start_instance))
        .routes(routes!(instances::stop::stop_instance))
        .routes(routes!(instances::restart::restart_instance))
        .routes(routes!(instances::console::get_console))
        .routes(routes!(events::get_events))
        .routes(routes!(info::get_info))
        .routes(routes!(openapi::get_openapi))
        .split_for_parts()
}

/// The OpenAPI document of this build.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    api_router().1
}

/// The document as committed: pretty JSON with a trailing newline.
pub fn openapi_json() -> String {
    let mut s = openapi_document()
        .to_pretty_json()
        .expect("the OpenAPI document serialises");
    s.push('\n');
    s
}

pub fn router(service: Arc<Service>) -> Router {
    let (router, _) = api_router();
    router
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such route; the API lives under /v1",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not accept that method",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(service)
}
