//! The authoritative logic: which zone a name is in, and what the answer holds.
//!
//! Zones: the platform's base domain (every reserved name under it, the CNAME targets of
//! custom domains, the PoPs' TCP hosts and the name server's own name) and every reserved
//! custom domain, directly, so one machine can be tested end to end without delegation.
//! Addresses come from [`meridian_core::resolve`]'s resolution through [`crate::select`];
//! nothing here can name a PoP outside a domain's set.

use std::collections::HashMap;
use std::net::IpAddr;

use meridian_core::snapshot::DomainRoute;
use meridian_core::{Hostname, PopCode, PopSet, RoutingSnapshot};

use crate::geo::{GeoCache, GeoDb};
use crate::select::{choose, depends_on_client};
use crate::wire::{
    self, HEADER_LEN, RData, Rcode, ReplyOpt, ReplyWriter, Section, Soa, WireError, rtype,
};

/// The default TTL of every answer, and the negative-caching time: short, so a PATCH to
/// `resolves_to` or a drained PoP reaches users within half a minute even through caches.
pub const DEFAULT_TTL: u32 = 30;

/// What the zones are made of, fixed for the server's life.
#[derive(Debug, Clone)]
pub struct ZoneConfig {
    /// The platform's zone.
    pub base_domain: Hostname,
    /// The addresses each PoP is reached on, by catalog position.
    pub pop_addresses: [Vec<IpAddr>; 8],
    /// The host of each PoP's reserved TCP addresses (`eu.tcp.<base>`); it resolves to that
    /// PoP only.
    pub tcp_hosts: Vec<(Hostname, PopCode)>,
    /// Where this name server is reached, answered for `ns1.<base>`.
    pub ns_addresses: Vec<IpAddr>,
    /// TTL of answers and of negative answers.
    pub ttl: u32,
}

/// Answers queries from a routing snapshot.
#[derive(Debug)]
pub struct Authority {
    base: String,
    base_labels: usize,
    ns_name: String,
    hostmaster: String,
    pop_addresses: [Vec<IpAddr>; 8],
    tcp_hosts: HashMap<String, PopCode>,
    ns_addresses: Vec<IpAddr>,
    ttl: u32,
    geo: Option<GeoDb>,
}

/// Where a query came from and how it travelled.
#[derive(Debug, Clone, Copy)]
pub struct Asker {
    /// The resolver's (or client's) address.
    pub addr: IpAddr,
    /// UDP answers are bounded by the asker's EDNS size; TCP ones are not.
    pub udp: bool,
}

/// A worker's reusable state: the lower-cased query name and its GeoIP cache.
#[derive(Debug, Default)]
pub struct Scratch {
    name: String,
    geo: GeoCache,
}

/// What a name is, inside our zones.
enum Node<'s> {
    /// Not in any zone of ours.
    Outside,
    /// In a zone, but no such name: NXDOMAIN.
    Missing,
    /// A name that exists with no records of its own (`tcp.<base>`): NODATA.
    Empty,
    /// The base domain's apex.
    BaseApex,
    /// `ns1.<base>`.
    NameServer,
    /// A PoP's TCP host.
    TcpHost(PopCode),
    /// A reserved name (or a name a wildcard covers, or a CNAME target).
    Domain {
        route: &'s DomainRoute,
        /// Whether the name is the apex of the domain's own zone (a custom domain asked for
        /// directly), which also holds SOA, NS and the CNAME.
        apex: bool,
    },
}

impl Authority {
    /// Prepares the zones; `geo` locates clients (without it, every client is unlocated).
    pub fn new(config: ZoneConfig, geo: Option<GeoDb>) -> Self {
        let base = config.base_domain.as_str().to_owned();
        Self {
            base_labels: base.split('.').count(),
            ns_name: format!("ns1.{base}"),
            hostmaster: format!("hostmaster.{base}"),
            pop_addresses: config.pop_addresses,
            tcp_hosts: config
                .tcp_hosts
                .into_iter()
                .map(|(host, pop)| (host.as_str().to_owned(), pop))
                .collect(),
            ns_addresses: config.ns_addresses,
            ttl: config.ttl,
            geo,
            base,
        }
    }

