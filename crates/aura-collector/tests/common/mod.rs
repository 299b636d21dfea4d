//! Helpers for the integration tests: start the real binary on a free port,
//! talk HTTP to it, build hash-chained records.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    dead_code
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const BIN: &str = env!("CARGO_BIN_EXE_aura-collector");
pub const TOKEN: &str = "test-token-0123456789abcdef";
pub const ZERO: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub struct Collector {
    pub child: Child,
    pub addr: String,
    pub log_dir: PathBuf,
    pub db_url: String,
}

impl Collector {
    /// Starts `aura-collector serve` on 127.0.0.1:0 and reads the bound address
    /// from its first stdout line.
    pub fn start(log_dir: &Path, db_url: &str, extra_env: &[(&str, &str)]) -> Collector {
        Self::start_logging_to(log_dir, db_url, extra_env, Stdio::inherit())
    }

    /// [`Collector::start`] with the collector's stderr (its log) sent to `stderr`.
    pub fn start_logging_to(
        log_dir: &Path,
        db_url: &str,
        extra_env: &[(&str, &str)],
        stderr: Stdio,
    ) -> Collector {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .env_clear()
            .env("AUDIT_COLLECTOR_TOKEN", TOKEN)
            .env("AUDIT_LOG_DIR", log_dir)
            .env("DATABASE_URL", db_url)
            .stdout(Stdio::piped())
            .stderr(stderr);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn aura-collector");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let addr = first
            .trim()
            .strip_prefix("aura-collector listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_string();
        Collector {
            child,
            addr,
            log_dir: log_dir.to_path_buf(),
            db_url: db_url.to_string(),
        }
    }

    pub fn post(&self, token: Option<&str>, body: &str) -> (u16, Value) {
        let mut headers = vec![("Content-Type", "application/x-ndjson".to_string())];
        if let Some(t) = token {
            headers.push(("Authorization", format!("Bearer {t}")));
        }
        let (status, body) = http(&self.addr, "POST", "/v1/batches", &headers, body.as_bytes());
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// SIGTERM, then wait; returns whether it exited successfully.
    pub fn stop(mut self) -> bool {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        for _ in 0..100 {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Minimal HTTP/1.1 client (Connection: close) so the tests need no HTTP crate.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let resp = String::from_utf8(resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// A shipper stream: builds records with seq and prev_hash chained.
pub struct Chain {
    pub stream: String,
    pub seq: u64,
    pub prev: String,
}

impl Chain {
    pub fn new(stream: &str) -> Chain {
        Chain {
            stream: stream.to_string(),
            seq: 0,
            prev: ZERO.to_string(),
        }
    }

    /// Next record: an operation with defaults, `patch` fields overriding them.
    pub fn next(&mut self, patch: Value) -> String {
        self.seq += 1;
        let mut v = json!({
            "v": 1,
            "id": format!("{}-{}", self.stream, self.seq),
            "ts": "2026-03-01T10:00:00.000Z",
            "kind": "operation",
            "type": "payment_refund",
            "severity": "info",
            "method": "POST",
            "path": "/api/v1/payments/refund",
            "status": 200,
            "duration_ms": 7,
            "client_ip": "203.0.113.7",
            "user_id": null,
            "user_agent": "test",
            "request_id": format!("req-{}", self.seq),
            "outcome": "completed",
            "request_body": {"amount": 10, "password": "[REDACTED]"},
            "metadata": {},
            "stream": self.stream,
            "seq": self.seq,
            "prev_hash": self.prev,
        });
        if let Value::Object(p) = patch {
            for (k, val) in p {
                v[k] = val;
            }
        }
        let line = v.to_string();
        self.prev = sha256_hex(&line);
        line
    }

    /// Skips `n` sequence numbers (as if records were lost in transit).
    pub fn skip(&mut self, n: u64) {
        self.seq += n;
    }

    pub fn gap(&mut self, dropped: u64) -> String {
        self.next(json!({
            "kind": "gap", "type": "records_dropped", "severity": "high",
            "method": null, "path": null, "status": null, "duration_ms": null,
            "client_ip": null, "user_agent": null, "request_id": null,
            "outcome": "dropped", "request_body": null,
            "metadata": {"dropped": dropped, "reason": "queue_full"}
        }))
    }
}

pub fn batch(lines: &[String]) -> String {
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

pub fn run(args: &[&str], db_url: &str) -> Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .env("DATABASE_URL", db_url)
        .output()
        .unwrap()
}

pub fn stdout_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

pub fn today() -> String {
    time::OffsetDateTime::now_utc().date().to_string()
}

/// All lines of all audit files in `dir`, in file-name order.
pub fn file_lines(dir: &Path) -> Vec<String> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    names.sort();
    names
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The schema the collector created before it had versions (copied from that code), so the
/// migration test starts from a database the old collector made.
pub const SCHEMA_BEFORE_VERSIONS: &str = "
CREATE TABLE IF NOT EXISTS audit_records (
    id TEXT PRIMARY KEY, ts TEXT NOT NULL, kind TEXT NOT NULL, type TEXT NOT NULL,
    severity TEXT NOT NULL, method TEXT, path TEXT, status INTEGER, client_ip TEXT,
    user_id TEXT, request_id TEXT, stream TEXT NOT NULL, seq BIGINT NOT NULL,
    prev_hash TEXT NOT NULL, line TEXT NOT NULL, received_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_records_ts ON audit_records (ts);
CREATE INDEX IF NOT EXISTS audit_records_type_ts ON audit_records (type, ts);
CREATE INDEX IF NOT EXISTS audit_records_kind_ts ON audit_records (kind, ts);
CREATE INDEX IF NOT EXISTS audit_records_ip_ts ON audit_records (client_ip, ts);
CREATE INDEX IF NOT EXISTS audit_records_user_ts ON audit_records (user_id, ts);
CREATE INDEX IF NOT EXISTS audit_records_path ON audit_records (path);
CREATE INDEX IF NOT EXISTS audit_records_request_id ON audit_records (request_id);
CREATE INDEX IF NOT EXISTS audit_records_stream_seq ON audit_records (stream, seq);
CREATE TABLE IF NOT EXISTS audit_streams (
    stream TEXT PRIMARY KEY, chained_seq BIGINT NOT NULL, seen_at TEXT NOT NULL
);
";
