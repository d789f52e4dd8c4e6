//! Locating a DNS client: a MaxMind-format database (`maxminddb`) turns an address into a
//! point on the globe, and great-circle distance ranks PoPs from that point.
//!
//! Three database shapes are understood, so the operator can bring whichever they have:
//! GeoIP2/GeoLite2 City (`location.latitude`), ip-location-db City (flat `latitude`, stored as
//! 32-bit floats) and the country-only ones (`country.iso_code` or a flat `country_code`),
//! placed at the country's centre from [`crate::centroids`].

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::centroids::centroid;

/// A point on the globe, in degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Degrees north.
    pub latitude: f64,
    /// Degrees east.
    pub longitude: f64,
}

/// The mean Earth radius, in kilometres.
const EARTH_RADIUS_KM: f64 = 6371.0;

impl Point {
    /// Great-circle distance in kilometres (haversine), correct across the antimeridian and
    /// near the poles, where planar degree arithmetic is not.
    pub fn distance_km(self, other: Self) -> f64 {
        let (lat1, lat2) = (self.latitude.to_radians(), other.latitude.to_radians());
        let dlat = lat2 - lat1;
        let dlon = (other.longitude - self.longitude).to_radians();
        let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
    }
}

/// A point as a unit vector from the Earth's centre. Ranking by great-circle distance is then
/// ranking by dot product (larger is nearer), with no trigonometry per comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Place([f64; 3]);

impl Place {
    /// How close `other` is: the cosine of the central angle between the two, from -1
    /// (antipodes) to 1 (the same place).
    pub fn closeness(self, other: Self) -> f64 {
        let ([a, b, c], [x, y, z]) = (self.0, other.0);
        a * x + b * y + c * z
    }
}

impl From<Point> for Place {
    fn from(p: Point) -> Self {
        let (lat, lon) = (p.latitude.to_radians(), p.longitude.to_radians());
        Self([lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()])
    }
}

/// What each DNS worker remembers of the database: answers by address (resolvers send the
/// same Client Subnets again and again, so most queries cost one map probe) and decoded records
/// by their offset (many networks share a record: every address of a country does).
#[derive(Debug, Default)]
pub struct GeoCache {
    by_addr: HashMap<IpAddr, (Option<Place>, u8)>,
    by_record: HashMap<usize, Option<Place>>,
}

/// Entries a [`GeoCache`] map holds before it starts over, bounding a worker's memory.
const GEO_CACHE_ENTRIES: usize = 65_536;

/// Where an address is, and how far that knowledge extends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Located {
    /// The point, if the database places the address anywhere.
    pub point: Option<Point>,
    /// The prefix length of the database network holding the address: every address in it
    /// gets the same answer, which is what an ECS reply's scope says.
    pub prefix: u8,
}

/// Why a GeoIP database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    /// The file could not be read.
    #[error("reading GeoIP database {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The bytes are not a MaxMind DB.
    #[error("GeoIP database {path} is not a valid MaxMind DB: {source}")]
    Format {
        /// The path given, or `(built in)`.
        path: String,
        /// What the reader said.
        source: maxminddb::MaxMindDbError,
    },
}

/// The database's bytes: built into the binary or read from a file.
#[derive(Debug)]
enum Bytes {
    Static(&'static [u8]),
    Owned(Vec<u8>),
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        match self {
            Self::Static(bytes) => bytes,
            Self::Owned(bytes) => bytes,
        }
    }
}

/// A GeoIP database, read-only and shared by every DNS worker.
pub struct GeoDb {
    reader: maxminddb::Reader<Bytes>,
    description: String,
}

impl fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeoDb")
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

