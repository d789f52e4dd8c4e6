//! Writes the DNS benchmark's GeoIP database, GeoIP2-City-shaped so that Meridian, gdnsd and
//! Knot all read the same data: `write_geoip OUT.mmdb`. Networks are documentation ranges:
//! 198.51.100.0/24 in Frankfurt, 203.0.113.0/24 in Tokyo, 192.0.2.0/24 in San Jose.

use meridian_dns::mmdb_writer::{MmdbWriter, Value};

fn main() -> std::io::Result<()> {
    let out = std::env::args()
        .nth(1)
        .expect("usage: write_geoip OUT.mmdb");
    let mut w = MmdbWriter::new("GeoIP2-City");
    w.insert(
        "198.51.100.0".parse().unwrap(),
        24,
        &Value::city("EU", "DE", 50.11, 8.68),
    )
    .insert(
        "203.0.113.0".parse().unwrap(),
        24,
        &Value::city("AS", "JP", 35.68, 139.69),
    )
    .insert(
        "192.0.2.0".parse().unwrap(),
        24,
        &Value::city("NA", "US", 37.34, -121.89),
    );
    std::fs::write(out, w.to_bytes())
}
