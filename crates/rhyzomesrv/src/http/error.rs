//! Every error leaves the API as JSON ([`ErrorBody`]) with a status that says whose fault it
//! is: 4xx for the request (naming the field when there is one), 5xx for the server.

use crate::auth::AuthError;
use crate::backend::BackendError;
use crate::service::ServiceError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rhyzome_api::ErrorBody;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
    /// What the audit log records beyond the answer, when the answer withholds it from the
    /// caller (see [`AuditDetail`]).
    pub audit_detail: Option<String>,
}

/// A response extension: the detail of a refusal that the caller was not told, for the audit
/// log (`http::auth` writes it as `detail`).
#[derive(Debug, Clone)]
pub struct AuditDetail(pub String);

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                code: code.to_string(),
                message: message.into(),
                field: None,
            },
            audit_detail: None,
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.body.field = Some(field.into());
        self
    }

    pub fn with_audit_detail(mut self, detail: String) -> Self {
        self.audit_detail = Some(detail);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let mut resp = (self.status, Json(self.body)).into_response();
        if let Some(detail) = self.audit_detail {
            resp.extensions_mut().insert(AuditDetail(detail));
        }
        if unauthorized {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"rhyzome\""),
            );
        }
        resp
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let message = e.to_string();
        match e {
            AuthError::Missing | AuthError::Invalid => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
            }
            AuthError::Forbidden { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
            }
            AuthError::Quota { limit, .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "quota_exceeded", message).with_field(limit)
            }
            AuthError::OutOfScope(f) => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", f.message).with_field(f.field)
            }
            AuthError::RateLimited { .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
            }
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Auth(a) => a.into(),
            ServiceError::Image(i) => i.into(),
            ServiceError::Volume(v) => v.into(),
            ServiceError::Invalid(f) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", f.message)
                    .with_field(f.field)
            }
            ServiceError::NotFound(_)
            | ServiceError::NetworkNotFound(_)
            | ServiceError::TestbedNotFound(_)
            | ServiceError::HostNotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
            }
            ServiceError::Conflict { field, message } => {
                let err = ApiError::new(StatusCode::CONFLICT, "conflict", message);
                match field {
                    Some(f) => err.with_field(f),
                    None => err,
                }
            }
            ServiceError::KernelPathRefused(detail) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                crate::kernels::NOT_ALLOWED,
            )
            .with_field("kernel")
            .with_audit_detail(detail.to_string()),
            ServiceError::Kernel(k) if k.is_client_error() => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                k.to_string(),
            )
            .with_field("kernel"),
            ServiceError::Backend(BackendError::Unavailable(m)) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "libvirt_unavailable",
                format!("libvirt is unavailable: {m}"),
            ),
            ServiceError::Backend(b) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "libvirt_error", b.to_string())
            }
            other => {
                tracing::error!(error = %other, "internal error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    other.to_string(),
                )
            }
        }
    }
}