    /// Writes the reply to `msg` into `out`; returns false when nothing should be sent (a
    /// runt or a response).
    pub fn answer(
        &self,
        msg: &[u8],
        asker: Asker,
        snapshot: &RoutingSnapshot,
        live: PopSet,
        out: &mut Vec<u8>,
        scratch: &mut Scratch,
    ) -> bool {
        let Ok(header) = wire::header(msg) else {
            return false;
        };
        let query = match wire::parse_query(msg) {
            Ok(query) => query,
            Err(error) => {
                let (rcode, opt) = match error {
                    WireError::Opcode(_) => (Rcode::NotImp, None),
                    WireError::EdnsVersion(_) => (Rcode::BadVers, Some(ReplyOpt::default())),
                    _ => (Rcode::FormErr, None),
                };
                let w = ReplyWriter::new(out, header, false, None);
                w.finish(rcode, opt, wire::CLASSIC_UDP_SIZE);
                return true;
            }
        };
        let limit = match (asker.udp, query.edns) {
            (false, _) => wire::MAX_MESSAGE,
            (true, None) => wire::CLASSIC_UDP_SIZE,
            (true, Some(edns)) => usize::from(edns.udp_size.clamp(512, wire::MAX_UDP_SIZE)),
        };
        let subnet = query.edns.and_then(|e| e.client_subnet);
        let mut opt = query.edns.map(|_| ReplyOpt {
            // Until an answer depends on the client, it is valid for everyone: scope 0.
            client_subnet: subnet.map(|s| (s, 0)),
        });

        let refused = |out: &mut Vec<u8>, opt| {
            let w = ReplyWriter::new(out, header, false, Some(query.question));
            w.finish(Rcode::Refused, opt, limit);
            true
        };
        let labels = match wire::name_to_lower(query.name_wire(), &mut scratch.name) {
            Some(labels)
                if query.qclass == wire::CLASS_IN
                    && !matches!(query.qtype, rtype::AXFR | rtype::IXFR) =>
            {
                labels
            }
            _ => return refused(out, opt),
        };
        let (node, apex_labels) = self.find(&scratch.name, labels, snapshot);
        if let Node::Outside = node {
            return refused(out, opt);
        }
        let Some(apex_at) = wire::suffix_offset(query.name_wire(), labels, apex_labels) else {
            return refused(out, opt);
        };
        let apex_owner = HEADER_LEN + apex_at;
        let mut w = ReplyWriter::new(out, header, true, Some(query.question));
        let mut answers = 0;
        let mut address = |w: &mut ReplyWriter<'_>, ip: IpAddr| {
            match (ip, query.qtype) {
                (IpAddr::V4(v4), rtype::A | rtype::ANY) => {
                    w.record(Section::Answer, HEADER_LEN, self.ttl, &RData::A(v4));
                }
                (IpAddr::V6(v6), rtype::AAAA | rtype::ANY) => {
                    w.record(Section::Answer, HEADER_LEN, self.ttl, &RData::Aaaa(v6));
                }
                _ => return,
            }
            answers += 1;
        };
        let mut rcode = Rcode::NoError;
        match node {
            Node::Outside => unreachable!("refused above"),
            Node::Missing => rcode = Rcode::NxDomain,
            Node::Empty => {}
            Node::BaseApex => {}
            Node::NameServer => {
                for &ip in &self.ns_addresses {
                    address(&mut w, ip);
                }
            }
            Node::TcpHost(pop) => {
                for &ip in &self.pop_addresses[pop.index()] {
                    address(&mut w, ip);
                }
            }
            Node::Domain { route, apex } => {
                let is_cname_query = query.qtype == rtype::CNAME;
                if apex
                    && is_cname_query
                    && let Some(target) = &route.cname_target
                {
                    w.record(
                        Section::Answer,
                        HEADER_LEN,
                        self.ttl,
                        &RData::Cname(target.as_str()),
                    );
                    answers += 1;
                } else if matches!(query.qtype, rtype::A | rtype::AAAA | rtype::ANY) {
                    let resolution = &route.resolution;
                    let up = live.difference(snapshot.drained());
                    let mut place = None;
                    if depends_on_client(resolution.pops(), up)
                        && let Some(geo) = &self.geo
                    {
                        let (addr, source_prefix) = match subnet {
                            Some(s) if s.source_prefix > 0 => (s.addr, Some(s.source_prefix)),
                            _ => (asker.addr, None),
                        };
                        let (found, prefix) = geo.place(addr, &mut scratch.geo);
                        place = found;
                        if let (Some(source), Some(opt)) = (source_prefix, opt.as_mut()) {
                            opt.client_subnet = subnet.map(|s| (s, prefix.min(source)));
                        }
                    }
                    if let Some(pop) = choose(resolution.pops(), up, place) {
                        for &ip in &self.pop_addresses[pop.index()] {
                            address(&mut w, ip);
                        }
                    }
                    for target in resolution.dedicated_ips() {
                        address(&mut w, target.ip);
                    }
                }
            }
        }
        // The apex records, asked for by type, at whichever apex this zone has.
        let at_apex = matches!(node, Node::BaseApex | Node::Domain { apex: true, .. });
        if at_apex && matches!(query.qtype, rtype::SOA | rtype::NS) {
            let data = if query.qtype == rtype::SOA {
                RData::Soa(self.soa(snapshot))
            } else {
                RData::Ns(&self.ns_name)
            };
            w.record(Section::Answer, apex_owner, self.ttl, &data);
            answers += 1;
        }
        if answers == 0 {
            // NXDOMAIN or NODATA: the SOA tells resolvers how long to remember it (RFC 2308).
            w.record(
                Section::Authority,
                apex_owner,
                self.ttl,
                &RData::Soa(self.soa(snapshot)),
            );
        }
        w.finish(rcode, opt, limit);
        true
    }

    fn soa(&self, snapshot: &RoutingSnapshot) -> Soa<'_> {
        Soa {
            mname: &self.ns_name,
            rname: &self.hostmaster,
            // The snapshot version only grows; its low 32 bits make a serial that does too,
            // in RFC 1982 arithmetic.
            serial: snapshot.version() as u32,
            refresh: 3600,
            retry: 600,
            expire: 86_400,
            minimum: self.ttl,
        }
    }

    /// Finds what `name` (of `labels` labels) is and how many labels its zone's apex has.
    fn find<'s>(
        &self,
        name: &str,
        labels: usize,
        snapshot: &'s RoutingSnapshot,
    ) -> (Node<'s>, usize) {
        let in_base = name == self.base
            || name
                .strip_suffix(self.base.as_str())
                .is_some_and(|head| head.ends_with('.'));
        if in_base {
            let node = if name == self.base {
                Node::BaseApex
            } else if name == self.ns_name {
                Node::NameServer
            } else if let Some(&pop) = self.tcp_hosts.get(name) {
                Node::TcpHost(pop)
            } else if let Some(route) = snapshot
                .domain_named(name)
                .or_else(|| snapshot.domain_by_cname_target_named(name))
            {
                Node::Domain { route, apex: false }
            } else if self.is_empty_non_terminal(name, labels) {
                Node::Empty
            } else {
                Node::Missing
            };
            return (node, self.base_labels);
        }
        if let Some(route) = snapshot.domain_named(name) {
            let host = route.hostname.as_str();
            let apex = host == name;
            let zone_labels = host.split('.').count() - usize::from(route.hostname.is_wildcard());
            return (Node::Domain { route, apex }, zone_labels);
        }
        // Below a custom domain reserved without a wildcard: that zone has no such name.
        let mut rest = name;
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(route) = snapshot.reserved_exactly(parent)
                && !route.hostname.is_wildcard()
            {
                return (Node::Missing, parent.split('.').count());
            }
            rest = parent;
        }
        (Node::Outside, 0)
    }

    /// Names under the base domain that exist only because names below them do:
    /// `cname.<base>`, `tcp.<base>` and the parents of TCP hosts.
    fn is_empty_non_terminal(&self, name: &str, labels: usize) -> bool {
        if labels != self.base_labels + 1 {
            return self
                .tcp_hosts
                .keys()
                .any(|host| host.strip_suffix(name).is_some_and(|h| h.ends_with('.')));
        }
        let first = name.split('.').next().unwrap_or_default();
        matches!(first, "cname" | "tcp")
            || self
                .tcp_hosts
                .keys()
                .any(|host| host.strip_suffix(name).is_some_and(|h| h.ends_with('.')))
    }
}
