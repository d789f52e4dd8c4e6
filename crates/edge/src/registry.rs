//! The tunnel registry: which agent session serves which endpoint. Every PoP of a process
//! shares one, so an agent connected to any PoP serves visitors entering any PoP that the
//! endpoint's domain allows. A multi-host deployment implements [`Registry`] over a shared
//! service; nothing else in the edge depends on the registry being local.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use meridian_core::PopCode;
use meridian_tunnel::Session;
use tokio::sync::watch;

/// What an endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointKind {
    /// HTTP or HTTPS: the edge parses requests.
    Http,
    /// TLS: routed by SNI, passed through or terminated.
    Tls,
    /// Raw TCP on a reserved address.
    Tcp,
}

/// What visitors reach an endpoint by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndpointKey {
    /// A hostname, for HTTP and TLS endpoints.
    Host(String),
    /// A reserved TCP address `host:port`.
    Addr(String),
}

/// One agent's binding of an endpoint.
#[derive(Debug)]
pub struct Tunnel {
    /// The endpoint id the agent routes by.
    pub id: String,
    /// The account the agent acts for.
    pub account_id: String,
    /// What visitors reach it by.
    pub key: EndpointKey,
    /// The public URL.
    pub url: String,
    /// The bind protocol (`http`, `https`, `tcp`, `tls`), sent back in proxy headers.
    pub proto: String,
    /// What it speaks.
    pub kind: EndpointKind,
    /// Whether the agent shares the endpoint with others.
    pub pooling: bool,
    /// PROXY protocol version the agent asked for: 0 none, 1 or 2.
    pub proxy_proto: u8,
    /// For TLS endpoints: whether the edge terminates TLS (the agent sent a certificate).
    pub terminate_tls: bool,
    /// For TCP endpoints: the PoP that listens.
    pub region: Option<PopCode>,
    /// The agent's session.
    pub session: Session,
}

/// Why a bind was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindConflict {
    /// Another agent holds the endpoint and pooling was not asked for by both.
    #[error("the endpoint {0} is already online; start both agents with pooling to share it")]
    InUse(String),
    /// The same name is bound as another kind of endpoint.
    #[error("{0} is already bound as another kind of endpoint")]
    KindMismatch(String),
}

/// Where the edge finds tunnels.
pub trait Registry: Send + Sync + std::fmt::Debug + 'static {
    /// Adds a binding. A binding with the same id and account replaces the old one (an agent
    /// reconnecting before its old session was noticed gone).
    fn bind(&self, tunnel: Arc<Tunnel>) -> Result<(), BindConflict>;
    /// Removes the binding `id` of `key`, if present.
    fn unbind(&self, key: &EndpointKey, id: &str);
    /// A tunnel serving `key`, balancing across a pool.
    fn route(&self, key: &EndpointKey) -> Option<Arc<Tunnel>>;
    /// `current` while it still serves `key` (a connection stays with its pool member),
    /// else what [`Registry::route`] picks.
    fn route_preferring(&self, key: &EndpointKey, current: &Arc<Tunnel>) -> Option<Arc<Tunnel>>;
    /// The reserved TCP addresses with an online endpoint, and the PoP serving each; PoPs
    /// watch this to open and close their TCP listeners.
    fn tcp_endpoints(&self) -> watch::Receiver<Vec<(String, PopCode)>>;
}

/// The registry of one process.
#[derive(Debug)]
pub struct LocalRegistry {
    endpoints: Mutex<HashMap<EndpointKey, Pool>>,
    tcp: watch::Sender<Vec<(String, PopCode)>>,
}

#[derive(Debug, Default)]
struct Pool {
    members: Vec<Arc<Tunnel>>,
    next: AtomicUsize,
}

impl Default for LocalRegistry {
    fn default() -> Self {
        Self {
            endpoints: Mutex::new(HashMap::new()),
            tcp: watch::channel(Vec::new()).0,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl LocalRegistry {
    fn publish_tcp(&self, endpoints: &HashMap<EndpointKey, Pool>) {
        let mut list: Vec<(String, PopCode)> = endpoints
            .iter()
            .filter_map(|(key, pool)| match (key, pool.members.first()?.region) {
                (EndpointKey::Addr(addr), Some(region)) => Some((addr.clone(), region)),
                _ => None,
            })
            .collect();
        list.sort();
        self.tcp.send_if_modified(|current| {
            let changed = *current != list;
            *current = list;
            changed
        });
    }
}

impl Registry for LocalRegistry {
    fn bind(&self, tunnel: Arc<Tunnel>) -> Result<(), BindConflict> {
        let mut endpoints = lock(&self.endpoints);
        let pool = endpoints.entry(tunnel.key.clone()).or_default();
        pool.members.retain(|m| !m.session.is_ended());
        if let Some(first) = pool.members.first()
            && first.kind != tunnel.kind
        {
            return Err(BindConflict::KindMismatch(tunnel.url.clone()));
        }
        let same = |m: &Arc<Tunnel>| m.id == tunnel.id && m.account_id == tunnel.account_id;
        if let Some(slot) = pool.members.iter_mut().find(|m| same(m)) {
            *slot = tunnel;
        } else if pool.members.is_empty()
            || (tunnel.pooling && pool.members.iter().all(|m| m.pooling))
        {
            pool.members.push(tunnel);
        } else {
            return Err(BindConflict::InUse(tunnel.url.clone()));
        }
        self.publish_tcp(&endpoints);
        Ok(())
    }

    fn unbind(&self, key: &EndpointKey, id: &str) {
        let mut endpoints = lock(&self.endpoints);
        if let Some(pool) = endpoints.get_mut(key) {
            pool.members.retain(|m| m.id != id);
            if pool.members.is_empty() {
                endpoints.remove(key);
            }
        }
        self.publish_tcp(&endpoints);
    }

    fn route(&self, key: &EndpointKey) -> Option<Arc<Tunnel>> {
        let endpoints = lock(&self.endpoints);
        let pool = endpoints.get(key)?;
        let live: Vec<&Arc<Tunnel>> = pool
            .members
            .iter()
            .filter(|m| !m.session.is_ended())
            .collect();
        if live.is_empty() {
            return None;
        }
        let i = pool.next.fetch_add(1, Ordering::Relaxed) % live.len();
        Some(live[i].clone())
    }

    fn route_preferring(&self, key: &EndpointKey, current: &Arc<Tunnel>) -> Option<Arc<Tunnel>> {
        let still_bound = !current.session.is_ended()
            && lock(&self.endpoints)
                .get(key)
                .is_some_and(|pool| pool.members.iter().any(|m| Arc::ptr_eq(m, current)));
        if still_bound {
            Some(current.clone())
        } else {
            self.route(key)
        }
    }

    fn tcp_endpoints(&self) -> watch::Receiver<Vec<(String, PopCode)>> {
        self.tcp.subscribe()
    }
}
