//! `meridian serve`'s configuration: a TOML file, overridden by flags, then checked once into
//! [`Settings`], the only form the rest of the program reads. Every field has a default that
//! works on a fresh machine.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use meridian_core::{Hostname, PopCode, PopSite};
use meridian_store::AddrPool;
use serde::Deserialize;

/// The API's default listen address.
pub const DEFAULT_API_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 7180);
/// The platform's default zone. `.test` is reserved (RFC 2606), so it can never collide with a
/// real name.
pub const DEFAULT_BASE_DOMAIN: &str = "meridian.test";
/// Default port of each PoP's agent listener.
pub const DEFAULT_AGENT_PORT: u16 = 4443;
/// Default port of each PoP's visitor HTTP listener.
pub const DEFAULT_HTTP_PORT: u16 = 8080;
/// Default port of each PoP's visitor HTTPS listener.
pub const DEFAULT_HTTPS_PORT: u16 = 8443;
/// The DNS server's default address: loopback, and a port that needs no privileges.
pub const DEFAULT_DNS_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 8053);
/// Default TCP port range of every PoP; each PoP has its own address, so ranges may overlap.
pub const DEFAULT_TCP_PORTS: [u16; 2] = [20000, 29999];

/// The file's shape. Absent keys take their defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    /// Where everything is kept. Default: `$XDG_DATA_HOME/meridian`, else
    /// `~/.local/share/meridian`.
    pub data_dir: Option<PathBuf>,
    /// `sqlite://PATH` or `postgres://…`. Default: `sqlite://<data_dir>/meridian.db`.
    pub store: Option<String>,
    /// The platform's zone. Default: `meridian.test`.
    pub base_domain: Option<String>,
    /// The API.
    pub api: ApiSection,
    /// Ports every PoP listens on, each on its own addresses.
    pub edge: EdgeSection,
    /// Per-PoP settings, keyed by PoP code.
    pub pops: BTreeMap<String, PopSection>,
    /// The authoritative DNS server.
    pub dns: DnsSection,
}

/// `[dns]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsSection {
    /// UDP and TCP listen address. Default: `127.0.0.1:8053`.
    pub listen: Option<SocketAddr>,
    /// TTL of answers, in seconds. Default: 30.
    pub ttl: Option<u32>,
    /// A MaxMind-format GeoIP database (GeoIP2/GeoLite2 City or Country, ip-location-db).
    /// Default: the country database built into the binary.
    pub geoip: Option<PathBuf>,
    /// Threads answering UDP. Default: 1.
    pub udp_workers: Option<usize>,
}

/// `[api]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    /// Listen address; port 0 picks a free port. Default: `127.0.0.1:7180`.
    pub listen: Option<SocketAddr>,
    /// The URL clients reach the API at, used in every `uri`. Default: `http://` and the bound
    /// address.
    pub public_url: Option<String>,
}

/// `[edge]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeSection {
    /// Agent listener port; 0 picks a free port per PoP. Default: 4443.
    pub agent_port: Option<u16>,
    /// Visitor HTTP port. Default: 8080.
    pub http_port: Option<u16>,
    /// Visitor HTTPS port. Default: 8443.
    pub https_port: Option<u16>,
}

/// `[pops.<code>]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PopSection {
    /// The addresses the PoP is reached on. Default: `127.0.1.N`, N its catalog position from 1.
    pub addresses: Option<Vec<IpAddr>>,
    /// Host part of its reserved TCP addresses. Default: `<code>.tcp.<base_domain>`.
    pub tcp_host: Option<String>,
    /// First and last port of its reserved TCP addresses. Default: `[20000, 29999]`.
    pub tcp_ports: Option<[u16; 2]>,
}

/// Flag overrides; `None` keeps the file's value.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--store`.
    pub store: Option<String>,
    /// `--api-listen`.
    pub api_listen: Option<SocketAddr>,
    /// `--public-url`.
    pub public_url: Option<String>,
    /// `--base-domain`.
    pub base_domain: Option<String>,
    /// `--agent-port`.
    pub agent_port: Option<u16>,
    /// `--http-port`.
    pub http_port: Option<u16>,
    /// `--https-port`.
    pub https_port: Option<u16>,
    /// `--dns-listen`.
    pub dns_listen: Option<SocketAddr>,
    /// `--geoip`.
    pub geoip: Option<PathBuf>,
}

