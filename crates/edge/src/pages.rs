//! The pages the edge answers with itself: refusals and offline endpoints. Each names what
//! happened in words and carries an `ERR_NGROK_` code, in the body and in the
//! `ngrok-error-code` header. A [`Page`] renders either as a hyper response (HTTP/2) or as
//! the bytes of an HTTP/1.1 response that closes the connection (the HTTP/1 relay).

use std::fmt::Write as _;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use meridian_core::{Hostname, PopCode};

use crate::http::Body;

/// A plain-text error page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Page {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl Page {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn body(&self) -> String {
        format!("{}\n\n{}\n", self.message, self.code)
    }

    pub(crate) fn into_response(self) -> Response<Body> {
        let mut resp = Response::new(Either::Right(Full::new(Bytes::from(self.body()))));
        *resp.status_mut() = self.status;
        resp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp.headers_mut()
            .insert("ngrok-error-code", HeaderValue::from_static(self.code));
        resp
    }

    /// The page as a complete HTTP/1.1 response with `connection: close`: the relay sends
    /// it in place of the agent's answer and then closes the visitor connection.
    pub(crate) fn to_http1(&self) -> Vec<u8> {
        let body = self.body();
        let mut out = String::with_capacity(body.len() + 160);
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\n\
             ngrok-error-code: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or(""),
            self.code,
            body.len(),
        );
        out.into_bytes()
    }
}

/// 421: the domain is pinned elsewhere. Names this PoP, the domain and where it is served.
pub(crate) fn misdirected(pop: PopCode, host: &Hostname, allowed: &[PopCode]) -> Page {
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
    Page::new(StatusCode::MISDIRECTED_REQUEST, "ERR_NGROK_3210", message)
}

/// 404: nothing is bound to the host right now.
pub(crate) fn offline(host: &Hostname) -> Page {
    Page::new(
        StatusCode::NOT_FOUND,
        "ERR_NGROK_3200",
        format!("The endpoint {host} is offline: no agent is serving it right now."),
    )
}

/// 502: no stream to the agent could be opened (its session is closing).
pub(crate) fn unreachable(error: &dyn std::fmt::Display) -> Page {
    Page::new(
        StatusCode::BAD_GATEWAY,
        "ERR_NGROK_3200",
        format!("The agent for this endpoint is unreachable: {error}."),
    )
}

/// 502: the agent's side failed before it answered.
pub(crate) fn agent_failed() -> Page {
    Page::new(
        StatusCode::BAD_GATEWAY,
        "ERR_NGROK_8012",
        "The agent could not reach its upstream.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http1_rendering_is_a_whole_response_that_closes() {
        let page = Page::new(StatusCode::NOT_FOUND, "ERR_NGROK_3200", "gone");
        let bytes = page.to_http1();
        let text = std::str::from_utf8(&bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert_eq!(body, "gone\n\nERR_NGROK_3200\n");
        assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(head.contains("connection: close"));
        assert!(head.contains("ngrok-error-code: ERR_NGROK_3200"));
    }
}
