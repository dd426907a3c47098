//! The HTTP API under `/v1`, on axum. One module per operation (`instances/create.rs`, ...);
//! each handler is annotated for OpenAPI, and the router is built with `utoipa-axum`, so a
//! route cannot exist without its documentation. The generated document is served at
//! `/v1/openapi.json` and committed as `openapi/rhyzome.json`; a test fails when they differ.
//!
//! Handlers are thin: they extract, call the [`Service`], and map its errors to [`ApiError`].

pub mod auth;
pub mod dashboard;
pub mod digest;
pub mod error;
pub mod events;
pub mod hosts;
pub mod images;
pub mod info;
pub mod instances;
pub mod json;
pub mod local_socket;
pub mod metrics;
pub mod networks;
pub mod openapi;
pub mod query;
pub mod server;
pub mod streams;
pub mod testbeds;
pub mod volumes;

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
        (name = "images", description = "Uploaded unikernel images"),
        (name = "networks", description = "Managed networks and the addresses on them"),
        (name = "volumes", description = "Block storage that outlives instances"),
        (name = "hosts", description = "The libvirt hosts this daemon drives"),
        (name = "testbeds", description = "Test beds: groups of instances applied from one file"),
        (name = "server", description = "The daemon itself"),
    ),
    components(schemas(rhyzome_api::ErrorBody)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
struct ApiDoc;

/// Declares the bearer token every operation takes.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(
                            "A token made by `rhyzomesrv token create` (`rhz_...`). Required \
                             on TCP once any token exists; until then, and on the local \
                             socket, requests need none.",
                        ))
                        .build(),
                ),
            );
    }
}

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
        .routes(routes!(instances::stats::instance_stats))
        .routes(routes!(instances::link::set_instance_link))
        .routes(upload_route())
        .routes(routes!(images::list::list_images))
        .routes(routes!(
            images::get::get_image,
            images::head::head_image,
            images::delete::delete_image
        ))
        .routes(routes!(
            networks::create::create_network,
            networks::list::list_networks
        ))
        .routes(routes!(
            networks::get::get_network,
            networks::delete::delete_network
        ))
        .routes(routes!(networks::link::set_network_link))
        .routes(routes!(
            networks::partition::partition_network,
            networks::heal::heal_network
        ))
        .routes(routes!(networks::conditions::get_network_conditions))
        .routes(routes!(
            volumes::create::create_volume,
            volumes::list::list_volumes
        ))
        .routes(routes!(
            volumes::get::get_volume,
            volumes::delete::delete_volume
        ))
        .routes(routes!(volumes::resize::resize_volume))
        .routes(volume_content_route())
        .routes(routes!(
            testbeds::apply::apply_testbed,
            testbeds::list::list_testbeds
        ))
        .routes(routes!(
            testbeds::get::get_testbed,
            testbeds::delete::delete_testbed
        ))
        .routes(routes!(testbeds::scale::scale_testbed))
        .routes(routes!(testbeds::faults::testbed_fault))
        .routes(routes!(testbeds::collect::collect_testbed))
        .routes(routes!(hosts::list::list_hosts))
        .routes(routes!(hosts::get::get_host))
        .routes(routes!(events::get_events))
        .routes(routes!(info::get_info))
        .routes(routes!(openapi::get_openapi))
        .routes(routes!(metrics::get_metrics))
        .split_for_parts()
}

/// `POST /v1/images` without the router's 64 KiB body limit: images are large, and the handler
/// streams the body to disk and enforces `MaxImageBytes` itself.
fn upload_route() -> utoipa_axum::router::UtoipaMethodRouter<AppState> {
    let (schemas, paths, method_router) = routes!(images::upload::upload_image);
    (
        schemas,
        paths,
        method_router.layer(DefaultBodyLimit::disable()),
    )
}

/// `/v1/volumes/{name}/content` without the router's body limit: the upload handler streams
/// the body into libvirt and enforces the volume's size and `MaxVolumeUploadBytes` itself.
fn volume_content_route() -> utoipa_axum::router::UtoipaMethodRouter<AppState> {
    let (schemas, paths, method_router) = routes!(
        volumes::upload::upload_volume,
        volumes::download::download_volume
    );
    (
        schemas,
        paths,
        method_router.layer(DefaultBodyLimit::disable()),
    )
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

/// The API with authentication off (every caller is the anonymous administrator).
pub fn router(service: Arc<Service>) -> Router {
    router_with_auth(service, auth::Authenticator::disabled())
}

/// The API behind `auth`.
pub fn router_with_auth(service: Arc<Service>, auth: Arc<auth::Authenticator>) -> Router {
    let (router, _) = api_router();
    let request_metrics = service.metrics().clone();
    let timeout = service.config().request_timeout;
    let streams = streams::Streams::new(
        auth.clone(),
        service.config().max_streams_per_caller,
        service.config().max_stream_lifetime,
    );
    router
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such route; the API lives under /v1 (metrics at /metrics)",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not accept that method",
            )
        })
        .layer(axum::Extension(streams))
        .layer(axum::middleware::from_fn_with_state(
            auth,
            auth::authenticate,
        ))
        .layer(axum::middleware::from_fn(move |req, next| {
            request_timeout(timeout, req, next)
        }))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            request_metrics,
            metrics::record_request,
        ))
        .with_state(service)
        // After the API's layers: the dashboard's static assets need no token.
        .merge(dashboard::router())
        .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(request_span))
}

/// One span per request, at INFO so that its fields go with every event logged while it is
/// handled (the audit line, "instance accepted", ...): `request{request_id=... method=POST
/// path=/v1/instances}` in the plain format, `REQUEST_ID=`, `METHOD=`, `PATH=` in the journal.
fn request_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    let id = uuid::Uuid::new_v4().simple().to_string();
    tracing::info_span!(
        "request",
        request_id = &id[..16],
        method = %request.method(),
        path = %request.uri().path(),
    )
}

/// Answers 408 when a request takes longer than `limit` to produce its response head. Image
/// uploads are exempt: their handler reads the whole body first, and a large image over a
/// slow link legitimately takes longer (slow header senders are cut off by the server loop).
/// A followed console or event stream is not affected either: its response starts at once.
async fn request_timeout(
    limit: std::time::Duration,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if req.method() == axum::http::Method::POST && req.uri().path() == "/v1/images" {
        return next.run(req).await;
    }
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("the request took longer than {} s", limit.as_secs()),
        )
        .into_response(),
    }
}
