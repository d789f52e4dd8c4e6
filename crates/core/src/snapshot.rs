//! The routing snapshot: an immutable value holding everything a PoP needs to serve traffic
//! (reserved domains and what they resolve to, reserved TCP addresses, agent credentials),
//! stamped with the store's version. The store builds a new one after every committed change;
//! readers hold an `Arc` to one and never see it change under them.

use std::collections::HashMap;

use crate::hostname::Hostname;
use crate::pop::{PopCode, PopSet};
use crate::resolution::{Resolution, resolve};
use crate::secret::SecretHash;
use crate::target::Target;

/// A reserved domain as the PoPs and the DNS server see it.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainRoute {
    /// `rd_…`.
    pub id: String,
    /// The owning account.
    pub account_id: String,
    /// The reserved name; may be a wildcard.
    pub hostname: Hostname,
    /// The list as stored.
    pub resolves_to: Vec<Target>,
    /// What the list means, computed once when the snapshot is built.
    pub resolution: Resolution,
    /// For a custom domain, the name under the platform's zone that its owner points a CNAME
    /// at; `None` for names under the platform's base domain.
    pub cname_target: Option<Hostname>,
}

impl DomainRoute {
    /// Builds a route, resolving its targets with [`resolve`].
    pub fn new(
        id: String,
        account_id: String,
        hostname: Hostname,
        resolves_to: Vec<Target>,
        cname_target: Option<Hostname>,
    ) -> Self {
        let resolution = resolve(&resolves_to);
        Self {
            id,
            account_id,
            hostname,
            resolves_to,
            resolution,
            cname_target,
        }
    }
}

/// A reserved TCP address: only its region's PoP listens on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrRoute {
    /// `ra_…`.
    pub id: String,
    /// The owning account.
    pub account_id: String,
    /// `host:port`, as agents send it in a TCP bind.
    pub addr: String,
    /// The PoP that serves it.
    pub region: PopCode,
}

/// An agent credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRoute {
    /// `cr_…`.
    pub id: String,
    /// The account the agent acts for.
    pub account_id: String,
    /// Bind rules (`bind:*.example.com`); empty means unrestricted.
    pub acl: Vec<String>,
}

/// Everything a PoP serves from, at one version of the store.
#[derive(Debug, Clone, Default)]
pub struct RoutingSnapshot {
    version: u64,
    domains: HashMap<Hostname, DomainRoute>,
    cname_targets: HashMap<Hostname, Hostname>,
    addrs: HashMap<String, AddrRoute>,
    credentials: HashMap<SecretHash, CredentialRoute>,
    drained: PopSet,
}

impl RoutingSnapshot {
    /// Assembles a snapshot. Later entries win on a duplicate key, which the store's unique
    /// constraints rule out anyway.
    pub fn new(
        version: u64,
        domains: impl IntoIterator<Item = DomainRoute>,
        addrs: impl IntoIterator<Item = AddrRoute>,
        credentials: impl IntoIterator<Item = (SecretHash, CredentialRoute)>,
    ) -> Self {
        let domains: HashMap<_, _> = domains
            .into_iter()
            .map(|d| (d.hostname.clone(), d))
            .collect();
        let cname_targets = domains
            .values()
            .filter_map(|d| Some((d.cname_target.clone()?, d.hostname.clone())))
            .collect();
        Self {
            version,
            domains,
            cname_targets,
            addrs: addrs.into_iter().map(|a| (a.addr.clone(), a)).collect(),
            credentials: credentials.into_iter().collect(),
            drained: PopSet::EMPTY,
        }
    }

    /// The same snapshot with these PoPs drained by the operator.
    pub fn with_drained(mut self, drained: PopSet) -> Self {
        self.drained = drained;
        self
    }

    /// The PoPs the operator has drained: DNS stops naming them while any other PoP of a
    /// domain's set is available.
    pub fn drained(&self) -> PopSet {
        self.drained
    }

    /// The store version this snapshot reflects; it only grows.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// How many domains are reserved.
    pub fn domain_count(&self) -> usize {
        self.domains.len()
    }

    /// The reservation that serves `host`: the exact name if reserved, else the closest
    /// wildcard above it (`*.example.com` serves `a.example.com` and `a.b.example.com`).
    pub fn domain(&self, host: &Hostname) -> Option<&DomainRoute> {
        self.domain_named(host.as_str())
    }

    /// [`Self::domain`] for a name that is already canonical (lower-case ASCII, no trailing
    /// dot) but not checked: an invalid name simply matches nothing.
    pub fn domain_named(&self, name: &str) -> Option<&DomainRoute> {
        if let Some(route) = self.domains.get(name) {
            return Some(route);
        }
        let mut wildcard = String::with_capacity(name.len() + 2);
        let mut rest = name;
        // A wildcard covers names below its parent, which has at least two labels.
        while let Some((_, parent)) = rest.split_once('.') {
            if !parent.contains('.') {
                break;
            }
            wildcard.clear();
            wildcard.push_str("*.");
            wildcard.push_str(parent);
            if let Some(route) = self.domains.get(wildcard.as_str()) {
                return Some(route);
            }
            rest = parent;
        }
        None
    }

    /// The domain reserved under exactly this name, wildcard or not.
    pub fn reserved_exactly(&self, name: &str) -> Option<&DomainRoute> {
        self.domains.get(name)
    }

    /// The custom domain whose CNAME target is `target`.
    pub fn domain_by_cname_target(&self, target: &Hostname) -> Option<&DomainRoute> {
        self.domain_by_cname_target_named(target.as_str())
    }

    /// [`Self::domain_by_cname_target`] for an unchecked canonical name.
    pub fn domain_by_cname_target_named(&self, target: &str) -> Option<&DomainRoute> {
        self.domains.get(self.cname_targets.get(target)?)
    }

    /// The reserved TCP address `addr` (`host:port`).
    pub fn addr(&self, addr: &str) -> Option<&AddrRoute> {
        self.addrs.get(addr)
    }

    /// The credential whose authtoken hashes to `hash`.
    pub fn credential(&self, hash: &SecretHash) -> Option<&CredentialRoute> {
        self.credentials.get(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, targets: &[&str]) -> DomainRoute {
        DomainRoute::new(
            format!("rd_{name}"),
            "ac_1".into(),
            Hostname::parse(name).unwrap(),
            crate::target::parse_targets(targets.iter().copied()).unwrap(),
            None,
        )
    }

    #[test]
    fn exact_names_win_over_wildcards() {
        let snap = RoutingSnapshot::new(
            7,
            [
                route("*.example.com", &["eu"]),
                route("api.example.com", &["jp"]),
            ],
            [],
            [],
        );
        let host = |s| Hostname::parse(s).unwrap();
        assert_eq!(snap.version(), 7);
        assert_eq!(
            snap.domain(&host("api.example.com")).unwrap().id,
            "rd_api.example.com"
        );
        assert_eq!(
            snap.domain(&host("a.b.example.com")).unwrap().id,
            "rd_*.example.com"
        );
        assert!(snap.domain(&host("example.com")).is_none());
        assert!(snap.domain(&host("other.test")).is_none());
        let pinned = snap.domain(&host("x.example.com")).unwrap();
        assert!(pinned.resolution.allows(PopCode::Eu));
        assert!(!pinned.resolution.allows(PopCode::Jp));
    }
}
