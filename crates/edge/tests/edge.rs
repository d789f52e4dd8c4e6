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
    let second = DomainRoute::new(
        "rd_2".into(),
        "ac_1".into(),
        Hostname::parse("two.example.test").unwrap(),
        vec![],
        None,
    );
    let snapshot = RoutingSnapshot::new(
        1,
        [domain, second],
        [],
        [(SecretHash::of(TOKEN), credential)],
    );
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
    agent_for(pop, "good.example.test", upstream().await).await
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

/// An upstream that answers every request with what it saw, as `label method path
/// body-length body xff|xfp|xfh host`, and that switches to echoing bytes when asked to
/// upgrade to `echo`.
async fn echo_upstream(label: &'static str) -> SocketAddr {
    use http_body_util::{BodyExt, Full};
    use hyper::body::{Bytes, Incoming};
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;

    async fn answer(
        label: &'static str,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, hyper::Error> {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned()
        };
        if header("upgrade") == "echo" {
            let upgraded = hyper::upgrade::on(req);
            tokio::spawn(async move {
                let mut io = TokioIo::new(upgraded.await.unwrap());
                let mut buf = [0u8; 64];
                while let Ok(n @ 1..) = io.read(&mut buf).await {
                    io.write_all(&buf[..n]).await.unwrap();
                }
            });
            return Ok(Response::builder()
                .status(101)
                .header("connection", "upgrade")
                .header("upgrade", "echo")
                .body(Full::default())
                .unwrap());
        }
        let seen = format!(
            "{label} {} {} {}|{}|{} {}",
            req.method(),
            req.uri(),
            header("x-forwarded-for"),
            header("x-forwarded-proto"),
            header("x-forwarded-host"),
            header("host"),
        );
        let body = req.into_body().collect().await?.to_bytes();
        let text = format!("{seen} {} {}", body.len(), String::from_utf8_lossy(&body));
        Ok(Response::new(Full::new(Bytes::from(text))))
    }

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (conn, _) = listener.accept().await.unwrap();
            let service = hyper::service::service_fn(move |req| answer(label, req));
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(conn), service)
                    .with_upgrades(),
            );
        }
    });
    addr
}

/// Starts an agent serving `domain` from `upstream`.
async fn agent_for(
    pop: &TestPop,
    domain: &str,
    upstream: SocketAddr,
) -> (ngrok::Session, impl Send) {
    let session = ngrok::Session::builder()
        .authtoken(TOKEN)
        .server_addr(pop.agent.to_string())
        .unwrap()
        .ca_cert(pop.ca_pem.clone().into())
        .connect()
        .await
        .unwrap();
    let to = url::Url::parse(&format!("http://{upstream}")).unwrap();
    let fwd = session
        .http_endpoint()
        .domain(domain)
        .listen_and_forward(to)
        .await
        .unwrap();
    assert_eq!(fwd.url(), format!("https://{domain}"));
    (session, fwd)
}

/// A plain HTTP connection to the PoP, read line by line.
async fn visitor(pop: &TestPop) -> tokio::io::BufReader<TcpStream> {
    tokio::io::BufReader::new(TcpStream::connect(pop.http).await.unwrap())
}

/// One response off a visitor connection: status and body. `head` for answers to HEAD.
async fn read_response<R>(conn: &mut R, head: bool) -> (u16, String)
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    use tokio::io::AsyncBufReadExt;
    let mut status_line = String::new();
    conn.read_line(&mut status_line).await.unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {status_line:?}"));
    let mut length = 0;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).await.unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0u8; if head { 0 } else { length }];
    conn.read_exact(&mut body).await.unwrap();
    (status, String::from_utf8(body).unwrap())
}

#[tokio::test]
async fn pipelined_requests_keep_their_bodies_order_and_headers() {
    let pop = start_pop().await;
    let _agent = agent_for(&pop, "good.example.test", echo_upstream("a").await).await;
    let mut conn = visitor(&pop).await;
    // Four requests in one write: a sized body, a chunked body with a trailer, a HEAD and
    // an absolute-form GET with a forwarded-for chain and a forged proto.
    conn.get_mut()
        .write_all(
            b"POST /sized HTTP/1.1\r\nHost: good.example.test\r\nContent-Length: 5\r\n\r\nhello\
              POST /chunked HTTP/1.1\r\nHost: Good.Example.Test:80\r\n\
              Transfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5\r\npedia\r\n0\r\nX-T: 1\r\n\r\n\
              HEAD /head HTTP/1.1\r\nHost: good.example.test\r\n\r\n\
              GET http://good.example.test/abs?q=1 HTTP/1.1\r\nHost: wrong.example.test\r\n\
              X-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: gopher\r\n\r\n",
        )
        .await
        .unwrap();
    let (status, body) = read_response(&mut conn, false).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        "a POST /sized 127.0.0.1|http|good.example.test good.example.test 5 hello"
    );
    let (_, body) = read_response(&mut conn, false).await;
    assert_eq!(
        body,
        "a POST /chunked 127.0.0.1|http|good.example.test Good.Example.Test:80 9 Wikipedia"
    );
    let (status, body) = read_response(&mut conn, true).await;
    assert_eq!((status, body.as_str()), (200, ""));
    let (_, body) = read_response(&mut conn, false).await;
    assert_eq!(
        body,
        "a GET /abs?q=1 192.0.2.1, 127.0.0.1|http|good.example.test good.example.test 0 "
    );

    // The same connection serves more after the pipeline; `Connection: close` ends it.
    conn.get_mut()
        .write_all(b"GET /last HTTP/1.1\r\nHost: good.example.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (status, body) = read_response(&mut conn, false).await;
    assert_eq!((status, body.starts_with("a GET /last ")), (200, true));
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "bytes after the last response: {rest:?}");
}

