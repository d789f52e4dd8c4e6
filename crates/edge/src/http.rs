//! Visitor HTTP, over plain TCP or terminated TLS: each request is checked against the
//! domain's pinning (421 here, never a hand-off to another PoP), routed by host to a tunnel,
//! given `X-Forwarded-*` headers and sent to the agent as HTTP/1.1 over a proxy stream. A
//! visitor connection keeps using the same stream while it can, so the agent keeps one
//! upstream connection per visitor connection, as a plain reverse proxy would.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HOST, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use meridian_core::Hostname;
use meridian_tunnel::proto::{ProxyHeader, TYPE_PROXY};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::Instrument;

use crate::pages;
use crate::registry::{EndpointKey, EndpointKind, Tunnel};
use crate::{Admission, Pop};

/// Largest request head (request line and headers) a visitor may send.
pub(crate) const MAX_HEADER_BYTES: usize = 64 * 1024;
/// How long a visitor may take to send a request head, including between keep-alive requests.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Either a response streamed from the agent or one the edge made itself.
pub(crate) type Body = Either<Incoming, Full<Bytes>>;

/// Per visitor connection.
struct Visitor {
    addr: SocketAddr,
    local: SocketAddr,
    /// Set when the connection is HTTPS: the Host of every request must equal it.
    sni: Option<String>,
    upstream: Mutex<Option<(String, SendRequest<Incoming>)>>,
}

/// Serves HTTP on one visitor connection until it closes.
pub(crate) async fn serve<IO>(
    pop: Arc<Pop>,
    io: IO,
    addr: SocketAddr,
    local: SocketAddr,
    sni: Option<String>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let visitor = Arc::new(Visitor {
        addr,
        local,
        sni,
        upstream: Mutex::new(None),
    });
    let service = hyper::service::service_fn(move |req| {
        let (pop, visitor) = (pop.clone(), visitor.clone());
        async move { Ok::<_, Infallible>(handle(&pop, &visitor, req).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    if let Err(error) = builder.serve_connection(TokioIo::new(io), service).await {
        tracing::debug!(%error, "visitor connection ended with an error");
    }
}

/// The host a request is for: the authority (HTTP/2, absolute-form) or the Host header,
/// without a port, lower-cased.
fn request_host<B>(req: &Request<B>) -> Option<String> {
    let raw = match req.uri().authority() {
        Some(authority) => authority.host().to_owned(),
        None => {
            let host = req.headers().get(HOST)?.to_str().ok()?;
            host.parse::<hyper::http::uri::Authority>()
                .ok()?
                .host()
                .to_owned()
        }
    };
    Some(raw.trim_end_matches('.').to_ascii_lowercase())
}

async fn handle(pop: &Pop, visitor: &Visitor, mut req: Request<Incoming>) -> Response<Body> {
    let Some(host) = request_host(&req) else {
        return pages::error(
            StatusCode::BAD_REQUEST,
            "ERR_NGROK_3004",
            "The request has no Host.",
        );
    };
    if let Some(sni) = &visitor.sni
        && *sni != host
    {
        return pages::error(
            StatusCode::MISDIRECTED_REQUEST,
            "ERR_NGROK_3003",
            &format!("The request is for '{host}' but the TLS connection was opened for '{sni}'."),
        );
    }
    let Ok(hostname) = Hostname::parse(&host) else {
        return pages::error(
            StatusCode::BAD_REQUEST,
            "ERR_NGROK_3004",
            &format!("'{host}' is not a valid host name."),
        );
    };
    if let Admission::Misdirected { allowed } = pop.admit(&hostname) {
        return pages::misdirected(pop.site.code, &hostname, &allowed);
    }
    let tunnel = match pop
        .platform
        .registry
        .route(&EndpointKey::Host(hostname.to_string()))
    {
        Some(t) if t.kind == EndpointKind::Http => t,
        _ => return pages::offline(&hostname),
    };

    let scheme = if visitor.sni.is_some() {
        "https"
    } else {
        "http"
    };
    add_forwarded(&mut req, visitor, scheme, &host);
    // The agent speaks HTTP/1.1 to its upstream whatever the visitor spoke.
    *req.version_mut() = Version::HTTP_11;
    if let Some(pq) = req.uri().path_and_query().cloned() {
        *req.uri_mut() = Uri::from(pq);
    }
    if !req.headers().contains_key(HOST)
        && let Ok(v) = HeaderValue::from_str(&host)
    {
        req.headers_mut().insert(HOST, v);
    }

    let mut sender = match upstream(visitor, &tunnel).await {
        Ok(s) => s,
        Err(why) => return pages::error(StatusCode::BAD_GATEWAY, "ERR_NGROK_3200", &why),
    };
    match sender.send_request(req).await {
        Ok(resp) => {
            let mut slot = visitor.upstream.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some((tunnel.id.clone(), sender));
            }
            resp.map(Either::Left)
        }
        Err(error) => {
            tracing::debug!(%error, "agent stream failed");
            pages::error(
                StatusCode::BAD_GATEWAY,
                "ERR_NGROK_8012",
                "The agent could not reach its upstream.",
            )
        }
    }
}

fn add_forwarded(req: &mut Request<Incoming>, visitor: &Visitor, scheme: &str, host: &str) {
    let headers = req.headers_mut();
    let ip = visitor.addr.ip().to_string();
    let chain = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {ip}"),
        None => ip,
    };
    for (name, value) in [
        ("x-forwarded-for", chain.as_str()),
        ("x-forwarded-proto", scheme),
        ("x-forwarded-host", host),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    }
}

/// The visitor connection's stream to `tunnel`, reused while it is open, else a new one.
async fn upstream(visitor: &Visitor, tunnel: &Tunnel) -> Result<SendRequest<Incoming>, String> {
    let cached = visitor
        .upstream
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Some((id, mut sender)) = cached
        && id == tunnel.id
        && sender.ready().await.is_ok()
    {
        return Ok(sender);
    }
    let stream = open_proxy_stream(tunnel, visitor.addr, visitor.local)
        .map_err(|e| format!("The agent for this endpoint is unreachable: {e}."))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("The agent did not accept the request: {e}."))?;
    tokio::spawn(
        async move {
            if let Err(error) = conn.await {
                tracing::debug!(%error, "agent HTTP connection ended");
            }
        }
        .in_current_span(),
    );
    Ok(sender)
}

/// Opens a proxy stream to the agent: type, header and (when asked for) the PROXY protocol
/// header, in the stream's first frame.
pub(crate) fn open_proxy_stream(
    tunnel: &Tunnel,
    visitor: SocketAddr,
    local: SocketAddr,
) -> Result<meridian_tunnel::MuxStream, meridian_tunnel::OpenError> {
    let passthrough = tunnel.kind == EndpointKind::Tls && !tunnel.terminate_tls;
    let header = ProxyHeader {
        id: tunnel.id.clone(),
        client_addr: visitor.to_string(),
        proto: tunnel.proto.clone(),
        edge_type: String::new(),
        passthrough_tls: passthrough,
    };
    let mut first = header.encode();
    first.extend(crate::proxy_proto::header(
        tunnel.proxy_proto,
        visitor,
        local,
    ));
    tunnel.session.open(TYPE_PROXY, &first)
}
