//! One Meridian PoP: the agent listener and the public HTTP, HTTPS/TLS and TCP listeners.
//!
//! Every visitor connection is checked against what its domain resolves to (through
//! `meridian_core::resolve`, computed into the routing snapshot): a PoP outside the set
//! refuses it before any byte reaches an agent, at the TLS handshake when SNI tells and with
//! `421 Misdirected Request` otherwise. The snapshot is read per connection and per request,
//! so a change made through the API applies to the very next one.
//!
//! # Layout
//! - `lib.rs`: [`Platform`] (what all PoPs share), [`run_pop`], the admission check.
//! - [`ca`]: Meridian's certificate authority.
//! - [`registry`]: which agent session serves which endpoint.
//! - `agent.rs`: the agent listener and its RPCs.
//! - `http.rs`: the checks every visitor request passes, and HTTP/2 visitors (hyper).
//! - `h1.rs`: the HTTP/1.x relay, which carries most visitor traffic.
//! - `tls.rs`: the HTTPS/TLS listener: SNI, refusal, passthrough, termination.
//! - `tcp.rs`: TCP endpoint listeners.
//! - [`hello`]: ClientHello parsing; `proxy_proto.rs`: PROXY headers; `pages.rs`: error pages;
//!   `quickack.rs`: immediate ACKs toward agents.
#![warn(missing_docs)]

mod agent;
pub mod ca;
mod h1;
pub mod hello;
mod http;
mod pages;
mod proxy_proto;
mod quickack;
pub mod registry;
mod tcp;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meridian_core::{Hostname, PopCode, PopSite, RoutingSnapshot};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;

use crate::ca::Authority;
use crate::registry::{Registry, Tunnel};

/// How long a TLS handshake (agent or visitor) may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every PoP of a process shares.
#[derive(Debug)]
pub struct Platform {
    /// Which agent serves which endpoint.
    pub registry: Arc<dyn Registry>,
    /// The certificate authority.
    pub ca: Arc<Authority>,
    /// The newest routing snapshot.
    pub snapshot: watch::Receiver<Arc<RoutingSnapshot>>,
    /// The platform's zone, for generated endpoint names.
    pub base_domain: Hostname,
}

/// The listeners of one PoP, bound by the caller (so they may use port 0).
#[derive(Debug)]
pub struct PopListeners {
    /// Agents connect here (TLS).
    pub agent: TcpListener,
    /// Visitor HTTP.
    pub http: TcpListener,
    /// Visitor HTTPS and TLS endpoints.
    pub https: TcpListener,
}

/// One PoP as its handlers see it.
#[derive(Debug)]
pub(crate) struct Pop {
    pub(crate) site: PopSite,
    pub(crate) platform: Arc<Platform>,
    pub(crate) agent_tls: Arc<rustls::ServerConfig>,
    pub(crate) https_tls: Arc<rustls::ServerConfig>,
}

/// Whether a PoP may handle a host's traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Admission {
    /// The domain resolves to this PoP, or it is a name only the registry knows (a generated
    /// endpoint name, global by nature).
    Allowed,
    /// The domain is pinned elsewhere; these PoPs serve it.
    Misdirected {
        /// The PoPs that do.
        allowed: Vec<PopCode>,
    },
}

impl Pop {
    pub(crate) fn snapshot(&self) -> Arc<RoutingSnapshot> {
        self.platform.snapshot.borrow().clone()
    }

    /// The pinning check, from the snapshot's resolution of the domain.
    pub(crate) fn admit(&self, host: &Hostname) -> Admission {
        match self.snapshot().domain(host) {
            Some(route) if !route.resolution.allows(self.site.code) => Admission::Misdirected {
                allowed: route.resolution.pops().iter().collect(),
            },
            _ => Admission::Allowed,
        }
    }
}

/// Walks `data` with the HTTP/1 relay's parsers, as requests and as responses; they must not
/// panic. For the fuzz target.
#[doc(hidden)]
pub fn fuzz_http1(data: &[u8]) {
    h1::walk_messages(data);
}

