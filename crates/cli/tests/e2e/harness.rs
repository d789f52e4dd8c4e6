//! Starting the real `meridian` binary for a test: port 0, its own data directory, readiness
//! taken from the stable `api listening on` log line, and the output printed if the test
//! fails. The process is killed when the handle drops.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a start may take before the test gives up. Generous: it only bounds a hang.
const START_LIMIT: Duration = Duration::from_secs(60);

pub(crate) struct Server {
    child: Child,
    pub(crate) url: String,
    /// The DNS server's `ip:port`, from `dns listening on udp://…`.
    pub(crate) dns: Arc<Mutex<Option<String>>>,
    /// `(pop, kind)` → `ip:port`, from the `pop <code> <kind> listening on <url>` lines.
    pub(crate) pops: Arc<Mutex<std::collections::HashMap<(String, String), String>>>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Starts `meridian serve --data-dir DIR` with every listener on port 0, plus `extra`, and
    /// waits until the API listens.
    pub(crate) fn start(data_dir: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args(["--api-listen", "127.0.0.1:0"])
            .args(["--agent-port", "0", "--http-port", "0", "--https-port", "0"])
            .args(["--dns-listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning meridian");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut out = child.stdout.take().unwrap();
        let sink = stdout.clone();
        let out_reader = std::thread::spawn(move || {
            let mut buf = String::new();
            let _ = out.read_to_string(&mut buf);
            sink.lock().unwrap().push_str(&buf);
        });
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let pops = Arc::new(Mutex::new(std::collections::HashMap::new()));
        let pop_sink = pops.clone();
        let dns = Arc::new(Mutex::new(None));
        let dns_sink = dns.clone();
        let err_reader = std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&format!("{line}\n"));
                if let Some(rest) = line.split(" pop ").nth(1) {
                    let words: Vec<&str> = rest.split_whitespace().collect();
                    if let [code, kind, "listening", "on", url, ..] = words[..] {
                        let addr = url.split_once("://").map_or(url, |(_, a)| a);
                        pop_sink
                            .lock()
                            .unwrap()
                            .insert((code.to_owned(), kind.to_owned()), addr.to_owned());
                    }
                }
                if let Some((_, addr)) = line.split_once("dns listening on udp://") {
                    *dns_sink.lock().unwrap() = Some(addr.trim().to_owned());
                }
                if let Some((_, url)) = line.split_once("api listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let mut server = Self {
            child,
            url: String::new(),
            dns,
            pops,
            stdout,
            stderr,
            readers: vec![out_reader, err_reader],
        };
        server.url = rx
            .recv_timeout(START_LIMIT)
            .unwrap_or_else(|_| panic!("meridian did not start:\n{}", server.output()));
        server
    }

    /// `ip:port` of one PoP listener (`agent`, `http` or `https`).
    pub(crate) fn pop(&self, code: &str, kind: &str) -> String {
        self.pops.lock().unwrap()[&(code.to_owned(), kind.to_owned())].clone()
    }

    /// `ip:port` of the DNS server.
    pub(crate) fn dns(&self) -> String {
        self.dns
            .lock()
            .unwrap()
            .clone()
            .expect("dns listening line seen before the api's")
    }

    pub(crate) fn output(&self) -> String {
        format!(
            "--- stdout\n{}--- stderr\n{}",
            self.stdout.lock().unwrap(),
            self.stderr.lock().unwrap()
        )
    }

    /// SIGKILL: no shutdown code runs. Returns everything the process wrote to stdout.
    pub(crate) fn kill_9(mut self) -> String {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        self.stdout.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("{}", self.output());
        }
    }
}

/// The bootstrap secrets of a data directory.
pub(crate) fn bootstrap(data_dir: &Path) -> (String, String) {
    let text = std::fs::read_to_string(data_dir.join("bootstrap.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    (
        json["api_key"].as_str().unwrap().to_owned(),
        json["authtoken"].as_str().unwrap().to_owned(),
    )
}

/// Runs a shell command line that invokes `curl`, appending options that only shape output,
/// and returns the HTTP status and the body; a transfer that failed (a refused handshake, a
/// refused connection) is status 0 with curl's error as the body.
pub(crate) fn curl(command_line: &str) -> (u16, String) {
    let full = format!("{command_line} --silent --show-error --write-out '\\n%{{http_code}}'");
    let out = Command::new("bash")
        .arg("-c")
        .arg(&full)
        .output()
        .expect("running curl");
    if !out.status.success() {
        return (0, String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), body.to_owned())
}

/// A fresh PostgreSQL database on the test cluster, as a store URL.
pub(crate) fn postgres_store() -> String {
    let admin = std::env::var("MERIDIAN_TEST_POSTGRES")
        .expect("MERIDIAN_TEST_POSTGRES must name a PostgreSQL admin URL (see scripts/test)");
    let name = format!("meridian_e2e_{}", meridian_store::random_label());
    let out = Command::new("psql")
        .args([admin.as_str(), "-qc", &format!("CREATE DATABASE {name}")])
        .output()
        .expect("running psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("{}/{name}", admin.rsplit_once('/').unwrap().0)
}

pub(crate) fn temp_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    (dir, data)
}
