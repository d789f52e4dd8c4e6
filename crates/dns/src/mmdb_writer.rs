//! A small writer of MaxMind DB files (format 2.0), for the GeoIP databases that tests and
//! the DNS benchmark build for themselves: a few networks with a location or a country each.
//! Production data comes from elsewhere; this only has to be correct, not fast.

use std::collections::HashMap;
use std::net::IpAddr;

/// A value in the data section.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// UTF-8 string.
    Str(String),
    /// 64-bit float (GeoIP2 coordinates).
    F64(f64),
    /// 32-bit float (ip-location-db coordinates).
    F32(f32),
    /// Unsigned 16-bit integer.
    U16(u16),
    /// Unsigned 32-bit integer.
    U32(u32),
    /// Unsigned 64-bit integer.
    U64(u64),
    /// An array.
    Array(Vec<Self>),
    /// A map with string keys, in the given order.
    Map(Vec<(String, Self)>),
}

impl Value {
    /// A map from `(key, value)` pairs.
    pub fn map<const N: usize>(pairs: [(&str, Self); N]) -> Self {
        Self::Map(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    /// A string.
    pub fn str(s: &str) -> Self {
        Self::Str(s.to_owned())
    }

    /// A GeoIP2-City-shaped record: continent, country and location, which is what gdnsd and
    /// Meridian both read.
    pub fn city(continent: &str, country: &str, latitude: f64, longitude: f64) -> Self {
        Self::map([
            ("continent", Self::map([("code", Self::str(continent))])),
            ("country", Self::map([("iso_code", Self::str(country))])),
            (
                "location",
                Self::map([
                    ("latitude", Self::F64(latitude)),
                    ("longitude", Self::F64(longitude)),
                    ("accuracy_radius", Self::U32(100)),
                ]),
            ),
        ])
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Str(s) => {
                control(out, 2, s.len());
                out.extend_from_slice(s.as_bytes());
            }
            Self::F64(v) => {
                control(out, 3, 8);
                out.extend_from_slice(&v.to_be_bytes());
            }
            Self::F32(v) => {
                control(out, 15, 4);
                out.extend_from_slice(&v.to_be_bytes());
            }
            Self::U16(v) => uint(out, 5, &v.to_be_bytes()),
            Self::U32(v) => uint(out, 6, &v.to_be_bytes()),
            Self::U64(v) => uint(out, 9, &v.to_be_bytes()),
            Self::Array(items) => {
                control(out, 11, items.len());
                for item in items {
                    item.encode(out);
                }
            }
            Self::Map(pairs) => {
                control(out, 7, pairs.len());
                for (key, value) in pairs {
                    Self::Str(key.clone()).encode(out);
                    value.encode(out);
                }
            }
        }
    }
}

/// An unsigned integer in as few bytes as it needs.
fn uint(out: &mut Vec<u8>, type_num: u8, bytes: &[u8]) {
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    control(out, type_num, bytes.len() - skip);
    out.extend_from_slice(&bytes[skip..]);
}

/// A control byte (type and size), with the extended-type byte and size bytes it needs.
fn control(out: &mut Vec<u8>, type_num: u8, size: usize) {
    let (head, extended) = if type_num <= 7 {
        (type_num << 5, None)
    } else {
        (0, Some(type_num - 7))
    };
    let (size_bits, extra): (u8, Vec<u8>) = match size {
        0..29 => (size as u8, vec![]),
        29..285 => (29, vec![(size - 29) as u8]),
        285..65_821 => (30, ((size - 285) as u16).to_be_bytes().to_vec()),
        _ => (31, ((size - 65_821) as u32).to_be_bytes()[1..].to_vec()),
    };
    out.push(head | size_bits);
    out.extend(extended);
    out.extend(extra);
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Child {
    Empty,
    Node(u32),
    Data(u32),
}

/// Builds an IPv6 database (IPv4 networks live at `::/96`, as MaxMind's readers expect).
#[derive(Debug)]
pub struct MmdbWriter {
    database_type: String,
    nodes: Vec<[Child; 2]>,
    data: Vec<u8>,
    offsets: HashMap<Vec<u8>, u32>,
}

impl MmdbWriter {
    /// An empty database whose metadata calls it `database_type` (gdnsd wants "City" in the
    /// name of a database it reads coordinates from).
    pub fn new(database_type: &str) -> Self {
        Self {
            database_type: database_type.to_owned(),
            nodes: vec![[Child::Empty; 2]],
            data: Vec::new(),
            offsets: HashMap::new(),
        }
    }

    /// Maps `addr/prefix` to `value`. A network inserted after a larger one containing it
    /// overrides it for its own addresses only.
    pub fn insert(&mut self, addr: IpAddr, prefix: u8, value: &Value) -> &mut Self {
        let (bits, len) = match addr {
            IpAddr::V4(ip) => (u128::from(u32::from(ip)), 96 + u32::from(prefix.min(32))),
            IpAddr::V6(ip) => (u128::from(ip), u32::from(prefix.min(128))),
        };
        assert!(len > 0, "the whole address space cannot be one network");
        let data = self.intern(value);
        let mut node = 0usize;
        for depth in 0..len {
            let bit = ((bits >> (127 - depth)) & 1) as usize;
            if depth == len - 1 {
                self.nodes[node][bit] = Child::Data(data);
                break;
            }
            node = match self.nodes[node][bit] {
                Child::Node(next) => next as usize,
                other => {
                    // A larger network ends here: split it so both halves keep its data.
                    let next = self.nodes.len();
                    self.nodes.push([other; 2]);
                    self.nodes[node][bit] = Child::Node(next as u32);
                    next
                }
            };
        }
        self
    }

    fn intern(&mut self, value: &Value) -> u32 {
        let mut bytes = Vec::new();
        value.encode(&mut bytes);
        if let Some(&offset) = self.offsets.get(&bytes) {
            return offset;
        }
        let offset = self.data.len() as u32;
        self.data.extend_from_slice(&bytes);
        self.offsets.insert(bytes, offset);
        offset
    }

    /// The finished file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let count = self.nodes.len() as u32;
        let record = |child: Child| match child {
            Child::Empty => count,
            Child::Node(n) => n,
            Child::Data(offset) => count + 16 + offset,
        };
        let mut out = Vec::with_capacity(self.nodes.len() * 8 + self.data.len() + 256);
        for [left, right] in &self.nodes {
            out.extend_from_slice(&record(*left).to_be_bytes());
            out.extend_from_slice(&record(*right).to_be_bytes());
        }
        out.extend_from_slice(&[0; 16]);
        out.extend_from_slice(&self.data);
        out.extend_from_slice(b"\xab\xcd\xefMaxMind.com");
        let metadata = Value::Map(vec![
            ("binary_format_major_version".into(), Value::U16(2)),
            ("binary_format_minor_version".into(), Value::U16(0)),
            // libmaxminddb refuses a database whose build time is zero.
            ("build_epoch".into(), Value::U64(build_epoch())),
            (
                "database_type".into(),
                Value::Str(self.database_type.clone()),
            ),
            (
                "description".into(),
                Value::map([("en", Value::str("written by meridian-dns"))]),
            ),
            ("ip_version".into(), Value::U16(6)),
            ("languages".into(), Value::Array(vec![])),
            ("node_count".into(), Value::U32(count)),
            ("record_size".into(), Value::U16(32)),
        ]);
        metadata.encode(&mut out);
        out
    }
}

fn build_epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::GeoDb;