#[tokio::test]
async fn large_bodies_pass_whole_both_ways_and_the_connection_goes_on() {
    let pop = start_pop().await;
    let _agent = agent_for(&pop, "good.example.test", echo_upstream("a").await).await;
    let (read, mut write) = visitor(&pop).await.into_inner().into_split();
    let mut read = tokio::io::BufReader::new(read);
    // Bodies of several flow-control windows each way (the upstream echoes the request body
    // into its response) on one connection, one after the other, then a small request. Not
    // pipelined: the upstream (hyper) closes a connection on which large requests queue up.
    for (i, len) in [600_000usize, 1_100_000].into_iter().enumerate() {
        let unit = format!("{i}-0123456789abcdefghijklmnopqrstuvwxyz\n");
        let body = unit.repeat(len / unit.len() + 1)[..len].to_owned();
        let head = format!(
            "POST /big{i} HTTP/1.1\r\nHost: good.example.test\r\nContent-Length: {len}\r\n\r\n"
        );
        let request = [head.as_bytes(), body.as_bytes()].concat();
        let sender = tokio::spawn(async move {
            write.write_all(&request).await.unwrap();
            write
        });
        let (status, got) = read_response(&mut read, false).await;
        write = sender.await.unwrap();
        assert_eq!(status, 200);
        let prefix =
            format!("a POST /big{i} 127.0.0.1|http|good.example.test good.example.test {len} ");
        assert!(
            got.starts_with(&prefix),
            "response {i} starts {:?}",
            &got[..80]
        );
        assert!(
            got[prefix.len()..] == body[..],
            "response {i}'s body changed"
        );
    }
    write
        .write_all(b"GET /small HTTP/1.1\r\nHost: good.example.test\r\n\r\n")
        .await
        .unwrap();
    let (status, got) = read_response(&mut read, false).await;
    assert_eq!(status, 200, "{got}");
    assert!(got.starts_with("a GET /small "), "{got}");
}

/// An upstream that answers the first request head on each connection with `body`, framed
/// by the end of the connection (no length, `Connection: close`), and closes.
async fn close_delimited_upstream(body: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = Arc::new(body);
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            let body = body.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(n @ 1..) => head.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                let _ = conn
                    .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                    .await;
                let _ = conn.write_all(&body).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_large_body_that_ends_with_the_connection_arrives_whole() {
    let pop = start_pop().await;
    let body: Vec<u8> = (0..700_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let up = close_delimited_upstream(body.clone()).await;
    let _agent = agent_for(&pop, "good.example.test", up).await;
    let mut conn = visitor(&pop).await;
    conn.get_mut()
        .write_all(b"GET /stream HTTP/1.1\r\nHost: good.example.test\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    conn.read_to_end(&mut all).await.unwrap();
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    let head = String::from_utf8_lossy(&all[..split]);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(all.len() - split, body.len(), "body length");
    assert!(all[split..] == body[..], "body bytes changed");
}

#[tokio::test]
async fn one_connection_follows_its_requests_across_tunnels_and_refusals() {
    let pop = start_pop().await;
    let _a = agent_for(&pop, "good.example.test", echo_upstream("a").await).await;
    let _b = agent_for(&pop, "two.example.test", echo_upstream("b").await).await;
    let mut conn = visitor(&pop).await;
    conn.get_mut()
        .write_all(
            b"GET /1 HTTP/1.1\r\nHost: good.example.test\r\n\r\n\
              GET /2 HTTP/1.1\r\nHost: two.example.test\r\n\r\n\
              GET /3 HTTP/1.1\r\nHost: good.example.test\r\n\r\n\
              GET /4 HTTP/1.1\r\nHost: nobody.example.test\r\n\r\n\
              GET /5 HTTP/1.1\r\nHost: good.example.test\r\n\r\n",
        )
        .await
        .unwrap();
    for (label, path) in [("a", "/1"), ("b", "/2"), ("a", "/3")] {
        let (status, body) = read_response(&mut conn, false).await;
        assert_eq!(status, 200);
        assert!(body.starts_with(&format!("{label} GET {path} ")), "{body}");
    }
    // The edge answers an offline host itself, in turn, and closes: /5 is never served.
    let (status, body) = read_response(&mut conn, false).await;
    assert_eq!(status, 404);
    assert!(body.contains("ERR_NGROK_3200"), "{body}");
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "bytes after the refusal: {rest:?}");
}

#[tokio::test]
async fn an_upgrade_turns_the_connection_into_a_pipe() {
    let pop = start_pop().await;
    let _agent = agent_for(&pop, "good.example.test", echo_upstream("a").await).await;
    let mut conn = visitor(&pop).await;
    conn.get_mut()
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: good.example.test\r\nConnection: Upgrade\r\n\
              Upgrade: echo\r\n\r\n",
        )
        .await
        .unwrap();
    let (status, _) = read_response(&mut conn, false).await;
    assert_eq!(status, 101);
    // Not HTTP any more: the bytes reach the upstream's echo unchanged.
    conn.get_mut().write_all(b"GET ping\r\n\r\n").await.unwrap();
    let mut echoed = [0u8; 10];
    conn.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"GET ping\r\n");
}
