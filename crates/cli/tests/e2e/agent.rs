//! `meridian agent` (the `ngrok` crate) against `meridian serve`: HTTP pinning, TLS passthrough
//! and a TCP address, with real `curl` and real sockets.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Server, bootstrap, curl, temp_dir};

/// A plain HTTP/1.1 upstream that counts requests.
fn http_upstream(body: &'static str) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                loop {
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        head.push_str(&line);
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if conn.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, hits)
}

/// `meridian agent …`, killed on drop.
struct Agent(Child);

impl Agent {
    fn start(data: &std::path::Path, args: &[&str]) -> (Self, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
            .arg("agent")
            .args(args)
            .arg("--data-dir")
            .arg(data)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = lines.next().expect("the agent printed nothing").unwrap();
        assert!(line.starts_with("forwarding "), "{line}");
        (Self(child), line)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn api(server: &Server, key: &str, method: &str, path: &str, body: &str) -> Value {
    let (status, text) = curl(&format!(
        "curl -X {method} -H 'Authorization: Bearer {key}' -H 'ngrok-version: 2' \
         -H 'Content-Type: application/json' -d '{body}' {}{path}",
        server.url
    ));
    assert!((200..300).contains(&status), "{status} {text}");
    serde_json::from_str(&text).unwrap()
}

/// `curl` through one PoP's listener of `kind`, resolving `host` to it.
fn through(server: &Server, pop: &str, kind: &str, host: &str, extra: &str) -> (u16, String) {
    let addr = server.pop(pop, kind);
    let (ip, port) = addr.rsplit_once(':').unwrap();
    let scheme = if kind == "https" { "https" } else { "http" };
    curl(&format!(
        "curl --resolve {host}:{port}:{ip} {extra} {scheme}://{host}:{port}/"
    ))
}

#[test]
fn http_endpoint_is_served_only_where_pinned() {
    let (_tmp, data) = temp_dir();
    let server = Server::start(&data, &[]);
    let (key, _) = bootstrap(&data);
    let d = api(
        &server,
        &key,
        "POST",
        "/reserved_domains",
        r#"{"domain": "rs.example.test", "resolves_to": [{"value": "eu"}]}"#,
    );
    let (port, hits) = http_upstream("from the rust agent");
    let jp_agent = server.pop("jp", "agent");
    let (_agent, line) = Agent::start(
        &data,
        &[
            "http",
            &port.to_string(),
            "--domain",
            "rs.example.test",
            "--server-addr",
            &jp_agent,
        ],
    );
    assert!(
        line.starts_with("forwarding https://rs.example.test"),
        "{line}"
    );

    let ca = format!("--cacert {}", data.join("ca.pem").display());
    assert_eq!(
        through(&server, "eu", "https", "rs.example.test", &ca),
        (200, "from the rust agent".into())
    );
    let (status, body) = through(&server, "jp", "http", "rs.example.test", "");
    assert_eq!(status, 421, "{body}");
    let (status, error) = through(&server, "jp", "https", "rs.example.test", &ca);
    assert_eq!(status, 0, "the handshake is refused in Tokyo");
    assert!(error.contains("unrecognized name"), "{error}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "only the Frankfurt request reached the upstream"
    );

    let id = d["id"].as_str().unwrap();
    api(
        &server,
        &key,
        "PATCH",
        &format!("/reserved_domains/{id}"),
        r#"{"resolves_to": [{"value": "eu"}, {"value": "jp"}]}"#,
    );
    assert_eq!(
        through(&server, "jp", "https", "rs.example.test", &ca).0,
        200
    );
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

/// A TLS upstream with its own self-signed certificate: through a passthrough endpoint the
/// visitor must see *this* certificate, not one from Meridian's CA.
fn tls_upstream(name: &str) -> (u16, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let pem = cert.pem();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut tcp) = conn else { continue };
            let config = config.clone();
            std::thread::spawn(move || {
                let mut tls = rustls::ServerConnection::new(config).unwrap();
                let mut stream = rustls::Stream::new(&mut tls, &mut tcp);
                let mut buf = [0u8; 4096];
                if stream.read(&mut buf).unwrap_or(0) > 0 {
                    let response: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\
                        Connection: close\r\n\r\npassthrough";
                    let _ = stream.write_all(response);
                }
                stream.conn.send_close_notify();
                let _ = stream.flush();
            });
        }
    });
    (port, pem)
}

#[test]
fn tls_endpoint_passes_the_handshake_through() {
    let (tmp, data) = temp_dir();
    let server = Server::start(&data, &[]);
    let (key, _) = bootstrap(&data);
    api(
        &server,
        &key,
        "POST",
        "/reserved_domains",
        r#"{"domain": "tls.example.test", "resolves_to": [{"value": "us"}]}"#,
    );
    let (port, pem) = tls_upstream("tls.example.test");
    let upstream_ca = tmp.path().join("upstream.pem");
    std::fs::write(&upstream_ca, pem).unwrap();
    let (_agent, line) = Agent::start(
        &data,
        &[
            "tls",
            &port.to_string(),
            "--domain",
            "tls.example.test",
            "--server-addr",
            &server.pop("us", "agent"),
        ],
    );
    assert!(
        line.starts_with("forwarding tls://tls.example.test"),
        "{line}"
    );

    let trust = format!("--cacert {}", upstream_ca.display());
    assert_eq!(
        through(&server, "us", "https", "tls.example.test", &trust),
        (200, "passthrough".into())
    );
    let (status, error) = through(&server, "sa", "https", "tls.example.test", &trust);
    assert_eq!(status, 0, "a PoP outside the pinning refuses the handshake");
    assert!(error.contains("unrecognized name"), "{error}");
}

#[test]
fn tcp_address_is_served_by_its_region_only() {
    let (_tmp, data) = temp_dir();
    let server = Server::start(&data, &[]);
    let (key, _) = bootstrap(&data);
    let addr = api(
        &server,
        &key,
        "POST",
        "/reserved_addrs",
        r#"{"region": "sa"}"#,
    );
    let addr = addr["addr"].as_str().unwrap().to_owned();
    let (port, hits) = http_upstream("over tcp");
    let (_agent, line) = Agent::start(
        &data,
        &[
            "tcp",
            &port.to_string(),
            "--remote-addr",
            &addr,
            "--server-addr",
            &server.pop("in", "agent"),
        ],
    );
    assert_eq!(
        line.split_whitespace().nth(1),
        Some(format!("tcp://{addr}").as_str())
    );

    let public_port = addr.rsplit_once(':').unwrap().1;
    let sa_ip = server
        .pop("sa", "agent")
        .rsplit_once(':')
        .unwrap()
        .0
        .to_owned();
    let in_ip = server
        .pop("in", "agent")
        .rsplit_once(':')
        .unwrap()
        .0
        .to_owned();
    // The listener opens when the registry says so; wait for it, bounded.
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(format!("{sa_ip}:{public_port}")).is_err() {
        assert!(Instant::now() < deadline, "the sa listener never opened");
        std::thread::yield_now();
    }
    let (status, body) = curl(&format!("curl http://{sa_ip}:{public_port}/"));
    assert_eq!((status, body.as_str()), (200, "over tcp"));
    assert!(
        TcpStream::connect(format!("{in_ip}:{public_port}")).is_err(),
        "no other PoP listens"
    );
    assert!(hits.load(Ordering::SeqCst) >= 1);
}
