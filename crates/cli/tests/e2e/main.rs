//! End-to-end tests of `meridian serve`: the real binary, real sockets, real `curl`.

mod agent;
mod dns;
mod harness;

use std::os::unix::fs::PermissionsExt;

use harness::{Server, bootstrap, curl, postgres_store, temp_dir};
use serde_json::{Value, json};

/// The feature page's requests, word for word except for the host, the key and the id.
const CREATE: &str = r#"curl --request POST \
 --url {URL}/reserved_domains \
 --header "Authorization: Bearer {KEY}" \
 --header "Content-Type: application/json" \
 --header "ngrok-version: 2" \
 --data '{
    "domain": "api.example.com",
    "description": "Pinned to US and Europe for compliance reasons",
    "certificate_management_policy": {
      "authority": "letsencrypt",
      "private_key_type": "ecdsa"
    },
    "resolves_to": [
      { "value": "us-cal-1"},  
      { "value": "eu"}
    ]
  }'"#;

const ADD_JP: &str = r#"curl --request PATCH \
 --url {URL}/reserved_domains/{ID} \
 --header "Authorization: Bearer {KEY}" \
 --header "Content-Type: application/json" \
 --header "ngrok-version: 2" \
 --data '{
    "domain": "api.example.com",
    "description": "Pinned to US and Europe for compliance reasons",
    "certificate_management_policy": {
      "authority": "letsencrypt",
      "private_key_type": "ecdsa"
    },
    "resolves_to": [
      { "value": "us-cal-1"},  
      { "value": "eu"},
      { "value": "jp"}
    ]
  }'"#;

const UNPIN: &str = r#"curl --request PATCH \
 --url {URL}/reserved_domains/{ID}  \
 --header "Authorization: Bearer {KEY}" \
 --header "Content-Type: application/json" \
 --header "ngrok-version: 2" \
 --data '{
   "resolves_to": [] 
 }'"#;

fn fill(template: &str, url: &str, key: &str, id: &str) -> String {
    template
        .replace("{URL}", url)
        .replace("{KEY}", key)
        .replace("{ID}", id)
}

fn values(domain: &Value) -> Vec<&str> {
    domain["resolves_to"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["value"].as_str().unwrap())
        .collect()
}

#[test]
fn first_start_bootstraps_and_the_feature_page_requests_work() {
    let (_tmp, data) = temp_dir();
    let server = Server::start(&data, &[]);
    let (key, authtoken) = bootstrap(&data);
    assert!(key.starts_with("mrd_api_") && authtoken.starts_with("mrd_tok_"));
    let mode = std::fs::metadata(data.join("bootstrap.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // The printed curl line works as printed.
    let (status, body) = curl(&format!(
        "curl -H \"Authorization: Bearer {key}\" -H \"ngrok-version: 2\" {}/reserved_domains",
        server.url
    ));
    assert_eq!((status, body.as_str()), (200, format!(
        "{{\"next_page_uri\":null,\"reserved_domains\":[],\"uri\":\"{}/reserved_domains\"}}", server.url).as_str()));

    let (status, body) = curl(&fill(CREATE, &server.url, &key, ""));
    assert_eq!(status, 201, "{body}");
    let created: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(values(&created), ["us-cal-1", "eu"]);
    assert_eq!(
        created["description"],
        "Pinned to US and Europe for compliance reasons"
    );
    let id = created["id"].as_str().unwrap();

    let (status, body) = curl(&fill(ADD_JP, &server.url, &key, id));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        values(&serde_json::from_str(&body).unwrap()),
        ["us-cal-1", "eu", "jp"]
    );

    let (status, body) = curl(&fill(UNPIN, &server.url, &key, id));
    assert_eq!(status, 200, "{body}");
    let unpinned: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(unpinned["resolves_to"], json!([]));
    assert_eq!(
        unpinned["description"], created["description"],
        "other fields untouched"
    );

    // The banana request: the feature page's create with its region swapped for 'banana'.
    let banana = fill(CREATE, &server.url, &key, "")
        .replace(r#"{ "value": "us-cal-1"},"#, r#"{ "value": "banana"},"#)
        .replace("api.example.com", "banana.example.com");
    let (status, body) = curl(&format!("{banana} --include"));
    assert_eq!(status, 400);
    let (head, json_body) = body.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 400 Bad Request"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json; charset=utf-8")
    );
    assert_eq!(
        serde_json::from_str::<Value>(json_body).unwrap(),
        json!({
            "status_code": 400,
            "error_code": "invalid_region_target",
            "msg": "The region you specified, 'banana' is invalid. use one of the following acceptable values: us,us-cal-1,eu,au,ap,jp,sa,in",
            "details": {}
        })
    );
    let stdout = server.kill_9();
    assert!(
        stdout.contains(&format!("curl -H \"Authorization: Bearer {key}\"")),
        "{stdout}"
    );
}

fn survives_kill_9(extra: &[&str]) {
    let (_tmp, data) = temp_dir();
    let server = Server::start(&data, extra);
    let (key, _) = bootstrap(&data);
    let create = fill(CREATE, &server.url, &key, "");
    let (status, body) = curl(&create);
    assert_eq!(status, 201, "{body}");
    let created: Value = serde_json::from_str(&body).unwrap();
    // SIGKILL right after the 201: nothing gets a chance to flush.
    server.kill_9();

    let server = Server::start(&data, extra);
    assert_eq!(
        bootstrap(&data).0,
        key,
        "a restart does not bootstrap again"
    );
    let id = created["id"].as_str().unwrap();
    let (status, body) = curl(&format!(
        "curl -H 'Authorization: Bearer {key}' -H 'ngrok-version: 2' {}/reserved_domains/{id}",
        server.url
    ));
    assert_eq!(status, 200, "{body}");
    let mut after: Value = serde_json::from_str(&body).unwrap();
    let mut before = created.clone();
    // The URL changed with the new port; everything else must be identical.
    after["uri"] = Value::Null;
    before["uri"] = Value::Null;
    assert_eq!(after, before);
    let stdout = server.kill_9();
    assert!(!stdout.contains("created its first account"), "{stdout}");
}

#[test]
fn acknowledged_writes_survive_kill_9_on_sqlite() {
    survives_kill_9(&[]);
}

#[test]
fn acknowledged_writes_survive_kill_9_on_postgres() {
    let store = postgres_store();
    survives_kill_9(&["--store", &store]);
}

#[test]
fn check_config_validates_and_exits() {
    let (tmp, data) = temp_dir();
    let run = |config: &str| {
        let path = tmp.path().join("meridian.toml");
        std::fs::write(&path, config).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args(["serve", "--check-config", "--config"])
            .arg(&path)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap()
    };
    let ok = run(
        "base_domain = \"edge.example\"\n[api]\nlisten = \"127.0.0.1:0\"\n[pops.eu]\ntcp_ports = [30000, 30100]\n",
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let summary = String::from_utf8_lossy(&ok.stdout);
    assert!(summary.contains("configuration ok"), "{summary}");
    assert!(
        summary.contains("eu.tcp.edge.example:30000-30100"),
        "{summary}"
    );
    assert!(!summary.contains("hunter2"), "{summary}");
    assert!(!data.exists(), "checking creates nothing");

    let bad = run("[pops.mars]\n");
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.starts_with("error: ") && err.contains("mars"), "{err}");
}
