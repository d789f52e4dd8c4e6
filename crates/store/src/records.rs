//! The objects the store keeps, as rows and as Rust values, and the generic per-account
//! reads (get, list a page, delete) that every kind of object shares.

use meridian_core::certificate::CertificatePolicy;
use meridian_core::id::IdKind;
use meridian_core::target::{Target, parse_targets};
use meridian_core::{Hostname, PopCode};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::StoreError;

/// A reserved domain.
#[derive(Debug, Clone, PartialEq)]
pub struct ReservedDomain {
    /// `rd_…`.
    pub id: String,
    /// The owning account.
    pub account_id: String,
    /// The reserved name.
    pub domain: Hostname,
    /// Free text.
    pub description: String,
    /// Free machine-readable text.
    pub metadata: String,
    /// The PoPs and IPs the domain is pinned to; empty means global.
    pub resolves_to: Vec<Target>,
    /// How its certificate should be managed, if at all.
    pub certificate_policy: Option<CertificatePolicy>,
    /// For custom domains, the name to point a CNAME at.
    pub cname_target: Option<Hostname>,
    /// Unix seconds.
    pub created_at: i64,
}

/// What a new reserved domain is made of.
#[derive(Debug, Clone)]
pub struct NewDomain {
    /// The name to reserve.
    pub domain: Hostname,
    /// Free text.
    pub description: String,
    /// Free machine-readable text.
    pub metadata: String,
    /// Pinning; empty means global.
    pub resolves_to: Vec<Target>,
    /// Certificate management.
    pub certificate_policy: Option<CertificatePolicy>,
    /// CNAME target for a custom domain.
    pub cname_target: Option<Hostname>,
}

/// A change to a reserved domain: `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct DomainChanges {
    /// New description.
    pub description: Option<String>,
    /// New metadata.
    pub metadata: Option<String>,
    /// New pinning; `Some(vec![])` un-pins.
    pub resolves_to: Option<Vec<Target>>,
    /// New policy; `Some(None)` removes it.
    pub certificate_policy: Option<Option<CertificatePolicy>>,
}

/// A reserved TCP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedAddr {
    /// `ra_…`.
    pub id: String,
    /// The owning account.
    pub account_id: String,
    /// `host:port`.
    pub addr: String,
    /// The PoP that serves it; fixed for the address's life.
    pub region: PopCode,
    /// Free text.
    pub description: String,
    /// Free machine-readable text.
    pub metadata: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// Where a region hands out TCP addresses: one host name and a range of ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrPool {
    /// The host part of every address, e.g. `eu.tcp.meridian.test`.
    pub host: String,
    /// Lowest port handed out.
    pub first_port: u16,
    /// Highest port handed out.
    pub last_port: u16,
}

/// An agent credential. The token itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// `cr_…`.
    pub id: String,
    /// The account agents using it act for.
    pub account_id: String,
    /// Free text.
    pub description: String,
    /// Free machine-readable text.
    pub metadata: String,
    /// Bind rules; empty means unrestricted.
    pub acl: Vec<String>,
    /// Unix seconds.
    pub created_at: i64,
}

/// One page of a newest-first listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// At most the requested number of items, newest first.
    pub items: Vec<T>,
    /// Whether older items exist past the last one.
    pub has_more: bool,
}

/// A kind of per-account object: where it lives and how a row becomes a value.
pub trait Record: Sized + Send + Unpin {
    /// Its id prefix.
    const KIND: IdKind;
    /// Its table.
    const TABLE: &'static str;
    /// The columns `from_row` reads.
    const COLUMNS: &'static str;
    /// Decodes one row.
    fn from_row(row: &AnyRow) -> Result<Self, StoreError>;
}

fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {detail}"))
}

impl Record for ReservedDomain {
    const KIND: IdKind = IdKind::ReservedDomain;
    const TABLE: &'static str = "reserved_domains";
    const COLUMNS: &'static str = "id, account_id, domain, description, metadata, resolves_to, \
                                   cert_authority, cert_key_type, cname_target, created_at";

    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        let domain: String = row.try_get("domain")?;
        let resolves_to: String = row.try_get("resolves_to")?;
        let authority: Option<String> = row.try_get("cert_authority")?;
        let key_type: Option<String> = row.try_get("cert_key_type")?;
        let cname_target: Option<String> = row.try_get("cname_target")?;
        Ok(Self {
            id: row.try_get("id")?,
            account_id: row.try_get("account_id")?,
            domain: Hostname::parse(&domain).map_err(|e| corrupt("domain", e))?,
            description: row.try_get("description")?,
            metadata: row.try_get("metadata")?,
            resolves_to: decode_targets(&resolves_to)?,
            certificate_policy: match (authority, key_type) {
                (Some(a), Some(k)) => {
                    Some(CertificatePolicy::parse(&a, &k).map_err(|e| corrupt("policy", e))?)
                }
                _ => None,
            },
            cname_target: cname_target
                .map(|t| Hostname::parse(&t).map_err(|e| corrupt("cname_target", e)))
                .transpose()?,
            created_at: row.try_get("created_at")?,
        })
    }
}

impl Record for ReservedAddr {
    const KIND: IdKind = IdKind::ReservedAddr;
    const TABLE: &'static str = "reserved_addrs";
    const COLUMNS: &'static str = "id, account_id, addr, region, description, metadata, created_at";

    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        let region: String = row.try_get("region")?;
        Ok(Self {
            id: row.try_get("id")?,
            account_id: row.try_get("account_id")?,
            addr: row.try_get("addr")?,
            region: region.parse().map_err(|e| corrupt("region", e))?,
            description: row.try_get("description")?,
            metadata: row.try_get("metadata")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

impl Record for Credential {
    const KIND: IdKind = IdKind::Credential;
    const TABLE: &'static str = "credentials";
    const COLUMNS: &'static str = "id, account_id, description, metadata, acl, created_at";

    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        let acl: String = row.try_get("acl")?;
        Ok(Self {
            id: row.try_get("id")?,
            account_id: row.try_get("account_id")?,
            description: row.try_get("description")?,
            metadata: row.try_get("metadata")?,
            acl: serde_json::from_str(&acl).map_err(|e| corrupt("acl", e))?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// `resolves_to` is stored as a JSON array of canonical value strings.
pub(crate) fn encode_targets(targets: &[Target]) -> String {
    let values: Vec<String> = targets.iter().map(Target::to_string).collect();
    serde_json::Value::from(values).to_string()
}

pub(crate) fn decode_targets(json: &str) -> Result<Vec<Target>, StoreError> {
    let values: Vec<String> = serde_json::from_str(json).map_err(|e| corrupt("resolves_to", e))?;
    parse_targets(values.iter().map(String::as_str)).map_err(|e| corrupt("resolves_to", e))
}