/// One PoP, resolved.
#[derive(Debug, Clone)]
pub struct PopSettings {
    /// Which PoP and where it is reached.
    pub site: PopSite,
    /// Where its TCP addresses come from.
    pub addr_pool: AddrPool,
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Store URL.
    pub store_url: String,
    /// Platform zone.
    pub base_domain: Hostname,
    /// API listen address.
    pub api_listen: SocketAddr,
    /// API public URL, if configured (else derived from the bound address).
    pub public_url: Option<String>,
    /// The eight PoPs in catalog order.
    pub pops: Vec<PopSettings>,
    /// Agent listener port of every PoP.
    pub agent_port: u16,
    /// Visitor HTTP port of every PoP.
    pub http_port: u16,
    /// Visitor HTTPS port of every PoP.
    pub https_port: u16,
    /// DNS listen address.
    pub dns_listen: SocketAddr,
    /// DNS answer TTL.
    pub dns_ttl: u32,
    /// GeoIP database file; `None` means the built-in one.
    pub geoip: Option<PathBuf>,
    /// DNS UDP threads.
    pub dns_udp_workers: usize,
}

impl Settings {
    /// Reads `path` (if any), applies `overrides` and checks the result.
    pub fn load(path: Option<&Path>, overrides: Overrides) -> anyhow::Result<Self> {
        let file = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
            }
            None => ConfigFile::default(),
        };
        Self::resolve(file, overrides)
    }

    /// A human summary for `--check-config`; the store password is masked.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "configuration ok\n  data_dir     {}\n  store        {}\n  base_domain  {}\n  \
             api.listen   {}\n  edge ports   agent {} http {} https {}\n  dns          {} ttl {} \
             geoip {}\n",
            self.data_dir.display(),
            crate::serve::redact(&self.store_url),
            self.base_domain,
            self.api_listen,
            self.agent_port,
            self.http_port,
            self.https_port,
            self.dns_listen,
            self.dns_ttl,
            self.geoip
                .as_ref()
                .map_or_else(|| "built-in".to_owned(), |p| p.display().to_string()),
        );
        for pop in &self.pops {
            let addresses: Vec<String> =
                pop.site.addresses.iter().map(ToString::to_string).collect();
            let pool = &pop.addr_pool;
            out += &format!(
                "  pop {:<9} addresses {}  tcp {}:{}-{}\n",
                pop.site.code,
                addresses.join(","),
                pool.host,
                pool.first_port,
                pool.last_port
            );
        }
        out
    }

    fn resolve(file: ConfigFile, overrides: Overrides) -> anyhow::Result<Self> {
        let ConfigFile {
            data_dir,
            store,
            base_domain,
            api: ApiSection { listen, public_url },
            edge:
                EdgeSection {
                    agent_port,
                    http_port,
                    https_port,
                },
            mut pops,
            dns,
        } = file;
        let data_dir = match overrides.data_dir.or(data_dir) {
            Some(dir) => dir,
            None => default_data_dir()?,
        };
        let store_url = overrides
            .store
            .or(store)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("meridian.db").display()));
        if !(store_url.starts_with("sqlite://")
            || store_url.starts_with("postgres://")
            || store_url.starts_with("postgresql://"))
        {
            bail!("store must be sqlite://PATH or postgres://…, not '{store_url}'");
        }
        let base_domain = overrides
            .base_domain
            .or(base_domain)
            .unwrap_or_else(|| DEFAULT_BASE_DOMAIN.to_owned());
        let base_domain = Hostname::parse(&base_domain)
            .with_context(|| format!("base_domain '{base_domain}'"))?;
        if base_domain.is_wildcard() {
            bail!("base_domain may not be a wildcard");
        }
        let public_url = overrides.public_url.or(public_url);
        if let Some(url) = &public_url
            && (!(url.starts_with("http://") || url.starts_with("https://")) || url.ends_with('/'))
        {
            bail!("public_url must start with http:// or https:// and not end in '/': '{url}'");
        }
        for code in pops.keys() {
            code.parse::<PopCode>()
                .with_context(|| format!("[pops.{code}]"))?;
        }
        let pops = PopCode::ALL
            .into_iter()
            .map(|code| {
                let section = pops.remove(code.as_str()).unwrap_or_default();
                resolve_pop(code, section, &base_domain)
            })
            .collect::<anyhow::Result<_>>()?;
        let dns_ttl = dns.ttl.unwrap_or(meridian_dns::DEFAULT_TTL);
        if dns_ttl > 86_400 {
            bail!("[dns] ttl must be at most 86400 seconds");
        }
        let dns_udp_workers = dns.udp_workers.unwrap_or(1);
        if !(1..=64).contains(&dns_udp_workers) {
            bail!("[dns] udp_workers must be between 1 and 64");
        }
        Ok(Self {
            dns_listen: overrides
                .dns_listen
                .or(dns.listen)
                .unwrap_or(DEFAULT_DNS_LISTEN),
            dns_ttl,
            geoip: overrides.geoip.or(dns.geoip),
            dns_udp_workers,
            data_dir,
            store_url,
            base_domain,
            api_listen: overrides
                .api_listen
                .or(listen)
                .unwrap_or(DEFAULT_API_LISTEN),
            public_url,
            pops,
            agent_port: overrides
                .agent_port
                .or(agent_port)
                .unwrap_or(DEFAULT_AGENT_PORT),
            http_port: overrides
                .http_port
                .or(http_port)
                .unwrap_or(DEFAULT_HTTP_PORT),
            https_port: overrides
                .https_port
                .or(https_port)
                .unwrap_or(DEFAULT_HTTPS_PORT),
        })
    }
}

