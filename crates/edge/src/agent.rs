//! The agent listener: TLS with a certificate from Meridian's CA, then one muxado session per
//! agent. It answers Auth against the credentials in the routing snapshot and Bind against
//! the account's reservations, records bound endpoints in the registry, echoes heartbeats,
//! and takes every endpoint of a session offline the moment the session ends.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_core::secret::SecretHash;
use meridian_core::snapshot::CredentialRoute;
use meridian_core::{Hostname, RoutingSnapshot};
use meridian_tunnel::proto::{
    self, Auth, AuthResp, AuthRespExtra, Bind, BindResp, BindRespExtra, ErrorResp, Unbind,
};
use meridian_tunnel::readahead::ReadAhead;
use meridian_tunnel::{MuxStream, Session, rpc};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::Instrument;

use crate::registry::{EndpointKey, EndpointKind, Tunnel};
use crate::{HANDSHAKE_TIMEOUT, Pop, random_hex};

/// How long an agent may take to send a whole RPC request once it opened the stream.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// What an agent session knows about itself.
#[derive(Debug, Default)]
struct AgentState {
    credential: Option<(SecretHash, CredentialRoute)>,
    client_id: String,
    /// Endpoints bound through this session, to take offline when it ends.
    bound: Vec<Bound>,
}

/// One endpoint bound through a session.
#[derive(Debug, Clone)]
struct Bound {
    key: EndpointKey,
    id: String,
    /// Whether it stands on a reservation (a generated name does not); such an endpoint is
    /// stopped when the reservation goes away or changes hands.
    reserved: bool,
}

/// Serves one agent connection until it ends.
pub(crate) async fn handle(pop: Arc<Pop>, tcp: TcpStream) {
    let tls = match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        tokio_rustls::TlsAcceptor::from(pop.agent_tls.clone())
            .accept(ReadAhead::new(crate::quickack::QuickAck(tcp))),
    )
    .await
    {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => return tracing::debug!(%error, "agent TLS handshake failed"),
        Err(_) => return tracing::debug!("agent TLS handshake timed out"),
    };
    let (session, mut incoming) = Session::server(tls);
    let state = Arc::new(Mutex::new(AgentState::default()));
    tracing::debug!("agent connected");
    tokio::spawn(
        enforce_revocations(pop.clone(), session.clone(), state.clone()).in_current_span(),
    );
    while let Some(stream) = incoming.accept().await {
        let (pop, session, state) = (pop.clone(), session.clone(), state.clone());
        tokio::spawn(
            async move { serve_stream(&pop, &session, &state, stream).await }.in_current_span(),
        );
    }
    let end = session.ended().await;
    let bound = std::mem::take(&mut lock(&state).bound);
    for b in &bound {
        pop.platform.registry.unbind(&b.key, &b.id);
    }
    tracing::info!(reason = %end, endpoints = bound.len(), "agent disconnected");
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poison| poison.into_inner())
}

async fn serve_stream(
    pop: &Pop,
    session: &Session,
    state: &Mutex<AgentState>,
    mut stream: MuxStream,
) {
    let Ok(Ok(stream_type)) = tokio::time::timeout(RPC_TIMEOUT, stream.read_type()).await else {
        return;
    };
    let result = match stream_type {
        proto::TYPE_HEARTBEAT => return echo_heartbeats(stream).await,
        proto::TYPE_AUTH => auth(pop, state, &mut stream).await,
        proto::TYPE_BIND => bind(pop, session, state, &mut stream).await,
        proto::TYPE_UNBIND => unbind(pop, state, &mut stream).await,
        proto::TYPE_START_TUNNEL_WITH_LABEL => {
            let error = proto::error_text(
                "labeled tunnels (edges) are not supported by Meridian; bind an endpoint",
                "ERR_NGROK_9009",
            );
            rpc::respond(&mut stream, &ErrorResp { error })
                .await
                .map_err(Into::into)
        }
        other => {
            // Not an RPC we know: refuse the stream, keep the session.
            tracing::debug!(stream_type = other, "unknown stream type");
            stream.reset(meridian_tunnel::frame::ErrorCode::Protocol);
            Ok(())
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, stream_type, "RPC failed");
    }
}

