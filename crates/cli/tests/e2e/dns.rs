//! The DNS server inside `meridian serve`, asked by the real `dig` right after the API
//! answers: the feature page's requests change the very next answer, and draining PoPs (with
//! `meridian pop` and with the API) moves clients without ever leaving a domain's set.
//!
//! Clients are placed by the built-in country database: 80.130.0.0/24 is in Germany and
//! 133.0.0.0/24 in Japan.

use std::process::Command;

use serde_json::Value;

use crate::harness::{Server, bootstrap, curl, temp_dir};
use crate::{ADD_JP, CREATE, UNPIN, fill};

const GERMANY: &str = "80.130.0.0/24";
const JAPAN: &str = "133.0.0.0/24";
const US_CAL_1: &str = "127.0.1.2";
const EU: &str = "127.0.1.3";
const JP: &str = "127.0.1.6";

/// `dig +short` of `name`'s A records, as the client subnet `subnet` would get them.
fn dig(dns: &str, name: &str, subnet: &str) -> Vec<String> {
    let (host, port) = dns.rsplit_once(':').unwrap();
    let out = Command::new("dig")
        .args([
            &format!("@{host}"),
            "-p",
            port,
            name,
            "A",
            "+short",
            "+tries=1",
        ])
        .arg(format!("+subnet={subnet}"))
        .output()
        .expect("dig is installed (bind9-dnsutils)");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn pop_command(server: &Server, data: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .arg("pop")
        .args(args)
        .args(["--api-url", &server.url, "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    assert!(out.status.success(), "meridian pop {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn answers_follow_the_api_at_once_and_drains_stay_inside_the_set() {
    let (_tmp, data) = temp_dir();
    let server = Server::start(&data, &[]);
    let (key, _) = bootstrap(&data);
    let dns = server.dns();
    let name = "api.example.com";

    let (status, body) = curl(&fill(CREATE, &server.url, &key, ""));
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Pinned to us-cal-1 and eu: Germany gets Frankfurt, Japan California, never Tokyo.
    assert_eq!(dig(&dns, name, GERMANY), [EU]);
    assert_eq!(dig(&dns, name, JAPAN), [US_CAL_1]);

    let (status, _) = curl(&fill(ADD_JP, &server.url, &key, &id));
    assert_eq!(status, 200);
    assert_eq!(dig(&dns, name, JAPAN), [JP], "the very next answer");

    let (status, _) = curl(&fill(UNPIN, &server.url, &key, &id));
    assert_eq!(status, 200);
    assert_eq!(dig(&dns, name, JAPAN), [JP]);
    assert_eq!(dig(&dns, name, GERMANY), [EU]);

    let (status, _) = curl(&fill(CREATE, &server.url, &key, "").replace(name, "two.example.com"));
    assert_eq!(status, 201);
    let two = "two.example.com";

    // Drain Frankfurt with the CLI: the German client moves to California.
    let listed = pop_command(&server, &data, &["drain", "eu"]);
    assert!(
        listed.starts_with("eu") && listed.contains("drained"),
        "{listed}"
    );
    assert_eq!(dig(&dns, two, GERMANY), [US_CAL_1]);
    // The global domain sends Germany elsewhere too, but not to Frankfurt.
    let global = dig(&dns, name, GERMANY);
    assert_eq!(global.len(), 1);
    assert_ne!(global, [EU]);

    // Drain California too, through the API: the pinned set is all drained, and the answer
    // stays inside it (the nearest of the set), never Tokyo or another PoP.
    let drain_cal = format!(
        "curl -X PATCH {}/pops/us-cal-1 -H 'Authorization: Bearer {key}' -H 'ngrok-version: 2' \
         -H 'Content-Type: application/json' --data '{{\"drained\": true}}'",
        server.url
    );
    let (status, body) = curl(&drain_cal);
    assert_eq!(status, 200, "{body}");
    assert_eq!(dig(&dns, two, GERMANY), [EU]);
    assert_eq!(dig(&dns, two, JAPAN), [US_CAL_1]);

    let listed = pop_command(&server, &data, &["list"]);
    let drained: Vec<&str> = listed
        .lines()
        .filter(|l| l.ends_with("drained"))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(drained, ["us-cal-1", "eu"], "{listed}");
    pop_command(&server, &data, &["undrain", "eu"]);
    pop_command(&server, &data, &["undrain", "us-cal-1"]);
    assert_eq!(dig(&dns, two, JAPAN), [US_CAL_1]);
    assert_eq!(dig(&dns, name, GERMANY), [EU]);
}