impl GeoDb {
    /// Reads a database file into memory.
    pub fn open(path: &Path) -> Result<Self, GeoError> {
        let bytes = std::fs::read(path).map_err(|source| GeoError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::new(Bytes::Owned(bytes), &path.display().to_string())
    }

    /// Uses a database compiled into the program.
    pub fn from_static(bytes: &'static [u8], name: &str) -> Result<Self, GeoError> {
        Self::new(Bytes::Static(bytes), name)
    }

    fn new(bytes: Bytes, name: &str) -> Result<Self, GeoError> {
        let reader = maxminddb::Reader::from_source(bytes).map_err(|source| GeoError::Format {
            path: name.to_owned(),
            source,
        })?;
        let meta = reader.metadata();
        let description = format!(
            "{name} ({}, IPv{}, {} nodes)",
            meta.database_type, meta.ip_version, meta.node_count
        );
        Ok(Self {
            reader,
            description,
        })
    }

    /// What the database is, for logs.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Where `addr` is. A miss, an IPv6 address in an IPv4-only database and a damaged record
    /// all come back as "nowhere": an unlocatable client is normal, not an error.
    pub fn locate(&self, addr: IpAddr) -> Located {
        let Ok(found) = self.reader.lookup(addr) else {
            return Located {
                point: None,
                prefix: 0,
            };
        };
        let prefix = found.network().map_or(0, |net| net.prefix());
        let point = found
            .decode::<Record<'_>>()
            .ok()
            .flatten()
            .and_then(|record| record.point());
        Located { point, prefix }
    }
}

impl GeoDb {
    /// [`Self::locate`] as a [`Place`], through the worker's cache; the prefix is the
    /// database network's, as there.
    pub fn place(&self, addr: IpAddr, cache: &mut GeoCache) -> (Option<Place>, u8) {
        if let Some(&known) = cache.by_addr.get(&addr) {
            return known;
        }
        let found = self.place_uncached_by_addr(addr, &mut cache.by_record);
        if cache.by_addr.len() >= GEO_CACHE_ENTRIES {
            cache.by_addr.clear();
        }
        cache.by_addr.insert(addr, found);
        found
    }

    fn place_uncached_by_addr(
        &self,
        addr: IpAddr,
        by_record: &mut HashMap<usize, Option<Place>>,
    ) -> (Option<Place>, u8) {
        let Ok(found) = self.reader.lookup(addr) else {
            return (None, 0);
        };
        let prefix = found.network().map_or(0, |net| net.prefix());
        let Some(offset) = found.offset() else {
            return (None, prefix);
        };
        if let Some(place) = by_record.get(&offset) {
            return (*place, prefix);
        }
        let place = found
            .decode::<Record<'_>>()
            .ok()
            .flatten()
            .and_then(|record| record.point())
            .map(Place::from);
        if by_record.len() >= GEO_CACHE_ENTRIES {
            by_record.clear();
        }
        by_record.insert(offset, place);
        (place, prefix)
    }
}

/// The fields any of the understood shapes may hold; everything else is skipped.
#[derive(Deserialize)]
struct Record<'a> {
    location: Option<NestedLocation>,
    latitude: Option<Degrees>,
    longitude: Option<Degrees>,
    #[serde(borrow)]
    country: Option<NestedCountry<'a>>,
    #[serde(borrow)]
    country_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct NestedLocation {
    latitude: Option<Degrees>,
    longitude: Option<Degrees>,
}

#[derive(Deserialize)]
struct NestedCountry<'a> {
    #[serde(borrow)]
    iso_code: Option<&'a str>,
}

impl Record<'_> {
    fn point(&self) -> Option<Point> {
        let coordinates = |lat: &Option<Degrees>, lon: &Option<Degrees>| match (lat, lon) {
            (Some(lat), Some(lon)) => Some(Point {
                latitude: lat.0,
                longitude: lon.0,
            }),
            _ => None,
        };
        let nested = self
            .location
            .as_ref()
            .and_then(|l| coordinates(&l.latitude, &l.longitude));
        let code = self
            .country
            .as_ref()
            .and_then(|c| c.iso_code)
            .or(self.country_code);
        nested
            .or_else(|| coordinates(&self.latitude, &self.longitude))
            .or_else(|| {
                let (latitude, longitude) = centroid(code?)?;
                Some(Point {
                    latitude,
                    longitude,
                })
            })
    }
}

/// Degrees stored as either a double (GeoIP2) or a float (ip-location-db).
struct Degrees(f64);

impl<'de> Deserialize<'de> for Degrees {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AnyFloat;
        impl Visitor<'_> for AnyFloat {
            type Value = Degrees;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of degrees")
            }
            fn visit_f32<E: de::Error>(self, v: f32) -> Result<Degrees, E> {
                Ok(Degrees(f64::from(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Degrees, E> {
                Ok(Degrees(v))
            }
        }
        deserializer.deserialize_any(AnyFloat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        let frankfurt = Point {
            latitude: 50.11,
            longitude: 8.68,
        };
        let tokyo = Point {
            latitude: 35.68,
            longitude: 139.69,
        };
        let d = frankfurt.distance_km(tokyo);
        assert!((9300.0..9400.0).contains(&d), "{d}");
        // Across the antimeridian: Fiji to Samoa is ~1,150 km, not most of the globe.
        let fiji = Point {
            latitude: -17.7,
            longitude: 178.1,
        };
        let samoa = Point {
            latitude: -13.8,
            longitude: -172.1,
        };
        assert!(fiji.distance_km(samoa) < 1200.0);
        assert_eq!(tokyo.distance_km(tokyo), 0.0);
    }
}
