//! The one error type the API layer returns, and the one table that maps every
//! domain error onto tsuru's status codes and plain-text bodies (API-NOTES §1.5).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::plugin::PluginError;
use crate::plugin::auth_scheme::{AuthCallError, SchemeError};
use crate::store::StoreError;

pub const MSG_UNAUTHORIZED: &str = "You must provide a valid Authorization header";
pub const MSG_FORBIDDEN: &str = "You don't have permission to do this action";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into() }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, MSG_UNAUTHORIZED)
    }
    pub fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, MSG_FORBIDDEN)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// tsuru's `http.Error`: the message plus a newline, as plain text. An empty
/// message is a bare status with no body (tsuru's `WriteHeader` answers).
pub fn plain_text(status: StatusCode, message: &str) -> Response {
    let body = if message.is_empty() { String::new() } else { format!("{message}\n") };
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = plain_text(self.status, &self.message);
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(r#"Bearer realm="tsuru" scope="tsuru""#));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::not_found(what),
            StoreError::Conflict(what) => ApiError::conflict(what),
            StoreError::Database(e) => {
                // The detail (SQL, constraint names, driver text) is for the
                // operator's log, not for clients.
                tracing::error!(error = %e, "database error");
                ApiError::internal("torii could not complete the request: a database error (the server log has the detail)")
            }
            StoreError::Corrupt(what) => {
                tracing::error!(error = %what, "corrupt stored value");
                ApiError::internal("a stored value is corrupt: see the server log")
            }
            StoreError::Sealed(what) => {
                tracing::error!(error = %what, "sealed secret");
                ApiError::internal(what)
            }
        }
    }
}

impl From<crate::limits::LimitError> for ApiError {
    fn from(e: crate::limits::LimitError) -> Self {
        match e {
            crate::limits::LimitError::Quota { .. } => ApiError::forbidden_with(e.to_string()),
            crate::limits::LimitError::MaxUnits { .. } => ApiError::bad_request(e.to_string()),
        }
    }
}

impl From<PluginError> for ApiError {
    fn from(e: PluginError) -> Self {
        tracing::warn!(error = %e, "plugin call failed");
        ApiError::internal(e.to_string())
    }
}

impl From<AuthCallError> for ApiError {
    fn from(e: AuthCallError) -> Self {
        match e {
            AuthCallError::Plugin(e) => e.into(),
            AuthCallError::Scheme(e) => match e {
                SchemeError::InvalidInput(m) => ApiError::bad_request(m),
                SchemeError::Unauthorized(m) => ApiError::new(StatusCode::UNAUTHORIZED, m),
                SchemeError::Forbidden(m) => ApiError::forbidden_with(m),
                SchemeError::NotFound(m) => ApiError::not_found(m),
                SchemeError::Conflict(m) => ApiError::conflict(m),
                SchemeError::Unsupported => {
                    ApiError::bad_request("Authentication scheme does not allow this operation.")
                }
                SchemeError::Internal(m) => ApiError::internal(m),
            },
        }
    }
}

impl ApiError {
    pub fn forbidden_with(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }
}
