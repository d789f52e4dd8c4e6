//! The pages the edge answers with itself: refusals and offline endpoints. Each names what
//! happened in words and carries an `ERR_NGROK_` code, in the body and in the
//! `ngrok-error-code` header.

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use meridian_core::{Hostname, PopCode};

use crate::http::Body;

/// A plain-text error page.
pub(crate) fn error(status: StatusCode, code: &'static str, message: &str) -> Response<Body> {
    let body = format!("{message}\n\n{code}\n");
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut()
        .insert("ngrok-error-code", HeaderValue::from_static(code));
    resp
}

/// 421: the domain is pinned elsewhere. Names this PoP, the domain and where it is served.
pub(crate) fn misdirected(pop: PopCode, host: &Hostname, allowed: &[PopCode]) -> Response<Body> {
    let allowed: Vec<&str> = allowed.iter().map(|p| p.as_str()).collect();
    let location = pop.location();
    let message = format!(
        "This point of presence ({pop}, {}) does not serve {host}: the domain is pinned to {}. \
         Resolve the name through DNS to reach a point of presence that serves it.",
        location.city,
        if allowed.is_empty() {
            "its dedicated IPs".to_owned()
        } else {
            allowed.join(", ")
        },
    );
    error(StatusCode::MISDIRECTED_REQUEST, "ERR_NGROK_3210", &message)
}

/// 404: nothing is bound to the host right now.
pub(crate) fn offline(host: &Hostname) -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        "ERR_NGROK_3200",
        &format!("The endpoint {host} is offline: no agent is serving it right now."),
    )
}
