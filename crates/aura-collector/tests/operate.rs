//! What an operator relies on (docs/audit.md §5): the CLI (clap), the JSON log without
//! secrets, `/metrics` with exact counts, schema migrations of an existing database, and
//! retention of database rows that `verify` still checks from the cut on.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use serde_json::{json, Value};

fn sqlite(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

fn versions(path: &Path) -> Vec<i64> {
    let c = sqlite(path);
    let mut st = c
        .prepare("SELECT version FROM schema_version ORDER BY version")
        .unwrap();
    let v = st
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<Vec<i64>, _>>()
        .unwrap();
    v
}

fn verify_db(db: &str) -> (Option<i32>, String) {
    let o = run(&["verify"], db);
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
    )
}

/// One sample's value from the text exposition, by its full name with labels.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn scrape(c: &Collector) -> String {
    let (status, body) = http(&c.addr, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn help_and_version_exit_0_and_unknown_flags_are_refused() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["query", "--help"],
        vec!["verify", "--help"],
        vec!["help"],
        vec!["--version"],
    ] {
        let o = Command::new(BIN).args(&args).env_clear().output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{args:?}");
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("aura-collector"), "{args:?}: {out}");
    }
    let o = Command::new(BIN).arg("--help").output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    for flag in [
        "--listen",
        "--log-dir",
        "--retention-days",
        "--max-file-bytes",
        "--database-url",
        "--db-timeout-ms",
    ] {
        assert!(out.contains(flag), "{flag} not in --help: {out}");
    }
    for args in [
        vec!["--bogus"],
        vec!["serve", "--bogus"],
        vec!["query", "--ip"],
        vec!["query", "--sinc", "2026-01-01T00:00:00Z"],
        vec!["verify", "--allow-missing-start=yes"],
        vec!["verify", "stray"],
        vec!["frobnicate"],
    ] {
        let o = Command::new(BIN).args(&args).env_clear().output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?} accepted");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("error"), "{args:?}: {err}");
    }
}

#[test]
fn log_is_json_lines_without_the_token_or_a_database_password() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("collector.log");
    let db = format!("sqlite://{}", tmp.path().join("a.db").display());
    let c = Collector::start_logging_to(
        &tmp.path().join("logs"),
        &db,
        &[],
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    let mut ch = Chain::new("s");
    let line = ch.next(json!({}));
    assert_eq!(
        c.post(Some(TOKEN), &batch(std::slice::from_ref(&line))).0,
        200
    );
    assert_eq!(
        c.post(Some("wrong-token-0123456789"), &batch(&[line])).0,
        401
    );
    assert!(c.stop());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.is_empty());
    let mut messages = Vec::new();
    for l in text.lines() {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{l}");
        messages.push(v["message"].as_str().unwrap().to_string());
    }
    assert!(messages.contains(&"listening".to_string()), "{text}");
    assert!(messages.contains(&"stopping".to_string()), "{text}");
    assert!(!text.contains(TOKEN), "{text}");
    assert!(!text.contains("wrong-token"), "{text}");

    // A PostgreSQL URL with a password: unreachable, or not even a URL; the error is logged,
    // the password is not.
    for url in [
        "postgres://audit:S3cretPassw0rd@127.0.0.1:1/audit?connect_timeout=2",
        "postgres://audit:S3cretPassw0rd@127.0.0.1:notaport/audit",
        "postgres://127.0.0.1:1/audit?password=S3cretPassw0rd&connect_timeout=2",
    ] {
        let o = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env_clear()
            .env("AUDIT_COLLECTOR_TOKEN", TOKEN)
            .env("AUDIT_LOG_DIR", tmp.path().join("logs2"))
            .env("DATABASE_URL", url)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{url}");
        let err = String::from_utf8_lossy(&o.stderr);
        let v: Value = serde_json::from_str(err.lines().last().unwrap()).unwrap();
        assert_eq!(v["level"], "ERROR", "{err}");
        assert!(v["error"].as_str().unwrap().contains("postgres"), "{err}");
        assert!(!err.contains("S3cretPassw0rd"), "{err}");
        assert!(!err.contains(TOKEN), "{err}");
    }
}

