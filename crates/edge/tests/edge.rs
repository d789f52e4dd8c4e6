//! One PoP in-process, serving a real agent (the `ngrok` crate) while hostile agents and slow
//! or oversized visitors misbehave around it: they fail alone.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meridian_core::secret::SecretHash;
use meridian_core::snapshot::{CredentialRoute, DomainRoute};
use meridian_core::{Hostname, PopCode, PopSite, RoutingSnapshot};
use meridian_edge::ca::Authority;
use meridian_edge::registry::LocalRegistry;
use meridian_edge::{Platform, PopListeners};
use ngrok::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const TOKEN: &str = "mrd_tok_test";

struct TestPop {
    agent: SocketAddr,
    http: SocketAddr,
    ca_pem: String,
    _snapshot: watch::Sender<Arc<RoutingSnapshot>>,
    _dir: tempfile::TempDir,
}

async fn start_pop() -> TestPop {
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(Authority::load_or_create(dir.path()).unwrap());
    let credential = CredentialRoute {
        id: "cr_1".into(),
        account_id: "ac_1".into(),
        acl: vec![],
    };
    let domain = DomainRoute::new(
        "rd_1".into(),
        "ac_1".into(),
        Hostname::parse("good.example.test").unwrap(),
        vec![],
        None,
    );
    let snapshot = RoutingSnapshot::new(1, [domain], [], [(SecretHash::of(TOKEN), credential)]);
    let (tx, rx) = watch::channel(Arc::new(snapshot));
    let platform = Arc::new(Platform {
        registry: Arc::new(LocalRegistry::default()),
        ca: ca.clone(),
        snapshot: rx,
        base_domain: Hostname::parse("meridian.test").unwrap(),
    });
    let bind = || async { TcpListener::bind("127.0.0.1:0").await.unwrap() };
    let listeners = PopListeners {
        agent: bind().await,
        http: bind().await,
        https: bind().await,
    };
    let (agent, http) = (
        listeners.agent.local_addr().unwrap(),
        listeners.http.local_addr().unwrap(),
    );
    let site = PopSite {
        code: PopCode::Eu,
        addresses: vec!["127.0.0.1".parse().unwrap()],
    };
    tokio::spawn(meridian_edge::run_pop(
        platform,
        site,
        listeners,
        std::future::pending(),
    ));
    TestPop {
        agent,
        http,
        ca_pem: ca.ca_pem().to_owned(),
        _snapshot: tx,
        _dir: dir,
    }
}

/// An upstream answering every request with `ok`.
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        let _ = conn
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .await;
                    }
                }
            });
        }
    });
    addr
}

/// A well-behaved agent serving good.example.test.
async fn good_agent(pop: &TestPop) -> (ngrok::Session, impl Send) {
    let session = ngrok::Session::builder()
        .authtoken(TOKEN)
        .server_addr(pop.agent.to_string())
        .unwrap()
        .ca_cert(pop.ca_pem.clone().into())
        .connect()
        .await
        .unwrap();
    let to = url::Url::parse(&format!("http://{}", upstream().await)).unwrap();
    let fwd = session
        .http_endpoint()
        .domain("good.example.test")
        .listen_and_forward(to)
        .await
        .unwrap();
    assert_eq!(fwd.url(), "https://good.example.test");
    (session, fwd)
}

/// One HTTP/1.1 request to the PoP's HTTP listener; returns the status line.
async fn get(pop: &TestPop, host: &str) -> String {
    let mut conn = TcpStream::connect(pop.http).await.unwrap();
    conn.write_all(
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut resp = String::new();
    conn.read_to_string(&mut resp).await.unwrap();
    resp.lines().next().unwrap_or_default().to_owned()
}

/// A TLS connection to the agent listener, trusting Meridian's CA.
async fn tls_to_agent_port(pop: &TestPop) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pop.ca_pem.as_bytes()).unwrap();
    roots.add(der).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(pop.agent).await.unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(pop.agent.ip().into());
    connector.connect(name, tcp).await.unwrap()
}

use rustls::pki_types::pem::PemObject;

#[tokio::test]
async fn hostile_agents_are_cut_off_and_the_good_one_keeps_serving() {
    let pop = start_pop().await;
    let _good = good_agent(&pop).await;
    assert_eq!(get(&pop, "good.example.test").await, "HTTP/1.1 200 OK");

    let garbage: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let oversized: &[u8] = &[0xFF, 0xFF, 0xFF, 0x10, 0, 0, 0, 3];
    let bad_type: &[u8] = &[0, 0, 0, 0x50, 0, 0, 0, 3];
    for (name, bytes) in [
        ("garbage", garbage),
        ("oversized frame", oversized),
        ("unknown frame type", bad_type),
    ] {
        let mut tls = tls_to_agent_port(&pop).await;
        tls.write_all(bytes).await.unwrap();
        let mut rest = Vec::new();
        // The edge answers GOAWAY and closes; reading ends instead of hanging.
        let read = tokio::time::timeout(Duration::from_secs(30), tls.read_to_end(&mut rest)).await;
        assert!(
            read.is_ok(),
            "{name}: the edge kept the hostile session open"
        );
        assert_eq!(
            get(&pop, "good.example.test").await,
            "HTTP/1.1 200 OK",
            "after {name}"
        );
    }

    // Not TLS at all: the handshake fails and nothing else notices.
    let mut plain = TcpStream::connect(pop.agent).await.unwrap();
    plain.write_all(&[0u8; 1024]).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), plain.read_to_end(&mut rest))
        .await
        .unwrap();
    assert_eq!(get(&pop, "good.example.test").await, "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn slow_and_oversized_visitors_fail_alone() {
    let pop = start_pop().await;
    let _good = good_agent(&pop).await;

    // A visitor that sends half a request head and stalls holds only its own connection.
    let mut slow = TcpStream::connect(pop.http).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: good.exa")
        .await
        .unwrap();
    for _ in 0..5 {
        assert_eq!(get(&pop, "good.example.test").await, "HTTP/1.1 200 OK");
    }

    // A request head over the limit is refused without reaching the agent.
    let mut big = TcpStream::connect(pop.http).await.unwrap();
    let filler = "a".repeat(100 * 1024);
    let head = format!("GET / HTTP/1.1\r\nHost: good.example.test\r\nX-Filler: {filler}\r\n\r\n");
    let _ = big.write_all(head.as_bytes()).await;
    let mut resp = Vec::new();
    let _ = big.read_to_end(&mut resp).await;
    let status = String::from_utf8_lossy(&resp)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(status.is_empty() || status.contains("431"), "{status}");

    // An unknown host and an offline one get clear answers.
    assert_eq!(
        get(&pop, "nobody.example.test").await,
        "HTTP/1.1 404 Not Found"
    );
    drop(slow);
}
