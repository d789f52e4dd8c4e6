//! What every request passes through before a handler runs: the `ngrok-version` check,
//! API-key authentication ([`guard`]), and JSON bodies that are bounded, typed and refused
//! with a proper error body when they are wrong ([`JsonBody`]).

use axum::body::{Body, to_bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::ApiState;
use crate::error::ApiError;

/// Largest request body accepted. The largest legitimate body (4 KiB of metadata, 4 KiB of
/// description, a few dozen targets) is well under this.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The authenticated account, put into request extensions by [`guard`].
#[derive(Debug, Clone)]
pub struct Caller {
    /// The account's id.
    pub account: String,
}

/// Checks the API version and the bearer key, then runs the handler with a [`Caller`].
pub async fn guard(State(state): State<ApiState>, mut request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let response = match authenticate(&state, request.headers()).await {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(error) => error.into_response(),
    };
    tracing::debug!(
        target: "meridian::access",
        %method, %path, status = response.status().as_u16(), elapsed = ?started.elapsed(),
        "api request"
    );
    response
}

async fn authenticate(state: &ApiState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    match headers
        .get("ngrok-version")
        .map(|v| v.to_str().unwrap_or("?"))
    {
        Some("2") => {}
        None => {
            return Err(ApiError::bad_request(
                "ERR_NGROK_218",
                "Your request has not specified an API version. Set the 'Ngrok-Version' \
                 header. Supported versions: 2.",
            ));
        }
        Some(other) => {
            return Err(ApiError::bad_request(
                "ERR_NGROK_217",
                format!(
                    "Your request specified an unsupported API version '{other}'. Supported versions: 2."
                ),
            ));
        }
    }
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized(
            "ERR_NGROK_200",
            "Your request is missing an Authorization header.",
        ));
    };
    let Some(key) = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim())
    else {
        return Err(unauthorized(
            "ERR_NGROK_201",
            "The Authorization header could not be parsed; use 'Bearer <api key>'.",
        ));
    };
    match state.store.account_for_api_key(key).await? {
        Some(account) => Ok(Caller { account }),
        // The key is not echoed: it may be a real secret sent to the wrong place.
        None => Err(unauthorized(
            "ERR_NGROK_203",
            "The API key you specified is not valid.",
        )),
    }
}

fn unauthorized(code: &'static str, msg: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, msg)
}

/// A JSON request body of type `T`. An empty body reads as `{}`; a non-empty one must be
/// declared `application/json`, be at most [`MAX_BODY_BYTES`] and parse as `T`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request<Body>, _: &S) -> Result<Self, ApiError> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"));
        let has_content_type = request.headers().contains_key(header::CONTENT_TYPE);
        let bytes = to_bytes(request.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("The request body is larger than {MAX_BODY_BYTES} bytes."),
                )
            })?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else if is_json {
            &bytes
        } else {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_content_type",
                if has_content_type {
                    "The request body must have Content-Type 'application/json'."
                } else {
                    "The request has a body but no Content-Type; send 'application/json'."
                },
            ));
        };
        serde_json::from_slice(bytes).map(JsonBody).map_err(|e| {
            ApiError::bad_request(
                "invalid_body",
                format!("The request body is not valid: {e}."),
            )
        })
    }
}