/// Random lower-case hex, for generated ids and names.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the operating system's random source failed");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Copies bytes both ways between a visitor connection and a new proxy stream to `tunnel`.
pub(crate) async fn pipe<IO>(
    tunnel: &Tunnel,
    mut visitor_io: IO,
    visitor: SocketAddr,
    local: SocketAddr,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut stream = match http::open_proxy_stream(tunnel, visitor, local) {
        Ok(s) => s,
        Err(error) => return tracing::debug!(%error, "agent unreachable"),
    };
    if let Err(error) = tokio::io::copy_bidirectional(&mut visitor_io, &mut stream).await {
        tracing::debug!(%error, "proxied connection ended with an error");
    }
}

/// The names and addresses an agent listener's certificate covers: the PoP's addresses,
/// `localhost`, and `connect.<base>` and `<code>.connect.<base>`.
fn agent_names(site: &PopSite, base: &Hostname) -> Vec<String> {
    let mut names: Vec<String> = site.addresses.iter().map(ToString::to_string).collect();
    names.push("localhost".into());
    names.push(format!("connect.{base}"));
    names.push(format!("{}.connect.{base}", site.code));
    names
}

impl PopListeners {
    /// Logs each listener's address in the stable form `pop <code> <kind> listening on <url>`
    /// (kinds `agent`, `http`, `https`), which operators and test harnesses read.
    pub fn log(&self, code: PopCode) {
        for (kind, scheme, listener) in [
            ("agent", "tls", &self.agent),
            ("http", "http", &self.http),
            ("https", "https", &self.https),
        ] {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!("pop {code} {kind} listening on {scheme}://{addr}");
            }
        }
    }
}

/// Runs one PoP on `listeners` until `shutdown` completes.
pub async fn run_pop(
    platform: Arc<Platform>,
    site: PopSite,
    listeners: PopListeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ca::CaError> {
    let provider = platform.ca.provider();
    let agent_key = platform
        .ca
        .issue(&agent_names(&site, &platform.base_domain))?;
    let mut agent_config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(tls::FixedCert(agent_key)));
    // The provider's order (AES-128-GCM first) over the client's; see `ca::provider`.
    agent_config.ignore_client_order = true;
    let mut https_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(tls::CaResolver(platform.ca.clone())));
    https_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    https_config.ignore_client_order = true;
    let pop = Arc::new(Pop {
        site,
        platform,
        agent_tls: Arc::new(agent_config),
        https_tls: Arc::new(https_config),
    });
    let PopListeners { agent, http, https } = listeners;
    let agents = accept_loop(agent, pop.clone(), "agent", |pop, tcp, _| {
        agent::handle(pop, tcp)
    });
    let plain = accept_loop(http, pop.clone(), "http", |pop, tcp, visitor| async move {
        let local = tcp.local_addr().unwrap_or(visitor);
        let visitor = http::Visitor {
            addr: visitor,
            local,
            sni: None,
        };
        h1::serve(pop, tcp, visitor).await;
    });
    let secure = accept_loop(https, pop.clone(), "https", tls::handle);
    let tcp_endpoints = tcp::follow(pop.clone());
    tokio::select! {
        () = shutdown => {}
        () = agents => {}
        () = plain => {}
        () = secure => {}
        () = tcp_endpoints => {}
    }
    Ok(())
}

async fn accept_loop<F, Fut>(listener: TcpListener, pop: Arc<Pop>, kind: &'static str, handler: F)
where
    F: Fn(Arc<Pop>, tokio::net::TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let code = pop.site.code;
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                let span = tracing::debug_span!("conn", pop = %code, kind, %peer);
                tokio::spawn(handler(pop.clone(), tcp, peer).instrument(span));
            }
            Err(error) => {
                // Running out of file descriptors is the usual cause; back off briefly
                // instead of spinning.
                tracing::warn!(%error, kind, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
