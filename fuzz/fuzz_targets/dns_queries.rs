//! Fuzzes the DNS server's whole answer path (query parsing, EDNS and Client Subnet, zone
//! lookup, GeoIP, reply writing) on arbitrary datagrams, and checks what every reply must be.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use meridian_core::snapshot::DomainRoute;
use meridian_core::target::parse_targets;
use meridian_core::{Hostname, PopCode, PopSet, RoutingSnapshot};
use meridian_dns::mmdb_writer::{MmdbWriter, Value};
use meridian_dns::wire::{self, MAX_UDP_SIZE};
use meridian_dns::zone::{Asker, Scratch};
use meridian_dns::{Authority, GeoDb, ZoneConfig};

static FIXTURE: LazyLock<(Authority, Arc<RoutingSnapshot>)> = LazyLock::new(|| {
    let mut w = MmdbWriter::new("Fuzz-City");
    w.insert("198.51.100.0".parse().unwrap(), 24, &Value::city("EU", "DE", 50.1, 8.7));
    let geo = GeoDb::from_static(Box::leak(w.to_bytes().into_boxed_slice()), "fuzz").unwrap();
    let config = ZoneConfig {
        base_domain: Hostname::parse("meridian.test").unwrap(),
        pop_addresses: std::array::from_fn(|i| {
            vec![IpAddr::V4(Ipv4Addr::new(127, 0, 1, i as u8 + 1))]
        }),
        tcp_hosts: vec![(Hostname::parse("eu.tcp.meridian.test").unwrap(), PopCode::Eu)],
        ns_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        ttl: 30,
    };
    let route = |name: &str, targets: &[&str]| {
        DomainRoute::new(
            format!("rd_{name}"),
            "ac".into(),
            Hostname::parse(name).unwrap(),
            parse_targets(targets.iter().copied()).unwrap(),
            Some(Hostname::parse("x.cname.meridian.test").unwrap()),
        )
    };
    let many: Vec<String> = (1..=60).map(|i| format!("10.0.0.{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let snapshot = RoutingSnapshot::new(
        1,
        [
            route("a.example.com", &["us-cal-1", "eu"]),
            route("*.w.example.com", &["2001:db8::1", "jp"]),
            route("m.meridian.test", &many),
        ],
        [],
        [],
    );
    (Authority::new(config, Some(geo)), Arc::new(snapshot))
});

fuzz_target!(|data: &[u8]| {
    let (authority, snapshot) = &*FIXTURE;
    let mut out = Vec::new();
    let mut scratch = Scratch::default();
    for udp in [true, false] {
        let asker = Asker {
            addr: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
            udp,
        };
        let replied = authority.answer(data, asker, snapshot, PopSet::ALL, &mut out, &mut scratch);
        if !replied {
            assert!(wire::header(data).is_err());
            continue;
        }
        assert!(out.len() >= wire::HEADER_LEN);
        assert_eq!(out[..2], data[..2], "the reply keeps the id");
        assert!(out[2] & 0x80 != 0, "the reply is a response");
        if udp {
            assert!(out.len() <= usize::from(MAX_UDP_SIZE), "{} bytes over UDP", out.len());
        }
    }
});
