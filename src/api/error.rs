//! The API's one error type: a stable code, a message, the offending parameter, and an
//! HTTP status. Internal errors are logged and answered without their details.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An API error. `Clone`: one failed computation answers every request that waited
/// for it ([`super::memo`]).
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable, machine-readable: `bad_parameter`, `range_too_large`, `not_found`,
    /// `unauthorized`, `internal`.
    pub code: &'static str,
    pub message: String,
    pub parameter: Option<&'static str>,
}

impl ApiError {
    pub fn bad(parameter: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_parameter",
            message: message.into(),
            parameter: Some(parameter),
        }
    }
    pub fn range(parameter: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "range_too_large",
            message: message.into(),
            parameter: Some(parameter),
        }
    }
    pub fn not_found(parameter: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
            parameter: Some(parameter),
        }
    }
    pub fn unauthorized() -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: "a valid bearer token is required".into(),
            parameter: None,
        }
    }
    /// Logs `e` and answers 500 without it.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "api: internal error");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: "internal error; see the service log".into(),
            parameter: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message, "parameter": self.parameter}})),
        )
            .into_response()
    }
}
