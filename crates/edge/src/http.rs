//! Visitor HTTP, over plain TCP or terminated TLS: what every request goes through whichever
//! way it is carried ([`admit_request`]: the host, the SNI match, the domain's pinning, 421
//! here and never a hand-off to another PoP, then the tunnel), and HTTP/2 visitors, served
//! with hyper and sent to the agent as HTTP/1.1 over proxy streams. HTTP/1.x visitors take
//! the relay in `h1.rs` instead.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HOST, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use meridian_core::Hostname;
use meridian_tunnel::proto::{ProxyHeader, TYPE_PROXY};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::Instrument;

use crate::pages::{self, Page};
use crate::registry::{EndpointKey, EndpointKind, Tunnel};
use crate::{Admission, Pop};

/// Largest request head (request line and headers) a visitor may send.
pub(crate) const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Either a response streamed from the agent or one the edge made itself.
pub(crate) type Body = Either<Incoming, Full<Bytes>>;

/// Who is on the other end of a visitor connection.
#[derive(Debug, Clone)]
pub(crate) struct Visitor {
    pub(crate) addr: SocketAddr,
    pub(crate) local: SocketAddr,
    /// Set when the connection is HTTPS: the Host of every request must equal it.
    pub(crate) sni: Option<String>,
}

impl Visitor {
    pub(crate) fn scheme(&self) -> &'static str {
        if self.sni.is_some() { "https" } else { "http" }
    }
}

/// The checks every visitor request passes before anything reaches an agent. `host` is the
/// request's host as sent (Host header or authority), `None` when it had none. `prefer` is
/// the tunnel the connection already uses: it keeps serving the connection while it is
/// still bound to the host, so a pooled endpoint balances connections, not requests.
pub(crate) fn admit_request(
    pop: &Pop,
    visitor: &Visitor,
    host: Option<&str>,
    prefer: Option<&Arc<Tunnel>>,
) -> Result<(Hostname, Arc<Tunnel>), Page> {
    let Some(raw) = host else {
        return Err(Page::new(
            StatusCode::BAD_REQUEST,
            "ERR_NGROK_3004",
            "The request has no Host.",
        ));
    };
    let Some(host) = canonical_host(raw) else {
        return Err(Page::new(
            StatusCode::BAD_REQUEST,
            "ERR_NGROK_3004",
            format!("'{raw}' is not a valid host."),
        ));
    };
    if let Some(sni) = &visitor.sni
        && *sni != host
    {
        return Err(Page::new(
            StatusCode::MISDIRECTED_REQUEST,
            "ERR_NGROK_3003",
            format!("The request is for '{host}' but the TLS connection was opened for '{sni}'."),
        ));
    }
    let Ok(hostname) = Hostname::parse(&host) else {
        return Err(Page::new(
            StatusCode::BAD_REQUEST,
            "ERR_NGROK_3004",
            format!("'{host}' is not a valid host name."),
        ));
    };
    if let Admission::Misdirected { allowed } = pop.admit(&hostname) {
        return Err(pages::misdirected(pop.site.code, &hostname, &allowed));
    }
    let key = EndpointKey::Host(host);
    let registry = &pop.platform.registry;
    let tunnel = match prefer {
        Some(current) if current.key == key => registry.route_preferring(&key, current),
        _ => registry.route(&key),
    };
    match tunnel {
        Some(t) if t.kind == EndpointKind::Http => Ok((hostname, t)),
        _ => Err(pages::offline(&hostname)),
    }
}

/// A Host header or authority without its port and trailing dot, lower-cased.
fn canonical_host(raw: &str) -> Option<String> {
    let authority = raw.parse::<hyper::http::uri::Authority>().ok()?;
    Some(authority.host().trim_end_matches('.').to_ascii_lowercase())
}

/// Serves HTTP/2 on one visitor connection until it closes; each request goes to the agent
/// as HTTP/1.1 over the connection's proxy stream.
pub(crate) async fn serve_h2<IO>(pop: Arc<Pop>, io: IO, visitor: Visitor)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = Arc::new(H2Conn {
        visitor,
        upstream: Mutex::new(None),
    });
    let service = hyper::service::service_fn(move |req| {
        let (pop, conn) = (pop.clone(), conn.clone());
        async move { Ok::<_, Infallible>(handle(&pop, &conn, req).await) }
    });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder.max_header_list_size(MAX_HEADER_BYTES as u32);
    if let Err(error) = builder.serve_connection(TokioIo::new(io), service).await {
        tracing::debug!(%error, "visitor connection ended with an error");
    }
}

/// Per HTTP/2 visitor connection.
struct H2Conn {
    visitor: Visitor,
    upstream: Mutex<Option<(Arc<Tunnel>, SendRequest<Incoming>)>>,
}

fn request_host<B>(req: &Request<B>) -> Option<String> {
    match req.uri().authority() {
        Some(authority) => Some(authority.as_str().to_owned()),
        None => Some(req.headers().get(HOST)?.to_str().ok()?.to_owned()),
    }
}

async fn handle(pop: &Pop, conn: &H2Conn, mut req: Request<Incoming>) -> Response<Body> {
    let host = request_host(&req);
    let current = conn
        .upstream
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map(|(t, _)| t.clone());
    let (hostname, tunnel) =
        match admit_request(pop, &conn.visitor, host.as_deref(), current.as_ref()) {
            Ok(admitted) => admitted,
            Err(page) => return page.into_response(),
        };
    add_forwarded(&mut req, &conn.visitor, hostname.as_str());
    // The agent speaks HTTP/1.1 to its upstream whatever the visitor spoke.
    *req.version_mut() = Version::HTTP_11;
    if let Some(pq) = req.uri().path_and_query().cloned() {
        *req.uri_mut() = Uri::from(pq);
    }
    if !req.headers().contains_key(HOST)
        && let Ok(v) = HeaderValue::from_str(hostname.as_str())
    {
        req.headers_mut().insert(HOST, v);
    }

    let mut sender = match upstream(conn, &tunnel).await {
        Ok(s) => s,
        Err(page) => return page.into_response(),
    };
    match sender.send_request(req).await {
        Ok(resp) => {
            let mut slot = conn.upstream.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some((tunnel, sender));
            }
            resp.map(Either::Left)
        }
        Err(error) => {
            tracing::debug!(%error, "agent stream failed");
            pages::agent_failed().into_response()
        }
    }
}

fn add_forwarded(req: &mut Request<Incoming>, visitor: &Visitor, host: &str) {
    let headers = req.headers_mut();
    let ip = visitor.addr.ip().to_string();
    let chain = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {ip}"),
        None => ip,
    };
    for (name, value) in [
        ("x-forwarded-for", chain.as_str()),
        ("x-forwarded-proto", visitor.scheme()),
        ("x-forwarded-host", host),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    }
}

/// The connection's stream to `tunnel`, reused while it is open, else a new one.
async fn upstream(conn: &H2Conn, tunnel: &Arc<Tunnel>) -> Result<SendRequest<Incoming>, Page> {
    let cached = conn
        .upstream
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Some((current, mut sender)) = cached
        && Arc::ptr_eq(&current, tunnel)
        && sender.ready().await.is_ok()
    {
        return Ok(sender);
    }
    let stream = open_proxy_stream(tunnel, conn.visitor.addr, conn.visitor.local)
        .map_err(|e| pages::unreachable(&e))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| pages::unreachable(&e))?;
    tokio::spawn(
        async move {
            if let Err(error) = connection.await {
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
