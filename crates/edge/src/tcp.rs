//! TCP endpoints: each reserved address listens at its region's PoP only, and only while an
//! agent serves it. The PoP follows the registry's list of online TCP endpoints and opens or
//! closes its listeners to match.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::Pop;
use crate::registry::EndpointKey;

/// Runs until the registry is dropped, keeping this PoP's TCP listeners in step with it.
pub(crate) async fn follow(pop: Arc<Pop>) {
    let mut endpoints = pop.platform.registry.tcp_endpoints();
    let mut listening: HashMap<String, JoinHandle<()>> = HashMap::new();
    loop {
        let wanted: Vec<String> = endpoints
            .borrow_and_update()
            .iter()
            .filter(|(_, region)| *region == pop.site.code)
            .map(|(addr, _)| addr.clone())
            .collect();
        listening.retain(|addr, task| {
            let keep = wanted.contains(addr);
            if !keep {
                task.abort();
                tracing::info!(%addr, "tcp endpoint closed");
            }
            keep
        });
        for addr in wanted {
            if listening.contains_key(&addr) {
                continue;
            }
            match listen(&pop, &addr).await {
                Ok(task) => {
                    listening.insert(addr, task);
                }
                Err(error) => tracing::warn!(%addr, %error, "could not open tcp endpoint"),
            }
        }
        if endpoints.changed().await.is_err() {
            return;
        }
    }
}

async fn listen(pop: &Arc<Pop>, addr: &str) -> std::io::Result<JoinHandle<()>> {
    let port: u16 = addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no port in '{addr}'")))?;
    let ip = pop.site.addresses[0];
    let listener = TcpListener::bind(SocketAddr::new(ip, port)).await?;
    tracing::info!(%addr, bound = %listener.local_addr()?, "tcp endpoint listening");
    let (pop, key) = (pop.clone(), EndpointKey::Addr(addr.to_owned()));
    Ok(tokio::spawn(async move {
        loop {
            let Ok((tcp, visitor)) = listener.accept().await else {
                continue;
            };
            let (pop, key) = (pop.clone(), key.clone());
            let span = tracing::debug_span!("visitor", %visitor, kind = "tcp");
            tokio::spawn(
                async move {
                    let local = tcp.local_addr().unwrap_or(visitor);
                    // Looked up per connection: an agent that left takes the address with it.
                    if let Some(tunnel) = pop.platform.registry.route(&key) {
                        crate::pipe(&tunnel, tcp, visitor, local).await;
                    }
                }
                .instrument(span),
            );
        }
    }))
}
