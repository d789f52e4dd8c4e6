//! `meridian serve`: every role of the platform in one process: the store, the API, the
//! authoritative DNS server and one edge per PoP, each on its own addresses, all sharing one
//! tunnel registry. Each edge reports to the DNS server's health board while it runs.

use std::future::Future;
use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;

use anyhow::Context;
use meridian_api::{ApiConfig, ApiState};
use meridian_core::Hostname;
use meridian_dns::{Authority, DnsListeners, DnsService, GeoDb, HealthBoard, ZoneConfig};
use meridian_edge::registry::LocalRegistry;
use meridian_edge::{Platform, PopListeners};
use meridian_store::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::bootstrap;
use crate::config::Settings;

/// The built-in GeoIP database: country level, IPv4 and IPv6 (see `NOTICE`).
static BUILTIN_GEOIP: &[u8] = include_bytes!("../geoip/geo-whois-asn-country.mmdb");

/// Runs until `shutdown` completes, then stops accepting and drains.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&settings.data_dir)
        .with_context(|| format!("creating data directory {}", settings.data_dir.display()))?;
    let store = Store::open(&settings.store_url)
        .await
        .with_context(|| format!("opening the store at {}", redact(&settings.store_url)))?;
    tracing::info!(store = %redact(&settings.store_url), backend = ?store.backend(), "store open");

    let listener = TcpListener::bind(settings.api_listen)
        .await
        .with_context(|| format!("binding the API to {}", settings.api_listen))?;
    let bound = listener.local_addr()?;
    let base_url = settings
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{bound}"));
    bootstrap::ensure(&store, &settings.data_dir, &base_url).await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            // Resolves when the sender sends or is dropped; either means stop.
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let follower = tokio::spawn({
        let store = store.clone();
        let stopped = stopped();
        async move { store.follow(stopped).await }
    });

    let state = ApiState {
        store,
        config: Arc::new(ApiConfig {
            base_url,
            base_domain: settings.base_domain.clone(),
            addr_pools: std::array::from_fn(|i| settings.pops[i].addr_pool.clone()),
        }),
    };
    let platform = Arc::new(Platform {
        registry: Arc::new(LocalRegistry::default()),
        ca: Arc::new(
            meridian_edge::ca::Authority::load_or_create(&settings.data_dir)
                .context("loading Meridian's CA")?,
        ),
        snapshot: state.store.subscribe(),
        base_domain: settings.base_domain.clone(),
    });
    let health = Arc::new(HealthBoard::new());
    let dns_listeners = DnsListeners::bind(settings.dns_listen)
        .await
        .with_context(|| format!("binding the DNS server to {}", settings.dns_listen))?;
    let dns_service = DnsService {
        authority: Arc::new(Authority::new(
            zone_config(&settings, &dns_listeners)?,
            Some(geo_db(&settings)?),
        )),
        snapshot: platform.snapshot.clone(),
        health: health.clone(),
    };
    dns_listeners.log();
    let mut dns = tokio::spawn(meridian_dns::serve(
        dns_service,
        dns_listeners,
        settings.dns_udp_workers,
        stopped(),
    ));
    let health_watch = tokio::spawn({
        let (health, stopped) = (health.clone(), stopped());
        async move { health.watch(stopped).await }
    });

    let mut pops = tokio::task::JoinSet::new();
    for pop in &settings.pops {
        let listeners = bind_pop(&settings, pop.site.addresses[0]).await?;
        listeners.log(pop.site.code);
        let agent_addr = listeners.agent.local_addr()?;
        if pop.site.code == meridian_core::PopCode::Us {
            print_agent_hint(&settings, agent_addr);
        }
        let (platform, site, stopped) = (platform.clone(), pop.site.clone(), stopped());
        // Live from the moment its listeners are bound, before the API takes any request.
        health.report(site.code);
        let health = health.clone();
        pops.spawn(async move {
            let code = site.code;
            let edge = meridian_edge::run_pop(platform, site, listeners, stopped);
            // The reports stop the moment the edge does, so DNS stops naming a dead PoP.
            let result = tokio::select! {
                result = edge => result,
                () = health.report_while_running(code) => Ok(()),
            };
            health.withdraw(code);
            result
        });
    }

    let mut api = tokio::spawn(meridian_api::serve(listener, state, stopped()));
    tracing::info!("api listening on http://{bound}");

    // A role that ends on its own is a failure; stop the rest rather than limp on.
    let early = tokio::select! {
        () = shutdown => None,
        ended = &mut api => Some(ended),
        ended = &mut dns => {
            ended?.context("serving DNS")?;
            anyhow::bail!("the DNS server stopped on its own");
        }
        Some(pop) = pops.join_next() => {
            pop?.context("running a PoP")?;
            None
        }
    };
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let ended = match early {
        Some(ended) => ended,
        None => api.await,
    };
    ended?.context("serving the API")?;
    dns.await?.context("serving DNS")?;
    health_watch.await?;
    follower.await?;
    Ok(())
}

/// The DNS server's zones, from the PoPs' configured addresses and TCP hosts.
fn zone_config(settings: &Settings, dns: &DnsListeners) -> anyhow::Result<ZoneConfig> {
    let dns_ip = dns.local_addr()?.ip();
    Ok(ZoneConfig {
        base_domain: settings.base_domain.clone(),
        pop_addresses: std::array::from_fn(|i| settings.pops[i].site.addresses.clone()),
        // A TCP host given as an IP address needs no DNS.
        tcp_hosts: settings
            .pops
            .iter()
            .filter_map(|p| Some((Hostname::parse(&p.addr_pool.host).ok()?, p.site.code)))
            .collect(),
        ns_addresses: if dns_ip.is_unspecified() {
            Vec::new()
        } else {
            vec![dns_ip]
        },
        ttl: settings.dns_ttl,
    })
}

fn geo_db(settings: &Settings) -> anyhow::Result<GeoDb> {
    let db = match &settings.geoip {
        Some(path) => GeoDb::open(path)?,
        None => GeoDb::from_static(BUILTIN_GEOIP, "built-in country database")?,
    };
    tracing::info!(geoip = %db.description(), "dns geoip database loaded");
    Ok(db)
}

/// Binds one PoP's agent, HTTP and HTTPS listeners on its first address.
async fn bind_pop(settings: &Settings, ip: std::net::IpAddr) -> anyhow::Result<PopListeners> {
    let bind = |port: u16| async move {
        let addr = std::net::SocketAddr::new(ip, port);
        TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))
    };
    Ok(PopListeners {
        agent: bind(settings.agent_port).await?,
        http: bind(settings.http_port).await?,
        https: bind(settings.https_port).await?,
    })
}

fn print_agent_hint(settings: &Settings, agent_addr: std::net::SocketAddr) {
    let ca = settings.data_dir.join(meridian_edge::ca::CA_CERT_FILE);
    println!(
        "Agents connect to any PoP with the CA at {}. With the ngrok Python SDK:",
        ca.display()
    );
    println!(
        "\n  ngrok.forward(8000, authtoken=\"<authtoken>\", server_addr=\"{agent_addr}\",\n  \
         \x20             root_cas=\"{}\", domain=\"<a domain you reserved>\")\n",
        ca.display()
    );
}

/// The store URL without its password, for logs.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &url[scheme_end + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:****{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:****@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite:///a/b.db"), "sqlite:///a/b.db");
    }
}
