//! `meridian agent`: an agent built on the official `ngrok` crate, pointed at a Meridian edge.
//! With no flags it finds the local `meridian serve`: the CA and the bootstrap authtoken in
//! the default data directory, and the `us` PoP's agent listener.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use meridian_tunnel::coalesce::Coalesced;
use meridian_tunnel::readahead::ReadAhead;
use ngrok::prelude::*;
use url::Url;

/// The agent listener of the `us` PoP under the default configuration.
pub const DEFAULT_SERVER_ADDR: &str = "127.0.1.1:4443";

/// What kind of endpoint to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Proto {
    /// HTTPS (and HTTP) on a domain.
    Http,
    /// Raw TCP on a reserved address.
    Tcp,
    /// TLS on a domain, passed through to the upstream.
    Tls,
}

/// `meridian agent` arguments.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Endpoint kind.
    #[arg(value_enum)]
    pub proto: Proto,
    /// Where to forward: a port, `host:port`, or a URL.
    pub upstream: String,
    /// Domain to serve (HTTP and TLS); it must be reserved by the account.
    #[arg(long)]
    pub domain: Option<String>,
    /// Reserved address to serve (TCP), e.g. `eu.tcp.meridian.test:20000`.
    #[arg(long)]
    pub remote_addr: Option<String>,
    /// Share the endpoint with other agents that also pool.
    #[arg(long)]
    pub pooling: bool,
    /// The edge's agent listener. Default: the local server's `us` PoP.
    #[arg(long, value_name = "HOST:PORT")]
    pub server_addr: Option<String>,
    /// CA certificate to trust. Default: `ca.pem` in the data directory.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Agent authtoken. Default: `$MERIDIAN_AUTHTOKEN`, else the data directory's bootstrap one.
    #[arg(long, env = "MERIDIAN_AUTHTOKEN", hide_env_values = true)]
    pub authtoken: Option<String>,
    /// The local server's data directory, for the defaults above.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// The URL the SDK forwards to: a bare port means localhost.
fn upstream_url(proto: Proto, upstream: &str) -> anyhow::Result<Url> {
    let scheme = match proto {
        Proto::Http => "http",
        Proto::Tcp => "tcp",
        Proto::Tls => "tls",
    };
    let text = if upstream.contains("://") {
        upstream.to_owned()
    } else if upstream.parse::<u16>().is_ok() {
        format!("{scheme}://localhost:{upstream}")
    } else {
        format!("{scheme}://{upstream}")
    };
    Url::parse(&text).with_context(|| format!("upstream '{upstream}'"))
}

fn bootstrap_authtoken(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join(crate::bootstrap::BOOTSTRAP_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no --authtoken given and {} is unreadable", path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    json["authtoken"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("{} has no authtoken", path.display()))
}

/// Connects, starts the endpoint and forwards until Ctrl-C or the session fails.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let AgentArgs {
        proto,
        upstream,
        domain,
        remote_addr,
        pooling,
        server_addr,
        ca,
        authtoken,
        data_dir,
    } = args;
    let data_dir = match data_dir {
        Some(dir) => dir,
        None => crate::config::default_data_dir()?,
    };
    let ca = ca.unwrap_or_else(|| data_dir.join(meridian_edge::ca::CA_CERT_FILE));
    let authtoken = match authtoken {
        Some(token) => token,
        None => bootstrap_authtoken(&data_dir)?,
    };
    let server_addr = server_addr.unwrap_or_else(|| DEFAULT_SERVER_ADDR.to_owned());
    let to = upstream_url(proto, &upstream)?;
    if proto == Proto::Tcp && domain.is_some() {
        bail!("--domain is for http and tls endpoints; TCP endpoints take --remote-addr");
    }

    let session = ngrok::Session::builder()
        .connector(connect)
        .authtoken(authtoken)
        .server_addr(server_addr.clone())?
        .root_cas(ca.display().to_string())
        .with_context(|| format!("reading the CA {}", ca.display()))?
        .connect()
        .await
        .with_context(|| format!("connecting to {server_addr}"))?;
    tracing::info!(%server_addr, "agent session established");
    match proto {
        Proto::Http => {
            let mut builder = session.http_endpoint();
            if let Some(domain) = domain {
                builder.domain(domain);
            }
            builder.pooling_enabled(pooling);
            forward(builder.listen().await?, &to, proto).await
        }
        Proto::Tcp => {
            let mut builder = session.tcp_endpoint();
            if let Some(addr) = remote_addr {
                builder.remote_addr(addr);
            }
            builder.pooling_enabled(pooling);
            forward(builder.listen().await?, &to, proto).await
        }
        Proto::Tls => {
            let mut builder = session.tls_endpoint();
            if let Some(domain) = domain {
                builder.domain(domain);
            }
            builder.pooling_enabled(pooling);
            forward(builder.listen().await?, &to, proto).await
        }
    }
}

