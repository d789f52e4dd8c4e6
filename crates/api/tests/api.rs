//! The API over real HTTP: a router on `127.0.0.1:0` backed by a SQLite store in a temporary
//! directory, driven with `reqwest`. The official Python client and `curl` are exercised
//! against the real binary elsewhere (`tests/python`, `crates/cli/tests`).

use std::sync::Arc;

use meridian_api::{ApiConfig, ApiState};
use meridian_core::{Hostname, PopCode};
use meridian_store::{AddrPool, Store};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

struct Api {
    url: String,
    store: Store,
    http: Client,
    _dir: tempfile::TempDir,
}

async fn start() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}/m.db", dir.path().display()))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = ApiConfig {
        base_url: url.clone(),
        base_domain: Hostname::parse("meridian.test").unwrap(),
        addr_pools: std::array::from_fn(|i| AddrPool {
            host: format!("{}.tcp.meridian.test", PopCode::ALL[i]),
            first_port: 20000,
            last_port: 20001,
        }),
    };
    let state = ApiState {
        store: store.clone(),
        config: Arc::new(config),
    };
    tokio::spawn(meridian_api::serve(listener, state, std::future::pending()));
    Api {
        url,
        store,
        http: Client::new(),
        _dir: dir,
    }
}

impl Api {
    async fn account(&self, name: &str) -> String {
        self.store
            .create_account(name)
            .await
            .unwrap()
            .1
            .expose()
            .to_owned()
    }

    /// Sends a request the way the official clients do and returns status and JSON body.
    async fn call(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(key)
            .header("ngrok-version", "2");
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        };
        (status, json)
    }

    async fn create_domain(&self, key: &str, body: Value) -> (StatusCode, Value) {
        self.call(key, Method::POST, "/reserved_domains", Some(body))
            .await
    }
}