/// Echoes each 4-byte heartbeat back as it arrives.
async fn echo_heartbeats(mut stream: MuxStream) {
    let mut beat = [0u8; 4];
    while stream.read_exact(&mut beat).await.is_ok() {
        if stream.write_all(&beat).await.is_err() {
            return;
        }
    }
}

async fn read<T: serde::de::DeserializeOwned>(stream: &mut MuxStream) -> Result<T, rpc::RpcError> {
    tokio::time::timeout(RPC_TIMEOUT, rpc::read_request(stream))
        .await
        .map_err(|_| rpc::RpcError::Truncated)?
}

async fn auth(
    pop: &Pop,
    state: &Mutex<AgentState>,
    stream: &mut MuxStream,
) -> Result<(), rpc::RpcError> {
    let request: Auth = read(stream).await?;
    let snapshot = pop.snapshot();
    let hash = SecretHash::of(&request.extra.auth_token);
    let credential = snapshot.credential(&hash).cloned();
    let Some(credential) = credential else {
        tracing::info!(user_agent = %request.extra.user_agent, "agent refused: bad authtoken");
        let resp = AuthResp {
            error: proto::error_text(
                "authentication failed: The authtoken you specified is not valid.",
                "ERR_NGROK_107",
            ),
            ..AuthResp::default()
        };
        return rpc::respond(stream, &resp).await.map_err(Into::into);
    };
    let client_id = if request.client_id.is_empty() {
        random_hex(16)
    } else {
        request.client_id.clone()
    };
    tracing::info!(
        account = %credential.account_id, credential = %credential.id, %client_id,
        user_agent = %request.extra.user_agent, "agent authenticated"
    );
    {
        let mut st = lock(state);
        st.credential = Some((hash, credential));
        st.client_id = client_id.clone();
    }
    let version = if request.version.iter().any(|v| v == "3") {
        "3"
    } else {
        "2"
    };
    let resp = AuthResp {
        version: version.to_owned(),
        client_id,
        extra: AuthRespExtra {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            region: pop.site.code.to_string(),
            cookie: String::new(),
            account_name: String::new(),
        },
        error: String::new(),
    };
    rpc::respond(stream, &resp).await.map_err(Into::into)
}

/// A refused bind: the message and the `ERR_NGROK_` code the SDK surfaces.
struct Refusal(String, &'static str);

async fn bind(
    pop: &Pop,
    session: &Session,
    state: &Mutex<AgentState>,
    stream: &mut MuxStream,
) -> Result<(), rpc::RpcError> {
    let request: Bind = read(stream).await?;
    let credential = lock(state).credential.clone().map(|(_, c)| c);
    let outcome = match credential {
        None => Err(Refusal(
            "bind before authentication".into(),
            "ERR_NGROK_105",
        )),
        Some(credential) => plan_bind(pop, &pop.snapshot(), &credential, &request, session),
    };
    let resp = match outcome.and_then(|tunnel| {
        pop.platform
            .registry
            .bind(tunnel.clone())
            .map(|()| tunnel)
            .map_err(|e| Refusal(e.to_string(), "ERR_NGROK_334"))
    }) {
        Ok(tunnel) => {
            let (id, url, pooling) = (&tunnel.id, &tunnel.url, tunnel.pooling);
            tracing::info!(%id, %url, pooling, "endpoint online");
            let reserved = match &tunnel.key {
                EndpointKey::Host(host) => {
                    Hostname::parse(host).is_ok_and(|h| pop.snapshot().domain(&h).is_some())
                }
                EndpointKey::Addr(_) => true,
            };
            lock(state).bound.push(Bound {
                key: tunnel.key.clone(),
                id: tunnel.id.clone(),
                reserved,
            });
            BindResp {
                id: tunnel.id.clone(),
                url: tunnel.url.clone(),
                proto: request.proto.clone(),
                opts: request.opts.clone(),
                extra: BindRespExtra {
                    token: random_hex(16),
                },
                error: String::new(),
            }
        }
        Err(Refusal(message, code)) => {
            tracing::info!(%message, code, proto = %request.proto, "bind refused");
            BindResp {
                opts: request.opts.clone(),
                error: proto::error_text(&message, code),
                ..BindResp::default()
            }
        }
    };
    rpc::respond(stream, &resp).await.map_err(Into::into)
}

fn opt_str<'a>(opts: &'a Value, key: &str) -> &'a str {
    opts.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// Decides what a bind would create, without changing anything.