    #[test]
    fn written_databases_read_back() {
        let mut w = MmdbWriter::new("Test-City");
        w.insert(
            "203.0.113.0".parse().unwrap(),
            24,
            &Value::city("AS", "JP", 35.7, 139.7),
        )
        .insert(
            "203.0.113.128".parse().unwrap(),
            25,
            &Value::map([("country_code", Value::str("DE"))]),
        )
        .insert(
            "2001:db8::".parse().unwrap(),
            32,
            &Value::map([
                ("latitude", Value::F32(-33.9)),
                ("longitude", Value::F32(151.2)),
            ]),
        );
        let bytes: &'static [u8] = Box::leak(w.to_bytes().into_boxed_slice());
        let db = GeoDb::from_static(bytes, "test").unwrap();

        let tokyo = db.locate("203.0.113.5".parse().unwrap());
        assert_eq!(tokyo.prefix, 25, "the /24 was split by the /25");
        let p = tokyo.point.unwrap();
        assert!((p.latitude - 35.7).abs() < 1e-9 && (p.longitude - 139.7).abs() < 1e-9);

        let germany = db.locate("203.0.113.200".parse().unwrap()).point.unwrap();
        assert!((germany.latitude - 51.2).abs() < 0.01, "country centroid");

        let sydney = db.locate("2001:db8::1".parse().unwrap());
        assert_eq!(sydney.prefix, 32);
        assert!((sydney.point.unwrap().latitude + 33.9).abs() < 1e-5);

        let nowhere = db.locate("198.51.100.1".parse().unwrap());
        assert!(nowhere.point.is_none());
    }
}