/// Asserts the generic error shape and returns the `error_code`.
fn error_code(status: StatusCode, body: &Value, expected: StatusCode) -> String {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["status_code"], expected.as_u16(), "{body}");
    assert!(
        body["msg"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(body["details"].is_object(), "{body}");
    body["error_code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn domain_objects_have_every_field_and_round_trip() {
    let api = start().await;
    let key = api.account("a").await;
    let (status, d) = api
        .create_domain(
            &key,
            json!({"domain": "app.meridian.test", "resolves_to": [{"value": "european-union"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{d}");
    for field in [
        "id",
        "uri",
        "created_at",
        "description",
        "metadata",
        "domain",
        "region",
        "cname_target",
        "certificate",
        "certificate_management_policy",
        "certificate_management_status",
        "acme_challenge_cname_target",
        "resolves_to",
    ] {
        assert!(d.get(field).is_some(), "missing {field} in {d}");
    }
    let id = d["id"].as_str().unwrap();
    assert!(id.starts_with("rd_") && id.len() == 30);
    assert_eq!(d["uri"], format!("{}/reserved_domains/{id}", api.url));
    assert_eq!(
        d["cname_target"],
        Value::Null,
        "names under the base domain have none"
    );
    assert_eq!(d["certificate_management_status"], Value::Null);
    assert_eq!(d["resolves_to"], json!([{"value": "european-union"}]));
    assert!(d["created_at"].as_str().unwrap().ends_with('Z'));

    let (status, got) = api
        .call(&key, Method::GET, &format!("/reserved_domains/{id}"), None)
        .await;
    assert_eq!((status, &got), (StatusCode::OK, &d));

    let (_, custom) = api
        .create_domain(&key, json!({"domain": "Shop.Example.com"}))
        .await;
    assert_eq!(custom["domain"], "shop.example.com");
    let target = custom["cname_target"].as_str().unwrap();
    assert!(target.ends_with(".cname.meridian.test"), "{target}");
}

#[tokio::test]
async fn patch_semantics_follow_the_feature_page() {
    let api = start().await;
    let key = api.account("a").await;
    let policy = json!({"authority": "letsencrypt", "private_key_type": "ecdsa"});
    let (_, d) = api
        .create_domain(
            &key,
            json!({"domain": "api.example.com", "certificate_management_policy": policy,
            "resolves_to": [{"value": "us-cal-1"}, {"value": "eu"}]}),
        )
        .await;
    let path = format!("/reserved_domains/{}", d["id"].as_str().unwrap());
    let status = &d["certificate_management_status"];
    assert_eq!(status["renews_at"], Value::Null, "nothing issued: {status}");
    assert_eq!(status["provisioning_job"]["error_code"], "NOT_SUPPORTED");

    // Without resolves_to, the pinning stays.
    let (s, p) = api
        .call(
            &key,
            Method::PATCH,
            &path,
            Some(json!({"description": "x"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        p["resolves_to"],
        json!([{"value": "us-cal-1"}, {"value": "eu"}])
    );
    assert_eq!(p["certificate_management_policy"], policy);

    // Repeating the same domain is fine; another one is refused and changes nothing.
    let (s, _) = api
        .call(
            &key,
            Method::PATCH,
            &path,
            Some(json!({"domain": "API.example.com", "metadata": "m"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, e) = api
        .call(
            &key,
            Method::PATCH,
            &path,
            Some(json!({"domain": "other.example.com", "description": "y"})),
        )
        .await;
    assert_eq!(
        error_code(s, &e, StatusCode::BAD_REQUEST),
        "domain_immutable"
    );
    let (_, now) = api.call(&key, Method::GET, &path, None).await;
    assert_eq!(now["description"], "x");

    // [] un-pins.
    let (_, p) = api
        .call(&key, Method::PATCH, &path, Some(json!({"resolves_to": []})))
        .await;
    assert_eq!(p["resolves_to"], json!([]));
    assert!(
        api.store
            .snapshot()
            .domain(&Hostname::parse("api.example.com").unwrap())
            .unwrap()
            .resolution
            .is_global()
    );

    let (s, _) = api
        .call(
            &key,
            Method::DELETE,
            &format!("{path}/certificate_management_policy"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, p) = api.call(&key, Method::GET, &path, None).await;
    assert_eq!(p["certificate_management_policy"], Value::Null);
    assert_eq!(p["certificate_management_status"], Value::Null);
    let (s, _) = api
        .call(&key, Method::DELETE, &format!("{path}/certificate"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_writes_nothing() {
    let api = start().await;
    let key = api.account("a").await;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"domain": "b.example.com", "resolves_to": [{"value": "banana"}]}),
            "invalid_region_target",
        ),
        (
            json!({"domain": "b.example.com", "resolves_to": [{"value": "1.2.3.4:1234"}]}),
            "dedicated_ip_not_found",
        ),
        (
            json!({"domain": "b.example.com", "resolves_to": "eu"}),
            "invalid_body",
        ),
        (
            json!({"domain": "b.example.com", "resolves_to": [{"val": "eu"}]}),
            "invalid_body",
        ),
        (json!({"domain": "my_app.example.com"}), "ERR_NGROK_438"),
        (json!({"domain": "my app.example.com"}), "ERR_NGROK_406"),
        (json!({"domain": "localhost"}), "ERR_NGROK_1906"),
        (json!({"domain": ""}), "ERR_NGROK_1906"),
        (json!({"domain": "meridian.test"}), "ERR_NGROK_404"),
        (json!({"domain": "*.meridian.test"}), "ERR_NGROK_404"),
        (json!({"domain": "x.cname.meridian.test"}), "ERR_NGROK_404"),
        (
            json!({"domain": "b.example.com", "metadata": "m".repeat(4097)}),
            "ERR_NGROK_100",
        ),
        (
            json!({"domain": "b.example.com", "region": "mars"}),
            "ERR_NGROK_400",
        ),
        (
            json!({"domain": "b.example.com", "certificate_id": "cert_x"}),
            "ERR_NGROK_380",
        ),
        (
            json!({"domain": "b.example.com", "certificate_management_policy": {"authority": "zerossl"}}),
            "invalid_certificate_policy",
        ),
        (
            json!({"domain": "b.example.com", "certificate_management_policy": {"private_key_type": "dsa"}}),
            "invalid_certificate_policy",
        ),
        (json!(["not", "an", "object"]), "invalid_body"),
    ];
    for (body, code) in cases {
        let (s, e) = api.create_domain(&key, body.clone()).await;
        assert_eq!(error_code(s, &e, StatusCode::BAD_REQUEST), code, "{body}");
    }
    let (s, e) = api
        .create_domain(
            &key,
            json!({"domain": "b.example.com", "resolves_to": [{"value": "1.2.3.4:1234"}]}),
        )
        .await;
    assert!(
        e["msg"].as_str().unwrap().contains("'1.2.3.4:1234'"),
        "{s} {e}"
    );
    let (_, list) = api.call(&key, Method::GET, "/reserved_domains", None).await;
    assert_eq!(list["reserved_domains"], json!([]), "nothing was written");

    // Raw bodies: malformed JSON, wrong content type, oversized.
    let raw = |body: Vec<u8>, content_type: &'static str| {
        api.http
            .post(format!("{}/reserved_domains", api.url))
            .bearer_auth(&key)
            .header("ngrok-version", "2")
            .header("content-type", content_type)
            .body(body)
    };
    let check = |resp: reqwest::Response, expected: StatusCode, code: &'static str| async move {
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(error_code(status, &body, expected), code);
    };
    check(
        raw(b"{\"domain\": ".to_vec(), "application/json")
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_body",
    )
    .await;
    check(
        raw(b"{\"domain\": \"a.example.com\"}".to_vec(), "text/plain")
            .send()
            .await
            .unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_content_type",
    )
    .await;
    check(
        raw(vec![b' '; 70_000], "application/json")
            .send()
            .await
            .unwrap(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    )
    .await;
    check(
        raw(vec![0xff, 0xfe, 0x00], "application/json; charset=utf-8")
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_body",
    )
    .await;
}

#[tokio::test]
async fn version_and_auth_are_required() {
    let api = start().await;
    let key = api.account("a").await;
    let url = format!("{}/reserved_domains", api.url);
    let cases = [
        (
            api.http.get(&url).bearer_auth(&key),
            StatusCode::BAD_REQUEST,
            "ERR_NGROK_218",
        ),
        (
            api.http
                .get(&url)
                .bearer_auth(&key)
                .header("ngrok-version", "1"),
            StatusCode::BAD_REQUEST,
            "ERR_NGROK_217",
        ),
        (
            api.http.get(&url).header("ngrok-version", "2"),
            StatusCode::UNAUTHORIZED,
            "ERR_NGROK_200",
        ),
        (
            api.http
                .get(&url)
                .header("ngrok-version", "2")
                .header("authorization", "Basic abc"),
            StatusCode::UNAUTHORIZED,
            "ERR_NGROK_201",
        ),
        (
            api.http
                .get(&url)
                .header("ngrok-version", "2")
                .bearer_auth("mrd_api_nope"),
            StatusCode::UNAUTHORIZED,
            "ERR_NGROK_203",
        ),
    ];
    for (req, status, code) in cases {
        let resp = req.send().await.unwrap();
        let s = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(error_code(s, &body, status), code);
        assert!(
            !body.to_string().contains("mrd_api_nope"),
            "keys are not echoed"
        );
    }
    let (s, e) = api.call(&key, Method::GET, "/nowhere", None).await;
    assert_eq!(error_code(s, &e, StatusCode::NOT_FOUND), "not_found");
    let (s, e) = api.call(&key, Method::PUT, "/reserved_domains", None).await;
    assert_eq!(
        error_code(s, &e, StatusCode::METHOD_NOT_ALLOWED),
        "method_not_allowed"
    );
}

#[tokio::test]
async fn accounts_are_isolated() {
    let api = start().await;
    let alice = api.account("alice").await;
    let bob = api.account("bob").await;
    let (_, d) = api
        .create_domain(
            &alice,
            json!({"domain": "alice.example.com", "resolves_to": [{"value": "eu"}]}),
        )
        .await;
    let path = format!("/reserved_domains/{}", d["id"].as_str().unwrap());
    let missing = "/reserved_domains/rd_3MyYUjd5icMVmQaJ56m4JPDWRrw";

    for (method, body) in [
        (Method::GET, None),
        (Method::PATCH, Some(json!({"resolves_to": []}))),
        (Method::DELETE, None),
    ] {
        let (s1, theirs) = api.call(&bob, method.clone(), &path, body.clone()).await;
        let (s2, absent) = api.call(&bob, method.clone(), missing, body).await;
        assert_eq!(error_code(s1, &theirs, StatusCode::NOT_FOUND), "not_found");
        assert_eq!(
            (s1, &theirs),
            (s2, &absent),
            "another account's object looks exactly missing"
        );
    }
    let (_, list) = api.call(&bob, Method::GET, "/reserved_domains", None).await;
    assert_eq!(list["reserved_domains"], json!([]));

    let (s, e) = api
        .create_domain(&bob, json!({"domain": "alice.example.com"}))
        .await;
    assert_eq!(error_code(s, &e, StatusCode::BAD_REQUEST), "ERR_NGROK_414");
    let (s, e) = api
        .create_domain(&alice, json!({"domain": "ALICE.example.com"}))
        .await;
    assert_eq!(error_code(s, &e, StatusCode::BAD_REQUEST), "ERR_NGROK_413");

    let (_, still) = api.call(&alice, Method::GET, &path, None).await;
    assert_eq!(still, d, "bob's attempts changed nothing");

    // The same holds for addresses and credentials.
    let (_, addr) = api
        .call(
            &alice,
            Method::POST,
            "/reserved_addrs",
            Some(json!({"region": "eu"})),
        )
        .await;
    let (s, e) = api
        .call(
            &bob,
            Method::GET,
            &format!("/reserved_addrs/{}", addr["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(error_code(s, &e, StatusCode::NOT_FOUND), "not_found");
    let (_, cred) = api
        .call(&alice, Method::POST, "/credentials", Some(json!({})))
        .await;
    let (s, e) = api
        .call(
            &bob,
            Method::DELETE,
            &format!("/credentials/{}", cred["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(error_code(s, &e, StatusCode::NOT_FOUND), "not_found");
}

#[tokio::test]
async fn lists_page_with_absolute_next_page_uri() {
    let api = start().await;
    let key = api.account("a").await;
    for i in 0..7 {
        api.create_domain(&key, json!({"domain": format!("p{i}.example.com")}))
            .await;
    }
    let mut url = format!("{}/reserved_domains?limit=3", api.url);
    let mut names = Vec::new();
    loop {
        let resp = api
            .http
            .get(&url)
            .bearer_auth(&key)
            .header("ngrok-version", "2")
            .send()
            .await
            .unwrap();
        let page: Value = resp.json().await.unwrap();
        assert_eq!(page["uri"], format!("{}/reserved_domains", api.url));
        names.extend(
            page["reserved_domains"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["domain"].as_str().unwrap().to_owned()),
        );
        match &page["next_page_uri"] {
            Value::Null => break,
            Value::String(next) => url = next.clone(),
            other => panic!("next_page_uri must be a string or null, not {other}"),
        }
    }
    let expected: Vec<String> = (0..7).rev().map(|i| format!("p{i}.example.com")).collect();
    assert_eq!(names, expected, "newest first, each once");

    for bad in ["0", "101", "x"] {
        let (s, e) = api
            .call(
                &key,
                Method::GET,
                &format!("/reserved_domains?limit={bad}"),
                None,
            )
            .await;
        assert_eq!(error_code(s, &e, StatusCode::BAD_REQUEST), "ERR_NGROK_233");
    }
    let (s, e) = api
        .call(&key, Method::GET, "/reserved_domains?before_id=ra_x", None)
        .await;
    assert_eq!(
        error_code(s, &e, StatusCode::BAD_REQUEST),
        "invalid_before_id"
    );
}

#[tokio::test]
async fn reserved_addrs_take_ports_from_their_region() {
    let api = start().await;
    let key = api.account("a").await;
    let (s, a) = api
        .call(
            &key,
            Method::POST,
            "/reserved_addrs",
            Some(json!({"description": "db", "metadata": "", "region": "eu"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!(
        (a["addr"].as_str().unwrap(), a["region"].as_str().unwrap()),
        ("eu.tcp.meridian.test:20000", "eu")
    );
    assert!(a["id"].as_str().unwrap().starts_with("ra_"));
    assert_eq!(a["endpoint_configuration"], Value::Null);

    let (_, d) = api
        .call(
            &key,
            Method::POST,
            "/reserved_addrs",
            Some(json!({"region": ""})),
        )
        .await;
    assert_eq!(d["region"], "us", "ngrok's default region");
    api.call(
        &key,
        Method::POST,
        "/reserved_addrs",
        Some(json!({"region": "eu"})),
    )
    .await;
    let (s, e) = api
        .call(
            &key,
            Method::POST,
            "/reserved_addrs",
            Some(json!({"region": "eu"})),
        )
        .await;
    assert_eq!(
        error_code(s, &e, StatusCode::CONFLICT),
        "addresses_exhausted"
    );
    let (s, e) = api
        .call(
            &key,
            Method::POST,
            "/reserved_addrs",
            Some(json!({"region": "european-union"})),
        )
        .await;
    assert_eq!(error_code(s, &e, StatusCode::BAD_REQUEST), "ERR_NGROK_400");

    let path = format!("/reserved_addrs/{}", a["id"].as_str().unwrap());
    let (s, e) = api
        .call(&key, Method::PATCH, &path, Some(json!({"region": "jp"})))
        .await;
    assert_eq!(
        error_code(s, &e, StatusCode::BAD_REQUEST),
        "region_immutable"
    );
    let (s, p) = api
        .call(
            &key,
            Method::PATCH,
            &path,
            Some(json!({"description": "primary"})),
        )
        .await;
    assert_eq!(
        (s, p["description"].as_str(), p["addr"].as_str()),
        (StatusCode::OK, Some("primary"), a["addr"].as_str())
    );
    let (s, _) = api.call(&key, Method::DELETE, &path, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn credential_tokens_are_shown_once() {
    let api = start().await;
    let key = api.account("a").await;
    let (s, c) = api
        .call(
            &key,
            Method::POST,
            "/credentials",
            Some(json!({"description": "laptop", "metadata": "", "acl": ["bind:*.example.com"]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    let token = c["token"].as_str().unwrap().to_owned();
    let hash = meridian_core::secret::SecretHash::of(&token);
    assert!(
        api.store.snapshot().credential(&hash).is_some(),
        "agents can authenticate at once"
    );
    let path = format!("/credentials/{}", c["id"].as_str().unwrap());
    let (_, got) = api.call(&key, Method::GET, &path, None).await;
    assert_eq!(got["token"], Value::Null);
    assert_eq!(got["acl"], json!(["bind:*.example.com"]));
    let (_, list) = api.call(&key, Method::GET, "/credentials", None).await;
    assert!(!list.to_string().contains(&token));

    let (s, e) = api
        .call(
            &key,
            Method::POST,
            "/credentials",
            Some(json!({"acl": ["connect:*"]})),
        )
        .await;
    assert_eq!(error_code(s, &e, StatusCode::BAD_REQUEST), "invalid_acl");
    let (s, e) = api
        .call(
            &key,
            Method::POST,
            "/credentials",
            Some(json!({"description": "d".repeat(256)})),
        )
        .await;
    assert_eq!(
        error_code(s, &e, StatusCode::BAD_REQUEST),
        "invalid_description"
    );

    let (_, p) = api
        .call(&key, Method::PATCH, &path, Some(json!({"acl": []})))
        .await;
    assert_eq!(p["acl"], json!([]));
    api.call(&key, Method::DELETE, &path, None).await;
    assert!(
        api.store.snapshot().credential(&hash).is_none(),
        "a deleted token stops working at once"
    );
}

/// A small deterministic generator (xorshift64*), so a failure reproduces exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Mutates a valid body the way a fuzzer would: truncation, byte flips, inserted or
/// repeated chunks, or plain noise.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut body = seed.to_vec();
    for _ in 0..=rng.below(3) {
        let at = rng.below(body.len() + 1);
        match rng.below(6) {
            0 => body.truncate(at),
            1 if !body.is_empty() => {
                let i = at.min(body.len() - 1);
                body[i] ^= 1 << rng.below(8);
            }
            2 => {
                let noise: Vec<u8> = (0..rng.below(16)).map(|_| rng.next() as u8).collect();
                body.splice(at..at, noise);
            }
            3 => {
                let chunk = body[at..].to_vec();
                body.extend_from_slice(&chunk);
            }
            4 => {
                let depth = 1 + rng.below(300);
                body = format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes();
            }
            _ => body = (0..rng.below(64)).map(|_| rng.next() as u8).collect(),
        }
    }
    body
}

#[tokio::test]
async fn random_bodies_never_cause_a_server_error() {
    let api = start().await;
    let key = api.account("a").await;
    let (_, d) = api
        .create_domain(&key, json!({"domain": "fixed.example.com"}))
        .await;
    let (_, a) = api
        .call(
            &key,
            Method::POST,
            "/reserved_addrs",
            Some(json!({"region": "eu"})),
        )
        .await;
    let (_, c) = api
        .call(&key, Method::POST, "/credentials", Some(json!({})))
        .await;
    let seeds: Vec<(Method, String, Value)> = vec![
        (
            Method::POST,
            "/reserved_domains".into(),
            json!({"domain": "f.example.com", "description": "d",
            "certificate_management_policy": {"authority": "letsencrypt", "private_key_type": "rsa"},
            "resolves_to": [{"value": "eu"}, {"value": "united-states"}]}),
        ),
        (
            Method::PATCH,
            format!("/reserved_domains/{}", d["id"].as_str().unwrap()),
            json!({"resolves_to": [{"value": "jp"}], "metadata": "m"}),
        ),
        (
            Method::POST,
            "/reserved_addrs".into(),
            json!({"region": "au", "description": "x"}),
        ),
        (
            Method::PATCH,
            format!("/reserved_addrs/{}", a["id"].as_str().unwrap()),
            json!({"description": "y"}),
        ),
        (
            Method::POST,
            "/credentials".into(),
            json!({"acl": ["bind:x.example.com"], "description": "z"}),
        ),
        (
            Method::PATCH,
            format!("/credentials/{}", c["id"].as_str().unwrap()),
            json!({"acl": []}),
        ),
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut accepted = 0;
    for round in 0..600 {
        let (method, path, seed) = &seeds[round % seeds.len()];
        let body = mutate(&mut rng, seed.to_string().as_bytes());
        let resp = api
            .http
            .request(method.clone(), format!("{}{path}", api.url))
            .bearer_auth(&key)
            .header("ngrok-version", "2")
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let shown = String::from_utf8_lossy(&body);
        assert!(!status.is_server_error(), "{status} for {shown:?}: {text}");
        let json: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        if status.is_success() {
            accepted += 1;
            assert!(json["id"].is_string(), "{json}");
        } else {
            error_code(status, &json, status);
        }
    }
    // Some mutations stay valid; most do not. Both kinds must have been exercised.
    assert!(accepted > 0 && accepted < 600, "accepted {accepted} of 600");
    let (s, _) = api.call(&key, Method::GET, "/reserved_domains", None).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn only_the_operator_drains_pops() {
    let api = start().await;
    let operator_key = meridian_store::new_api_key();
    api.store
        .bootstrap(&operator_key, &meridian_store::new_authtoken())
        .await
        .unwrap()
        .unwrap();
    let operator = operator_key.expose();
    let customer = api.account("customer").await;

    let (status, list) = api.call(&customer, Method::GET, "/pops", None).await;
    assert_eq!(status, StatusCode::OK);
    let codes: Vec<&str> = list["pops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        ["us", "us-cal-1", "eu", "au", "ap", "jp", "sa", "in"]
    );
    assert!(
        list["pops"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["drained"] == false)
    );

    let drain = json!({"drained": true});
    let (status, err) = api
        .call(&customer, Method::PATCH, "/pops/eu", Some(drain.clone()))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(err["error_code"], "operator_only");
    assert!(api.store.snapshot().drained().is_empty(), "nothing changed");

    let (status, pop) = api
        .call(operator, Method::PATCH, "/pops/eu", Some(drain.clone()))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (pop["code"].as_str(), pop["drained"].as_bool()),
        (Some("eu"), Some(true))
    );
    assert!(api.store.snapshot().drained().contains(PopCode::Eu));
    let (_, pop) = api.call(&customer, Method::GET, "/pops/eu", None).await;
    assert_eq!(pop["drained"], true);

    let (status, _) = api
        .call(operator, Method::PATCH, "/pops/mars", Some(drain))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for bad in [
        json!({}),
        json!({"drained": "yes"}),
        json!({"drained": true, "x": 1}),
    ] {
        let (status, err) = api
            .call(operator, Method::PATCH, "/pops/eu", Some(bad))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    }
    let (status, pop) = api
        .call(
            operator,
            Method::PATCH,
            "/pops/eu",
            Some(json!({"drained": false})),
        )
        .await;
    assert_eq!(
        (status, pop["drained"].as_bool()),
        (StatusCode::OK, Some(false))
    );
}