fn plan_bind(
    pop: &Pop,
    snapshot: &RoutingSnapshot,
    credential: &CredentialRoute,
    request: &Bind,
    session: &Session,
) -> Result<Arc<Tunnel>, Refusal> {
    let opts = &request.opts;
    let proxy_proto = opts
        .get("ProxyProto")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        .min(2) as u8;
    let (kind, key, url, region) = match request.proto.as_str() {
        "http" | "https" | "tls" => {
            let kind = if request.proto == "tls" {
                EndpointKind::Tls
            } else {
                EndpointKind::Http
            };
            let host = hostname_for(pop, snapshot, credential, opts)?;
            let url = format!("{}://{}", request.proto, host);
            (kind, EndpointKey::Host(host.to_string()), url, None)
        }
        "tcp" => {
            let addr = opt_str(opts, "Addr");
            let route = match snapshot.addr(addr) {
                Some(route) if route.account_id == credential.account_id => route,
                Some(_) => {
                    return Err(Refusal(
                        format!("the TCP address '{addr}' is reserved by another account"),
                        "ERR_NGROK_320",
                    ));
                }
                None => {
                    return Err(Refusal(
                        format!(
                            "TCP endpoints need an address your account reserved \
                             (POST /reserved_addrs); '{addr}' is not one"
                        ),
                        "ERR_NGROK_7117",
                    ));
                }
            };
            check_acl(credential, addr)?;
            (
                EndpointKind::Tcp,
                EndpointKey::Addr(addr.to_owned()),
                format!("tcp://{addr}"),
                Some(route.region),
            )
        }
        other => {
            return Err(Refusal(
                format!("unsupported endpoint protocol '{other}'"),
                "ERR_NGROK_9010",
            ));
        }
    };
    let id = if request.id.is_empty() {
        format!("tn_{}", random_hex(13))
    } else {
        request.id.clone()
    };
    Ok(Arc::new(Tunnel {
        id,
        account_id: credential.account_id.clone(),
        key,
        url,
        proto: request.proto.clone(),
        kind,
        pooling: request.extra.pooling_enabled,
        proxy_proto,
        terminate_tls: !opts.get("TLSTermination").is_none_or(Value::is_null),
        region,
        session: session.clone(),
    }))
}

/// The hostname an HTTP or TLS bind serves: the requested one if the account reserved it (a
/// wildcard reservation covers the names below it), else a fresh name under the base domain.
fn hostname_for(
    pop: &Pop,
    snapshot: &RoutingSnapshot,
    credential: &CredentialRoute,
    opts: &Value,
) -> Result<Hostname, Refusal> {
    let requested = [opt_str(opts, "Domain"), opt_str(opts, "Hostname")]
        .into_iter()
        .find(|s| !s.is_empty());
    let Some(requested) = requested else {
        let name = format!("{}.{}", random_hex(5), pop.platform.base_domain);
        return Hostname::parse(&name).map_err(|e| Refusal(e.to_string(), "ERR_NGROK_1906"));
    };
    let host = Hostname::parse(requested)
        .map_err(|e| Refusal(format!("invalid domain: {e}"), "ERR_NGROK_1906"))?;
    match snapshot.domain(&host) {
        Some(route) if route.account_id == credential.account_id => {
            check_acl(credential, host.as_str())?;
            Ok(host)
        }
        Some(_) => Err(Refusal(
            format!("the domain '{host}' is reserved by another account"),
            "ERR_NGROK_320",
        )),
        None => Err(Refusal(
            format!("the domain '{host}' is not reserved; reserve it with POST /reserved_domains"),
            "ERR_NGROK_7117",
        )),
    }
}

