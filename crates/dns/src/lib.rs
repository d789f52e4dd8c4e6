//! Meridian's authoritative GeoDNS server. It answers from the routing snapshot: a reserved
//! domain resolves only to the PoPs (and dedicated IPs) its `resolves_to` allows, the nearest
//! healthy one first, located by EDNS Client Subnet or the resolver's address through a GeoIP
//! database. When every PoP of a pinned set is down it still answers inside the set, never
//! outside it.
//!
//! [`wire`] reads queries and writes replies, [`zone`] decides what a name is and what its
//! answer holds, [`select`] picks the PoP, [`geo`] and [`centroids`] locate clients,
//! [`health`] tracks which PoPs are alive and [`server`] runs UDP and TCP.

pub mod centroids;
pub mod geo;
pub mod health;
pub mod mmdb_writer;
pub mod select;
pub mod server;
pub mod wire;
pub mod zone;

pub use geo::GeoDb;
pub use health::HealthBoard;
pub use server::{DnsListeners, DnsService, serve};
pub use zone::{Authority, DEFAULT_TTL, ZoneConfig};
