//! The DNS server on a real socket, asked by the real `dig`: pinning, nearest PoP by Client
//! Subnet, draining, the DNS basics (SOA, NXDOMAIN, REFUSED, truncation and TCP fallback,
//! case preservation, wildcards, CNAMEs) and garbage on the wire.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use meridian_core::snapshot::DomainRoute;
use meridian_core::target::parse_targets;
use meridian_core::{Hostname, PopCode, PopSet, RoutingSnapshot};
use meridian_dns::mmdb_writer::{MmdbWriter, Value};
use meridian_dns::{Authority, DnsListeners, DnsService, GeoDb, HealthBoard, ZoneConfig};
use tokio::sync::{oneshot, watch};

/// "Clients" in documentation ranges, placed by our own small GeoIP database.
const GERMANY: &str = "198.51.100.0/24";
const JAPAN: &str = "203.0.113.0/24";
const NOWHERE: &str = "192.0.2.0/24";

fn pop_ip(pop: PopCode) -> String {
    format!("127.0.1.{}", pop.index() + 1)
}

fn domain(name: &str, targets: &[&str], cname_target: Option<&str>) -> DomainRoute {
    DomainRoute::new(
        format!("rd_{name}"),
        "ac_test".into(),
        Hostname::parse(name).unwrap(),
        parse_targets(targets.iter().copied()).unwrap(),
        cname_target.map(|t| Hostname::parse(t).unwrap()),
    )
}