#[test]
fn metrics_count_a_known_sequence_of_batches_exactly() {
    let (_tmp, c) = {
        let tmp = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}", tmp.path().join("a.db").display());
        let c = Collector::start(&tmp.path().join("logs"), &db, &[]);
        (tmp, c)
    };
    // Before any batch: every counter is there, at 0.
    let m = scrape(&c);
    assert_eq!(
        sample(&m, "aura_collector_records_stored_total"),
        Some(0.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "aura_collector_write_seconds_count"),
        Some(0.0),
        "{m}"
    );

    let mut ch = Chain::new("m");
    let lines: Vec<String> = (0..3).map(|_| ch.next(json!({}))).collect();
    assert_eq!(c.post(Some(TOKEN), &batch(&lines)).0, 200); // 3 stored
    assert_eq!(c.post(Some(TOKEN), &batch(&lines)).0, 200); // 3 duplicates
    assert_eq!(c.post(None, &batch(&lines)).0, 401);
    assert_eq!(
        c.post(Some("wrong-token-0123456789"), &batch(&lines)).0,
        401
    );
    let (s, _) = http(
        &c.addr,
        "POST",
        "/v1/batches",
        &[
            ("Content-Type", "text/plain".to_string()),
            ("Authorization", format!("Bearer {TOKEN}")),
        ],
        batch(&lines).as_bytes(),
    );
    assert_eq!(s, 415);
    assert_eq!(c.post(Some(TOKEN), "not json\n").0, 400);
    // Two records, one reusing a stored id with other content: 409, both counted rejected.
    let mut other = Chain::new("m");
    let changed = other.next(json!({"path": "/elsewhere"}));
    let fresh = ch.next(json!({}));
    assert_eq!(c.post(Some(TOKEN), &batch(&[fresh, changed])).0, 409);

    let m = scrape(&c);
    let expect = [
        ("aura_collector_batches_total{result=\"ok\"}", 2.0),
        ("aura_collector_batches_total{result=\"unauthorized\"}", 2.0),
        (
            "aura_collector_batches_total{result=\"unsupported_media_type\"}",
            1.0,
        ),
        ("aura_collector_batches_total{result=\"invalid\"}", 1.0),
        ("aura_collector_batches_total{result=\"conflict\"}", 1.0),
        ("aura_collector_records_accepted_total", 6.0),
        ("aura_collector_records_stored_total", 3.0),
        ("aura_collector_records_duplicate_total", 3.0),
        (
            "aura_collector_records_rejected_total{reason=\"conflict\"}",
            2.0,
        ),
        (
            "aura_collector_records_rejected_total{reason=\"unauthorized\"}",
            0.0,
        ),
        ("aura_collector_db_errors_total", 0.0),
        ("aura_collector_write_seconds_count", 1.0),
    ];
    for (name, v) in expect {
        assert_eq!(sample(&m, name), Some(v), "{name}\n{m}");
    }
    assert!(
        m.contains("# TYPE aura_collector_write_seconds histogram"),
        "{m}"
    );
    // /metrics takes no token, and refuses other methods.
    assert_eq!(http(&c.addr, "POST", "/metrics", &[], b"").0, 405);
}

#[test]
fn metrics_count_database_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dbfile = tmp.path().join("a.db");
    let c = Collector::start(
        &tmp.path().join("logs"),
        &format!("sqlite://{}", dbfile.display()),
        &[("AUDIT_DB_TIMEOUT_MS", "300")],
    );
    // Another writer holds the lock: the insert waits its busy_timeout and fails.
    let holder = sqlite(&dbfile);
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let mut ch = Chain::new("e");
    assert_eq!(c.post(Some(TOKEN), &batch(&[ch.next(json!({}))])).0, 503);
    holder.execute_batch("ROLLBACK").unwrap();
    let m = scrape(&c);
    assert!(
        sample(&m, "aura_collector_db_errors_total").unwrap() >= 1.0,
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "aura_collector_batches_total{result=\"storage_unavailable\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "aura_collector_records_rejected_total{reason=\"storage_unavailable\"}"
        ),
        Some(1.0),
        "{m}"
    );
}