/// A credential with bind rules may bind only what a rule names: `bind:name`,
/// `bind:*.suffix` (any name below the suffix) or `*`.
fn check_acl(credential: &CredentialRoute, target: &str) -> Result<(), Refusal> {
    if credential.acl.is_empty() {
        return Ok(());
    }
    let allowed = credential.acl.iter().any(|rule| {
        rule == "*"
            || rule.strip_prefix("bind:").is_some_and(|pattern| {
                pattern == target
                    || pattern
                        .strip_prefix("*.")
                        .is_some_and(|suffix| target.ends_with(&format!(".{suffix}")))
            })
    });
    if allowed {
        Ok(())
    } else {
        Err(Refusal(
            format!("this credential's ACL does not allow binding '{target}'"),
            "ERR_NGROK_336",
        ))
    }
}

async fn unbind(
    pop: &Pop,
    state: &Mutex<AgentState>,
    stream: &mut MuxStream,
) -> Result<(), rpc::RpcError> {
    let request: Unbind = read(stream).await?;
    let removed = {
        let mut st = lock(state);
        let at = st.bound.iter().position(|b| b.id == request.id);
        at.map(|i| st.bound.remove(i))
    };
    if let Some(b) = removed {
        pop.platform.registry.unbind(&b.key, &b.id);
        tracing::info!(id = %b.id, "endpoint offline (unbound)");
    }
    rpc::respond(stream, &ErrorResp::default())
        .await
        .map_err(Into::into)
}

/// How long the agent may take to answer a Stop command before the session is closed anyway.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// Follows the routing snapshot for as long as the session lives. A revoked credential gets
/// `Stop` and the session closes; an endpoint whose reservation was deleted or passed to
/// another account gets `StopTunnel` and goes offline. Nothing keeps serving on a grant that
/// no longer exists.
async fn enforce_revocations(pop: Arc<Pop>, session: Session, state: Arc<Mutex<AgentState>>) {
    let mut snapshots = pop.platform.snapshot.clone();
    loop {
        tokio::select! {
            _ = session.ended() => return,
            changed = snapshots.changed() => if changed.is_err() { return },
        }
        let snapshot = snapshots.borrow_and_update().clone();
        let (credential, bound) = {
            let st = lock(&state);
            (st.credential.clone(), st.bound.clone())
        };
        let Some((hash, credential)) = credential else {
            continue;
        };
        if snapshot.credential(&hash).is_none() {
            tracing::info!(credential = %credential.id, "credential revoked: stopping the agent");
            stop_agent(&session).await;
            return;
        }
        for b in bound
            .iter()
            .filter(|b| b.reserved && !still_granted(&snapshot, &credential, &b.key))
        {
            tracing::info!(id = %b.id, "reservation gone: stopping the endpoint");
            let stop = proto::StopTunnel {
                id: b.id.clone(),
                message: "The reservation this endpoint was bound to has been removed.".into(),
                error_code: Some("ERR_NGROK_7117".into()),
            };
            let body = serde_json::to_vec(&stop).unwrap_or_default();
            // The Rust SDK writes no reply to StopTunnel; FIN and move on.
            if let Ok(mut stream) = session.open(proto::TYPE_STOP_TUNNEL, &body) {
                let _ = stream.shutdown().await;
            }
            pop.platform.registry.unbind(&b.key, &b.id);
            lock(&state).bound.retain(|x| x.id != b.id);
        }
    }
}

fn still_granted(
    snapshot: &RoutingSnapshot,
    credential: &CredentialRoute,
    key: &EndpointKey,
) -> bool {
    match key {
        EndpointKey::Host(host) => Hostname::parse(host).is_ok_and(|h| {
            snapshot
                .domain(&h)
                .is_some_and(|d| d.account_id == credential.account_id)
        }),
        EndpointKey::Addr(addr) => snapshot
            .addr(addr)
            .is_some_and(|a| a.account_id == credential.account_id),
    }
}

/// Sends `Stop`, waits briefly for the agent's answer (SDKs without a handler answer with an
/// error, which changes nothing), then closes the session.
async fn stop_agent(session: &Session) {
    if let Ok(mut stream) = session.open(proto::TYPE_STOP, b"{}") {
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, stream.read_to_end(&mut reply)).await;
        tracing::debug!(reply = %String::from_utf8_lossy(&reply), "agent answered Stop");
    }
    session.close(
        meridian_tunnel::frame::ErrorCode::None,
        "credential revoked",
    );
}
