//! API errors and their one wire shape, `{error_code, status_code, msg, details}`, which the
//! official clients require (`details` must be an object). Every failure a handler can meet is
//! turned into an [`ApiError`] here; nothing else writes error bodies.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use meridian_core::HostnameError;
use meridian_store::StoreError;
use serde_json::{Map, Value, json};

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    msg: String,
    details: Map<String, Value>,
}

impl ApiError {
    /// An error with empty details.
    pub fn new(status: StatusCode, code: &'static str, msg: impl Into<String>) -> Self {
        Self {
            status,
            code,
            msg: msg.into(),
            details: Map::new(),
        }
    }

    /// Adds one `details` entry.
    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// 400 with the given code.
    pub fn bad_request(code: &'static str, msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, msg)
    }

    /// 404 for a missing object; another account's object gets exactly this too.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "Resource not found")
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `error_code`.
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error_code": self.code,
            "status_code": self.status.as_u16(),
            "msg": self.msg,
            "details": self.details,
        });
        (self.status, crate::json_response(&body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => Self::not_found(),
            StoreError::DomainTaken {
                by_same_account: true,
            } => Self::bad_request(
                "ERR_NGROK_413",
                "This domain is already reserved for your account.",
            ),
            StoreError::DomainTaken {
                by_same_account: false,
            } => Self::bad_request(
                "ERR_NGROK_414",
                "This domain is already reserved by another account.",
            ),
            StoreError::AddrsExhausted(region) => Self::new(
                StatusCode::CONFLICT,
                "addresses_exhausted",
                format!("Every TCP address of region '{region}' is reserved."),
            ),
            other => {
                tracing::error!(error = %other, "store failure");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "The server failed to handle the request; nothing was changed.",
                )
            }
        }
    }
}

impl From<HostnameError> for ApiError {
    /// ngrok's codes where it has one for the same mistake.
    fn from(error: HostnameError) -> Self {
        let code = match error {
            HostnameError::BadCharacter { .. } => "ERR_NGROK_406",
            HostnameError::Underscore(_) => "ERR_NGROK_438",
            _ => "ERR_NGROK_1906",
        };
        Self::bad_request(code, format!("Invalid domain name: {error}."))
    }
}