#[test]
fn a_database_made_before_schema_versions_is_migrated_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let dbfile = tmp.path().join("old.db");
    let db = format!("sqlite://{}", dbfile.display());
    let mut ch = Chain::new("old");
    let first = ch.next(json!({}));
    {
        let c = sqlite(&dbfile);
        c.execute_batch(SCHEMA_BEFORE_VERSIONS).unwrap();
        c.execute(
            "INSERT INTO audit_records (id, ts, kind, type, severity, stream, seq, prev_hash, line, received_at) \
             VALUES ('old-1', '2026-03-01T10:00:00.000Z', 'operation', 'payment_refund', 'info', 'old', 1, ?1, ?2, '2026-03-01T10:00:01.000Z')",
            rusqlite::params![ZERO, first],
        )
        .unwrap();
    }
    // verify opens (and migrates) it: the old row is intact.
    let (code, out) = verify_db(&db);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("OK stream=old records=1 seq=1..1"), "{out}");
    assert_eq!(versions(&dbfile), vec![1, 2]);
    // Again: nothing applied twice.
    assert_eq!(verify_db(&db).0, Some(0));
    assert_eq!(versions(&dbfile), vec![1, 2]);

    let c = Collector::start(&tmp.path().join("logs"), &db, &[]);
    assert_eq!(c.post(Some(TOKEN), &batch(&[ch.next(json!({}))])).0, 200);
    assert!(c.stop());
    assert_eq!(versions(&dbfile), vec![1, 2]);
    let (code, out) = verify_db(&db);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("OK stream=old records=2 seq=1..2"), "{out}");

    // A database from a newer collector: refused, not guessed at.
    sqlite(&dbfile)
        .execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (99, 'x')",
            [],
        )
        .unwrap();
    let (code, out) = verify_db(&db);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("schema version 99 is newer"), "{out}");
}

#[test]
fn retention_deletes_old_rows_and_verify_checks_the_chain_from_the_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let dbfile = tmp.path().join("a.db");
    let db = format!("sqlite://{}", dbfile.display());
    let logs = tmp.path().join("logs");
    let mut kept = Chain::new("kept");
    let mut gone = Chain::new("gone");
    let kept_lines: Vec<String> = (0..5).map(|_| kept.next(json!({}))).collect();
    let gone_lines: Vec<String> = (0..2).map(|_| gone.next(json!({}))).collect();
    {
        let c = Collector::start(&logs, &db, &[]);
        assert_eq!(c.post(Some(TOKEN), &batch(&kept_lines)).0, 200);
        assert_eq!(c.post(Some(TOKEN), &batch(&gone_lines)).0, 200);
        assert!(c.stop());
    }
    // Make seq 1..3 of `kept` and all of `gone` old; `gone`'s shipper announced seq 2 long ago.
    {
        let c = sqlite(&dbfile);
        c.execute(
            "UPDATE audit_records SET received_at = '2020-01-01T00:00:00.000Z' \
             WHERE (stream = 'kept' AND seq <= 3) OR stream = 'gone'",
            [],
        )
        .unwrap();
        c.execute(
            "INSERT INTO audit_streams (stream, chained_seq, seen_at) VALUES ('gone', 2, '2020-01-01T00:00:00.000Z')",
            [],
        )
        .unwrap();
    }
    let c = Collector::start(&logs, &db, &[("AUDIT_RETENTION_DAYS", "30")]);
    let m = scrape(&c);
    assert_eq!(
        sample(&m, "aura_collector_retention_deleted_total{store=\"db\"}"),
        Some(5.0),
        "{m}"
    );
    let rows = stdout_lines(&run(&["query", "--limit", "0"], &db));
    assert_eq!(rows, kept_lines[3..].to_vec());
    // The files are today's: kept.
    assert_eq!(file_lines(&logs).len(), 7);

    let (code, out) = verify_db(&db);
    assert_eq!(code, Some(0), "{out}");
    let h3 = sha256_hex(&kept_lines[2]);
    assert!(
        out.contains(&format!(
            "PRUNED stream=kept seq=1..3: deleted by retention; the chain goes on from hash {h3}"
        )),
        "{out}"
    );
    assert!(out.contains("OK stream=kept records=2 seq=4..5"), "{out}");
    assert!(out.contains("PRUNED stream=gone seq=1..2"), "{out}");
    assert!(!out.contains("UNDELIVERED"), "{out}");

    // The chain goes on after the cut.
    assert_eq!(c.post(Some(TOKEN), &batch(&[kept.next(json!({}))])).0, 200);
    assert_eq!(verify_db(&db).0, Some(0));
    assert!(c.stop());

    // The first record after the cut is altered: caught against the recorded hash.
    let mut v: Value = serde_json::from_str(&kept_lines[3]).unwrap();
    v["prev_hash"] = json!(ZERO);
    sqlite(&dbfile)
        .execute(
            "UPDATE audit_records SET line = ?1 WHERE id = 'kept-4'",
            [v.to_string()],
        )
        .unwrap();
    let (code, out) = verify_db(&db);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("HASH_BREAK stream=kept seq=4 at db id=kept-4"),
        "{out}"
    );
    // Rows deleted past the cut: MISSING, not hidden by it.
    sqlite(&dbfile)
        .execute("DELETE FROM audit_records WHERE id = 'kept-4'", [])
        .unwrap();
    let (code, out) = verify_db(&db);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("MISSING stream=kept seq=4..4 (after the retention cut at seq 3"),
        "{out}"
    );
}