fn resolve_pop(code: PopCode, section: PopSection, base: &Hostname) -> anyhow::Result<PopSettings> {
    let PopSection {
        addresses,
        tcp_host,
        tcp_ports,
    } = section;
    let loopback = IpAddr::V4(Ipv4Addr::new(127, 0, 1, code.index() as u8 + 1));
    let addresses = addresses.unwrap_or_else(|| vec![loopback]);
    if addresses.is_empty() {
        bail!("[pops.{code}] addresses may not be empty");
    }
    let host = tcp_host.unwrap_or_else(|| format!("{code}.tcp.{base}"));
    Hostname::parse(&host)
        .map(drop)
        .or_else(|_| host.parse::<IpAddr>().map(drop))
        .map_err(|_| {
            anyhow::anyhow!("[pops.{code}] tcp_host '{host}' is neither a hostname nor an IP")
        })?;
    let [first_port, last_port] = tcp_ports.unwrap_or(DEFAULT_TCP_PORTS);
    if first_port == 0 || first_port > last_port {
        bail!("[pops.{code}] tcp_ports must be [first, last] with 0 < first <= last");
    }
    Ok(PopSettings {
        site: PopSite { code, addresses },
        addr_pool: AddrPool {
            host,
            first_port,
            last_port,
        },
    })
}

/// `$XDG_DATA_HOME/meridian`, else `~/.local/share/meridian`.
pub fn default_data_dir() -> anyhow::Result<PathBuf> {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("meridian"));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .context("no HOME to put the data directory in; pass --data-dir")?;
    Ok(PathBuf::from(home).join(".local/share/meridian"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Settings> {
        let file: ConfigFile = toml::from_str(text)?;
        let overrides = Overrides {
            data_dir: Some("/tmp/x".into()),
            ..Overrides::default()
        };
        Settings::resolve(file, overrides)
    }

    #[test]
    fn defaults_give_each_pop_its_own_loopback_address() {
        let s = parse("").unwrap();
        assert_eq!(s.store_url, "sqlite:///tmp/x/meridian.db");
        assert_eq!(s.pops[2].site.code, PopCode::Eu);
        assert_eq!(
            s.pops[2].site.addresses,
            ["127.0.1.3".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(s.pops[2].addr_pool.host, "eu.tcp.meridian.test");
    }

    #[test]
    fn file_values_apply_and_mistakes_are_refused() {
        let s = parse("base_domain = \"Edge.Example\"\n[pops.jp]\ntcp_ports = [30000, 30010]\n")
            .unwrap();
        assert_eq!(s.base_domain.as_str(), "edge.example");
        assert_eq!(s.pops[5].addr_pool.first_port, 30000);
        for bad in [
            "[pops.mars]\n",
            "unknown = 1\n",
            "[pops.eu]\ntcp_ports = [5, 1]\n",
            "base_domain = \"no_underscores.example\"\n",
            "store = \"mysql://x\"\n",
            "[api]\npublic_url = \"ftp://x\"\n",
            "[dns]\nudp_workers = 0\n",
            "[dns]\nttl = 999999\n",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
