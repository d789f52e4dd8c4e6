//! Meridian's domain model, shared by every other crate and free of I/O: no sockets, no files,
//! no clock, no randomness (callers pass time and random bytes in).
//!
//! # Layout
//! - [`pop`]: the PoP catalog, [`PopSite`] and [`PopSet`].
//! - [`target`]: parsing `resolves_to` values (PoP codes, aliases, dedicated IPs).
//! - [`resolution`]: [`resolve`], the one function that says what a domain resolves to.
//! - [`hostname`]: reservable hostnames, wildcards and IDNA.
//! - [`id`]: time-sortable, prefixed object ids.
//! - [`secret`]: secrets and the hashes they are stored by.
//! - [`certificate`]: the certificate management policy of a domain.
//! - [`snapshot`]: the routing snapshot every PoP serves from.
//! - [`time`]: API timestamps.
#![warn(missing_docs)]

pub mod certificate;
pub mod hostname;
pub mod id;
pub mod pop;
pub mod resolution;
pub mod secret;
pub mod snapshot;
pub mod target;
pub mod time;

pub use hostname::{Hostname, HostnameError};
pub use pop::{PopCode, PopSet, PopSite};
pub use resolution::{Resolution, resolve};
pub use snapshot::RoutingSnapshot;
pub use target::{Alias, InvalidTarget, IpTarget, Target};