fn snapshot(version: u64, drained: &[PopCode]) -> Arc<RoutingSnapshot> {
    let many: Vec<String> = (1..=40).map(|i| format!("10.0.0.{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let domains = [
        domain(
            "app.example.com",
            &["us-cal-1", "eu"],
            Some("k1.cname.meridian.test"),
        ),
        domain("global.example.com", &[], None),
        domain(
            "dedicated.example.com",
            &["192.0.2.10:443", "2001:db8::10"],
            None,
        ),
        domain("mixed.example.com", &["jp", "192.0.2.20"], None),
        domain("many.example.com", &many, None),
        domain("*.wild.example.com", &["au"], None),
        domain("shop.meridian.test", &["sa"], None),
    ];
    Arc::new(
        RoutingSnapshot::new(version, domains, [], [])
            .with_drained(drained.iter().copied().collect()),
    )
}

fn geo() -> GeoDb {
    let mut w = MmdbWriter::new("Meridian-Test-City");
    w.insert(
        "198.51.100.0".parse().unwrap(),
        24,
        &Value::city("EU", "DE", 50.1, 8.7),
    )
    .insert(
        "203.0.113.0".parse().unwrap(),
        24,
        &Value::city("AS", "JP", 35.7, 139.7),
    );
    GeoDb::from_static(Box::leak(w.to_bytes().into_boxed_slice()), "test").unwrap()
}

struct Dns {
    addr: SocketAddr,
    snapshot: watch::Sender<Arc<RoutingSnapshot>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Dns {
    async fn start() -> Self {
        let config = ZoneConfig {
            base_domain: Hostname::parse("meridian.test").unwrap(),
            pop_addresses: std::array::from_fn(|i| vec![pop_ip(PopCode::ALL[i]).parse().unwrap()]),
            tcp_hosts: vec![(
                Hostname::parse("eu.tcp.meridian.test").unwrap(),
                PopCode::Eu,
            )],
            ns_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            ttl: 30,
        };
        let (tx, rx) = watch::channel(snapshot(1, &[]));
        let service = DnsService {
            authority: Arc::new(Authority::new(config, Some(geo()))),
            snapshot: rx,
            health: Arc::new(HealthBoard::unmonitored()),
        };
        let listeners = DnsListeners::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = listeners.local_addr().unwrap();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(meridian_dns::serve(service, listeners, 1, async {
            let _ = stop_rx.await;
        }));
        Self {
            addr,
            snapshot: tx,
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    /// Runs `dig` with `args` against the server and returns its output.
    async fn dig(&self, args: &[&str]) -> String {
        let out = tokio::process::Command::new("dig")
            .arg(format!("@{}", self.addr.ip()))
            .args(["-p", &self.addr.port().to_string(), "+tries=1", "+time=5"])
            .args(args)
            .output()
            .await
            .expect("dig is installed (bind9-dnsutils)");
        assert!(out.status.success(), "dig {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    /// The addresses of the answer, in order.
    async fn short(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec!["+short"];
        all.extend_from_slice(args);
        self.dig(&all).await.lines().map(str::to_owned).collect()
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

fn subnet(s: &str) -> String {
    format!("+subnet={s}")
}

#[tokio::test]
async fn pinned_domains_answer_the_nearest_pop_of_their_set_only() {
    let dns = Dns::start().await;
    let (eu, cal, jp) = (
        pop_ip(PopCode::Eu),
        pop_ip(PopCode::UsCal1),
        pop_ip(PopCode::Jp),
    );

    // Pinned to us-cal-1 and eu: Germany gets Frankfurt, Japan gets California, never Tokyo.
    assert_eq!(
        dns.short(&["app.example.com", &subnet(GERMANY)]).await,
        [eu.as_str()]
    );
    assert_eq!(
        dns.short(&["app.example.com", &subnet(JAPAN)]).await,
        [cal.as_str()]
    );
    // The same for a global domain: Japan gets Tokyo.
    assert_eq!(
        dns.short(&["global.example.com", &subnet(JAPAN)]).await,
        [jp.as_str()]
    );
    assert_eq!(
        dns.short(&["global.example.com", &subnet(GERMANY)]).await,
        [eu.as_str()]
    );
    // An unlocated client gets the documented catalog order: the set's first PoP.
    assert_eq!(
        dns.short(&["app.example.com", &subnet(NOWHERE)]).await,
        [cal.as_str()]
    );
    assert_eq!(
        dns.short(&["global.example.com"]).await,
        [pop_ip(PopCode::Us)]
    );

    // The reply carries the subnet back with the scope the answer holds for.
    let full = dns.dig(&["app.example.com", &subnet(GERMANY)]).await;
    assert!(full.contains("CLIENT-SUBNET: 198.51.100.0/24/24"), "{full}");
    // An answer that cannot depend on the client is valid for everyone: scope 0.
    let full = dns.dig(&["shop.meridian.test", &subnet(GERMANY)]).await;
    assert!(full.contains("CLIENT-SUBNET: 198.51.100.0/24/0"), "{full}");
    assert!(
        full.contains("flags: qr aa rd;"),
        "authoritative, no recursion: {full}"
    );

    // Drain Frankfurt: the German client moves to California. Drain both: still inside.
    dns.snapshot.send(snapshot(2, &[PopCode::Eu])).unwrap();
    assert_eq!(
        dns.short(&["app.example.com", &subnet(GERMANY)]).await,
        [cal.as_str()]
    );
    assert_eq!(
        dns.short(&["global.example.com", &subnet(GERMANY)])
            .await
            .len(),
        1
    );
    assert_ne!(
        dns.short(&["global.example.com", &subnet(GERMANY)]).await,
        [eu.as_str()]
    );
    dns.snapshot
        .send(snapshot(3, &[PopCode::Eu, PopCode::UsCal1]))
        .unwrap();
    assert_eq!(
        dns.short(&["app.example.com", &subnet(GERMANY)]).await,
        [eu.as_str()]
    );
    assert_eq!(
        dns.short(&["app.example.com", &subnet(JAPAN)]).await,
        [cal.as_str()]
    );
    dns.stop().await;
}

#[tokio::test]
async fn dedicated_ips_wildcards_cnames_and_tcp_hosts() {
    let dns = Dns::start().await;
    assert_eq!(
        dns.short(&["dedicated.example.com", "A"]).await,
        ["192.0.2.10"]
    );
    assert_eq!(
        dns.short(&["dedicated.example.com", "AAAA"]).await,
        ["2001:db8::10"]
    );
    assert_eq!(
        dns.short(&["mixed.example.com", &subnet(GERMANY)]).await,
        [pop_ip(PopCode::Jp), "192.0.2.20".to_owned()]
    );
    assert_eq!(
        dns.short(&["a.b.wild.example.com"]).await,
        [pop_ip(PopCode::Au)]
    );
    assert_eq!(
        dns.short(&["app.example.com", "CNAME"]).await,
        ["k1.cname.meridian.test."]
    );
    assert_eq!(
        dns.short(&["k1.cname.meridian.test", &subnet(JAPAN)]).await,
        [pop_ip(PopCode::UsCal1)]
    );
    assert_eq!(
        dns.short(&["eu.tcp.meridian.test"]).await,
        [pop_ip(PopCode::Eu)]
    );
    assert_eq!(dns.short(&["ns1.meridian.test"]).await, ["127.0.0.1"]);
    dns.stop().await;
}

#[tokio::test]
async fn dns_basics() {
    let dns = Dns::start().await;

    let soa = dns.dig(&["meridian.test", "SOA"]).await;
    assert!(
        soa.contains("status: NOERROR") && soa.contains("SOA\tns1.meridian.test."),
        "{soa}"
    );
    let ns = dns.short(&["meridian.test", "NS"]).await;
    assert_eq!(ns, ["ns1.meridian.test."]);
    let ns = dns.short(&["app.example.com", "NS"]).await;
    assert_eq!(
        ns,
        ["ns1.meridian.test."],
        "a custom domain is its own zone"
    );

    let nx = dns.dig(&["nope.meridian.test"]).await;
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    assert!(
        nx.contains("AUTHORITY: 1") && nx.contains("meridian.test.\t\t30\tIN\tSOA"),
        "{nx}"
    );
    let nx = dns.dig(&["below.app.example.com"]).await;
    assert!(
        nx.contains("status: NXDOMAIN") && nx.contains("app.example.com.\t30\tIN\tSOA"),
        "{nx}"
    );

    let nodata = dns.dig(&["app.example.com", "TXT"]).await;
    assert!(
        nodata.contains("status: NOERROR") && nodata.contains("ANSWER: 0"),
        "{nodata}"
    );
    assert!(nodata.contains("AUTHORITY: 1"), "{nodata}");
    let ent = dns.dig(&["tcp.meridian.test"]).await;
    assert!(
        ent.contains("status: NOERROR") && ent.contains("ANSWER: 0"),
        "{ent}"
    );

    let refused = dns.dig(&["example.org"]).await;
    assert!(refused.contains("status: REFUSED"), "{refused}");
    let refused = dns.dig(&["meridian.test", "AXFR"]).await;
    assert!(
        refused.contains("REFUSED") || refused.contains("failed"),
        "{refused}"
    );
    let chaos = dns.dig(&["version.bind", "TXT", "CH"]).await;
    assert!(chaos.contains("status: REFUSED"), "{chaos}");

    // 0x20: the asker's letter case comes back as sent.
    let mixed = dns.dig(&["ApP.ExAmPlE.CoM", "+noall", "+answer"]).await;
    assert!(
        mixed.starts_with("ApP.ExAmPlE.CoM.\t30\tIN\tA\t"),
        "{mixed}"
    );

    // Forty addresses do not fit in 512 bytes: truncated over UDP, complete over TCP.
    let tc = dns.dig(&["many.example.com", "+noedns", "+ignore"]).await;
    assert!(
        tc.contains("flags: qr aa tc rd;") && tc.contains("ANSWER: 0"),
        "{tc}"
    );
    let fallback = dns.short(&["many.example.com", "+noedns"]).await;
    assert_eq!(fallback.len(), 40, "dig retried over TCP");
    let edns = dns.dig(&["many.example.com", "+bufsize=1232"]).await;
    assert!(
        edns.contains("ANSWER: 40") && !edns.contains(" tc "),
        "{edns}"
    );
    let tcp = dns.short(&["many.example.com", "+tcp"]).await;
    assert_eq!(tcp.len(), 40);

    // An EDNS version we do not speak.
    let badvers = dns.dig(&["app.example.com", "+edns=1", "+noednsneg"]).await;
    assert!(badvers.contains("status: BADVERS"), "{badvers}");
    dns.stop().await;
}

#[tokio::test]
async fn random_bytes_never_stop_the_server() {
    let dns = Dns::start().await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(dns.addr).await.unwrap();
    // A fixed-seed xorshift so a failure replays; the fuzz target explores further.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut base = Vec::new();
    base.extend_from_slice(&[0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1]);
    base.extend_from_slice(b"\x03app\x07example\x03com\x00\x00\x01\x00\x01");
    base.extend_from_slice(&[
        0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 11, 0, 8, 0, 7, 0, 1, 24, 0, 198, 51, 100,
    ]);
    for round in 0..5000 {
        let packet: Vec<u8> = if round % 2 == 0 {
            let len = (next() % 600) as usize;
            (0..len).map(|_| next() as u8).collect()
        } else {
            // A valid query with a few bytes flipped reaches the deeper parsers.
            let mut p = base.clone();
            for _ in 0..1 + next() % 4 {
                let i = (next() as usize) % p.len();
                p[i] ^= next() as u8;
            }
            p
        };
        socket.send(&packet).await.unwrap();
    }
    // Still answering, correctly.
    assert_eq!(
        dns.short(&["app.example.com", &subnet(GERMANY)]).await,
        [pop_ip(PopCode::Eu)]
    );
    let _ = PopSet::ALL;
    dns.stop().await;
}