/// The SDK's dialer. The SDK writes every muxado frame with a write and a flush of its own;
/// [`Coalesced`] gathers the frames of one scheduler pass into one TLS write, so Nagle's
/// algorithm is turned off: nothing is left for it to merge, and it would only hold a
/// response back until the edge acknowledged the window update before it.
async fn connect(
    host: String,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    _: Option<ngrok::tunnel::AcceptError>,
) -> Result<Box<dyn ngrok::session::IoStream>, ngrok::session::ConnectError> {
    use ngrok::session::ConnectError;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(ConnectError::Tcp)?;
    tcp.set_nodelay(true).map_err(ConnectError::Tcp)?;
    let name = rustls::pki_types::ServerName::try_from(host)
        .map_err(|e| ConnectError::Tcp(std::io::Error::other(e)))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, ReadAhead::new(tcp))
        .await
        .map_err(ConnectError::Tls)?;
    Ok(Box::new(Coalesced::new(stream)))
}

/// Bytes copied per read in each direction: 64 KiB reads make 64 KiB frames. The SDK's own
/// forwarder copies through 8 KiB, and each copy becomes a frame, a TLS record and a
/// system call; that made the agent, not the edge, the bottleneck for large bodies.
const COPY_BUFFER: usize = 64 * 1024;

/// Accepts proxied connections from the endpoint and pipes each to the upstream.
async fn forward<T, C>(mut tunnel: T, to: &Url, proto: Proto) -> anyhow::Result<()>
where
    T: futures_util::Stream<Item = Result<C, ngrok::tunnel::AcceptError>> + EndpointInfo + Unpin,
    C: Conn,
{
    use futures_util::StreamExt;
    let (host, port) = match (to.host_str(), to.port_or_known_default()) {
        (Some(host), Some(port)) if matches!(to.scheme(), "http" | "tcp" | "tls") => {
            (host.to_owned(), port)
        }
        _ => bail!("upstream {to}: give http://, tcp:// or tls:// with a host and port"),
    };
    // The stable line scripts wait for.
    println!("forwarding {} -> {to}", tunnel.url());
    loop {
        let conn = tokio::select! {
            next = tunnel.next() => match next {
                Some(conn) => conn?,
                None => bail!("the edge closed the endpoint"),
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        tokio::spawn(pipe(conn, host.clone(), port, proto));
    }
}

async fn pipe<C: Conn>(mut conn: C, host: String, port: u16, proto: Proto) {
    use tokio::io::AsyncWriteExt;
    let mut upstream = match tokio::net::TcpStream::connect((host.as_str(), port)).await {
        Ok(upstream) => upstream,
        Err(error) => {
            tracing::warn!(%error, %host, port, "upstream unreachable");
            if proto == Proto::Http {
                let body = format!("The agent could not reach {host}:{port}: {error}.\n");
                let head = format!(
                    "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(format!("{head}{body}").as_bytes()).await;
                let _ = conn.shutdown().await;
            }
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    if let Err(error) =
        tokio::io::copy_bidirectional_with_sizes(&mut conn, &mut upstream, COPY_BUFFER, COPY_BUFFER)
            .await
    {
        tracing::debug!(%error, "proxied connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams() {
        assert_eq!(
            upstream_url(Proto::Http, "3000").unwrap().as_str(),
            "http://localhost:3000/"
        );
        assert_eq!(
            upstream_url(Proto::Tcp, "db:5432").unwrap().as_str(),
            "tcp://db:5432"
        );
        assert_eq!(
            upstream_url(Proto::Http, "https://x.test:8443")
                .unwrap()
                .as_str(),
            "https://x.test:8443/"
        );
    }
}
