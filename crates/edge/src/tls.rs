//! The HTTPS/TLS listener: reads the ClientHello, refuses a name this PoP may not serve with
//! an `unrecognized_name` alert before any handshake work, passes TLS endpoints' bytes
//! through untouched, and terminates everything else with a certificate from Meridian's CA.

use std::net::SocketAddr;
use std::sync::Arc;

use meridian_core::Hostname;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::ca::Authority;
use crate::hello::{Hello, Prefixed, UNRECOGNIZED_NAME_ALERT, read_client_hello};
use crate::registry::{EndpointKey, EndpointKind};
use crate::{Admission, HANDSHAKE_TIMEOUT, Pop};

/// Issues (and caches) a certificate for whatever name the visitor asked for; the listener
/// has already checked that the name is one this PoP serves.
#[derive(Debug)]
pub(crate) struct CaResolver(pub(crate) Arc<Authority>);

impl ResolvesServerCert for CaResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?;
        match self.0.for_host(name) {
            Ok(key) => Some(key),
            Err(error) => {
                tracing::warn!(%error, name, "could not issue a certificate");
                None
            }
        }
    }
}

/// Always the same certificate: the agent listener's.
#[derive(Debug)]
pub(crate) struct FixedCert(pub(crate) Arc<CertifiedKey>);

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Serves one connection accepted on the HTTPS port.
pub(crate) async fn handle(pop: Arc<Pop>, mut tcp: TcpStream, visitor: SocketAddr) {
    let local = tcp.local_addr().unwrap_or(visitor);
    let read = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_client_hello(&mut tcp)).await;
    let Ok(Ok((prefix, hello))) = read else {
        return;
    };
    let sni = match hello {
        Hello::Tls(Some(sni)) => sni,
        // Without a name there is nothing to route by.
        Hello::Tls(None) | Hello::NotTls => return refuse(tcp).await,
    };
    let Ok(host) = Hostname::parse(&sni) else {
        return refuse(tcp).await;
    };
    if let Admission::Misdirected { .. } = pop.admit(&host) {
        tracing::debug!(%host, "refused TLS: domain not pinned to this PoP");
        return refuse(tcp).await;
    }
    let io = Prefixed::new(prefix, tcp);
    let tunnel = pop
        .platform
        .registry
        .route(&EndpointKey::Host(host.to_string()));
    if let Some(tunnel) = tunnel.filter(|t| t.kind == EndpointKind::Tls && !t.terminate_tls) {
        return crate::pipe(&tunnel, io, visitor, local).await;
    }
    let acceptor = TlsAcceptor::from(pop.https_tls.clone());
    let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await else {
        return;
    };
    match pop
        .platform
        .registry
        .route(&EndpointKey::Host(host.to_string()))
    {
        Some(tunnel) if tunnel.kind == EndpointKind::Tls => {
            crate::pipe(&tunnel, tls, visitor, local).await
        }
        _ => {
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let visitor = crate::http::Visitor {
                addr: visitor,
                local,
                sni: Some(host.to_string()),
            };
            if h2 {
                crate::http::serve_h2(pop, tls, visitor).await
            } else {
                crate::h1::serve(pop, tls, visitor).await
            }
        }
    }
}

async fn refuse(mut tcp: TcpStream) {
    let _ = tcp.write_all(&UNRECOGNIZED_NAME_ALERT).await;
    let _ = tcp.shutdown().await;
}
