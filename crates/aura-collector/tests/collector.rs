//! End-to-end tests: the real binary, started on a free port, with SQLite.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::json;

fn setup() -> (tempfile::TempDir, Collector) {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("audit.db");
    let c = Collector::start(
        &tmp.path().join("logs"),
        &format!("sqlite://{}", db.display()),
        &[],
    );
    (tmp, c)
}

/// A running collector and a chain of stream `s1` to post to it.
fn setup_with_chain() -> (tempfile::TempDir, Collector, Chain) {
    let (tmp, c) = setup();
    (tmp, c, Chain::new("s1"))
}

fn query(c: &Collector, args: &[&str]) -> Vec<String> {
    let mut a = vec!["query"];
    a.extend_from_slice(args);
    let o = run(&a, &c.db_url);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    stdout_lines(&o)
}

/// Exactly `n` records are stored, in the files and in the database alike.
fn assert_stored(c: &Collector, n: usize) {
    assert_eq!(file_lines(&c.log_dir).len(), n, "file lines");
    assert_eq!(query(c, &[]).len(), n, "database rows");
}

#[test]
fn refuses_to_start_without_token() {
    let tmp = tempfile::tempdir().unwrap();
    let o = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_clear()
        .env("AUDIT_LOG_DIR", tmp.path().join("logs"))
        .env("DATABASE_URL", tmp.path().join("a.db"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("AUDIT_COLLECTOR_TOKEN"));
}

#[test]
fn healthz_answers_200_and_sigterm_stops_cleanly() {
    let (_tmp, c) = setup();
    let (status, _) = http(&c.addr, "GET", "/healthz", &[], b"");
    assert_eq!(status, 200);
    assert!(c.stop(), "collector did not exit 0 after SIGTERM");
}

#[test]
fn missing_or_wrong_token_is_401_and_stores_nothing() {
    let (_tmp, c, mut ch) = setup_with_chain();
    let body = batch(&[ch.next(json!({}))]);
    assert_eq!(c.post(None, &body).0, 401);
    assert_eq!(c.post(Some("wrong-token-0123456789"), &body).0, 401);
    assert_eq!(c.post(Some(&TOKEN[..TOKEN.len() - 1]), &body).0, 401);
    assert_stored(&c, 0);
}

#[test]
fn wrong_content_type_is_415() {
    let (_tmp, c, mut ch) = setup_with_chain();
    let headers = [
        ("Authorization", format!("Bearer {TOKEN}")),
        ("Content-Type", "application/json".to_string()),
    ];
    let (status, _) = http(
        &c.addr,
        "POST",
        "/v1/batches",
        &headers,
        ch.next(json!({})).as_bytes(),
    );
    assert_eq!(status, 415);
}

#[test]
fn batch_is_stored_verbatim_in_file_and_sqlite() {
    let (tmp, c) = setup();
    let mut ch = Chain::new("s1");
    let lines: Vec<String> = (0..3).map(|_| ch.next(json!({}))).collect();
    let (status, body) = c.post(Some(TOKEN), &batch(&lines));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"accepted": 3, "duplicates": 0}));
    let file = c.log_dir.join(format!("audit-{}.jsonl", today()));
    let content = std::fs::read_to_string(&file).unwrap();
    assert_eq!(content, batch(&lines));
    assert_eq!(query(&c, &[]), lines);
    let conn = rusqlite::Connection::open(tmp.path().join("audit.db")).unwrap();
    let (id, ts, kind, type_, status, ip, stream, seq, line): (
        String,
        String,
        String,
        String,
        Option<i64>,
        String,
        String,
        i64,
        String,
    ) = conn
        .query_row(
            "SELECT id, ts, kind, type, status, client_ip, stream, seq, line FROM audit_records WHERE seq = 2",
            [],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                ))
            },
        )
        .unwrap();
    assert_eq!(
        (id.as_str(), ts.as_str(), kind.as_str(), type_.as_str()),
        (
            "s1-2",
            "2026-03-01T10:00:00.000Z",
            "operation",
            "payment_refund"
        )
    );
    assert_eq!(
        (status, ip.as_str(), stream.as_str(), seq),
        (Some(200), "203.0.113.7", "s1", 2)
    );
    assert_eq!(line, lines[1]);
}

#[test]
fn resent_batch_stores_nothing_twice() {
    let (_tmp, c, mut ch) = setup_with_chain();
    let lines: Vec<String> = (0..3).map(|_| ch.next(json!({}))).collect();
    assert_eq!(c.post(Some(TOKEN), &batch(&lines)).0, 200);
    let (status, body) = c.post(Some(TOKEN), &batch(&lines));
    assert_eq!(
        (status, body),
        (200, json!({"accepted": 0, "duplicates": 3}))
    );
    // A retry overlapping with new records stores only the new one.
    let mut more = lines[1..].to_vec();
    more.push(ch.next(json!({})));
    let (status, body) = c.post(Some(TOKEN), &batch(&more));
    assert_eq!(
        (status, body),
        (200, json!({"accepted": 1, "duplicates": 2}))
    );
    assert_stored(&c, 4);
}

#[test]
fn reused_id_with_different_content_is_409_and_stores_nothing() {
    let (_tmp, c, mut ch) = setup_with_chain();
    let first = ch.next(json!({}));
    assert_eq!(c.post(Some(TOKEN), &batch(&[first])).0, 200);
    let mut other = Chain::new("s1");
    let forged = other.next(json!({"client_ip": "198.51.100.1"}));
    let next = ch.next(json!({}));
    let (status, body) = c.post(Some(TOKEN), &batch(&[next, forged]));
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["line"], 2);
    assert_stored(&c, 1);
}

#[test]
fn malformed_line_rejects_the_whole_batch() {
    let (_tmp, c, mut ch) = setup_with_chain();
    let good1 = ch.next(json!({}));
    let good3 = ch.next(json!({}));
    let body = format!("{good1}\n{{\"v\":1,\"id\":\n{good3}\n");
    let (status, resp) = c.post(Some(TOKEN), &body);
    assert_eq!(status, 400);
    assert_eq!(resp["line"], 2);
    assert!(
        resp["error"].as_str().unwrap().starts_with("line 2:"),
        "{resp}"
    );
    // A valid-JSON line that breaks the format is refused the same way.
    let bad_kind = ch.next(json!({"kind": "other"}));
    let (status, resp) = c.post(Some(TOKEN), &batch(&[good1.clone(), bad_kind]));
    assert_eq!(status, 400);
    assert!(resp["error"].as_str().unwrap().contains("kind"), "{resp}");
    assert_stored(&c, 0);
}

#[test]
fn query_filters_select_the_right_records() {
    let (_tmp, c) = setup();
    let mut ch = Chain::new("q1");
    let lines = vec![
        ch.next(json!({"ts": "2026-03-01T09:00:00.000Z", "user_id": "u1"})),
        ch.next(json!({"ts": "2026-03-01T10:00:00.000Z", "type": "user_delete", "method": "DELETE", "path": "/api/v1/auth/users/5", "user_id": "u2"})),
        ch.next(json!({"ts": "2026-03-01T11:00:00.000Z", "kind": "security_event", "type": "webhook_validation_failure", "severity": "medium", "client_ip": "198.51.100.9", "path": "/api/v1/webhooks/stripe", "outcome": "blocked", "status": 401})),
        ch.next(json!({"ts": "2026-03-02T08:00:00+02:00", "client_ip": "198.51.100.9"})),
    ];
    assert_eq!(c.post(Some(TOKEN), &batch(&lines)).0, 200);
    let ids = |args: &[&str]| -> Vec<u64> {
        query(&c, args)
            .iter()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    };
    assert_eq!(ids(&[]), vec![1, 2, 3, 4]);
    assert_eq!(ids(&["--type", "user_delete"]), vec![2]);
    assert_eq!(ids(&["--kind", "security_event"]), vec![3]);
    assert_eq!(ids(&["--ip", "198.51.100.9"]), vec![3, 4]);
    assert_eq!(ids(&["--user", "u2"]), vec![2]);
    assert_eq!(ids(&["--path", "/api/v1/auth/"]), vec![2]);
    assert_eq!(ids(&["--path", "/api/v1/"]), vec![1, 2, 3, 4]);
    assert_eq!(
        ids(&[
            "--since",
            "2026-03-01T10:00:00Z",
            "--until",
            "2026-03-01T11:00:00Z"
        ]),
        vec![2]
    );
    // 08:00+02:00 is 06:00Z: the offset is honoured.
    assert_eq!(ids(&["--since", "2026-03-02T05:59:00Z"]), vec![4]);
    assert_eq!(ids(&["--ip", "198.51.100.9", "--limit", "1"]), vec![3]);
    let o = run(&["query", "--since", "yesterday"], &c.db_url);
    assert_eq!(o.status.code(), Some(2));
}

fn verify(args: &[&str], db_url: &str) -> (i32, String) {
    let mut a = vec!["verify"];
    a.extend_from_slice(args);
    let o = run(&a, db_url);
    (
        o.status.code().unwrap(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

#[test]
fn verify_passes_on_an_intact_chain_in_db_and_files() {
    let (_tmp, c) = setup();
    let mut a = Chain::new("a");
    let mut b = Chain::new("b");
    for _ in 0..2 {
        let lines = vec![a.next(json!({})), b.next(json!({})), a.next(json!({}))];
        assert_eq!(c.post(Some(TOKEN), &batch(&lines)).0, 200);
    }
    let (code, out) = verify(&[], &c.db_url);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("OK stream=a records=4 seq=1..4"), "{out}");
    assert!(out.contains("OK stream=b records=2 seq=1..2"), "{out}");
    let dir = c.log_dir.to_str().unwrap().to_string();
    let (code, out) = verify(&["--files", &dir], &c.db_url);
    assert_eq!(code, 0, "{out}");
}

fn stored_file(c: &Collector, n: usize) -> (std::path::PathBuf, Vec<String>) {
    let mut ch = Chain::new("f");
    let lines: Vec<String> = (0..n).map(|_| ch.next(json!({}))).collect();
    assert_eq!(c.post(Some(TOKEN), &batch(&lines)).0, 200);
    (c.log_dir.join(format!("audit-{}.jsonl", today())), lines)
}

/// Rewrites the stored file with `lines` and runs `verify --files`, which must fail; returns
/// its output and the file's name.
fn verify_rewritten(c: &Collector, file: &std::path::Path, lines: &[String]) -> (String, String) {
    std::fs::write(file, batch(lines)).unwrap();
    let dir = c.log_dir.to_str().unwrap().to_string();
    let (code, out) = verify(&["--files", &dir], &c.db_url);
    assert_eq!(code, 1, "{out}");
    let name = file.file_name().unwrap().to_str().unwrap().to_string();
    (out, name)
}

#[test]
fn verify_files_detects_a_removed_line() {
    let (_tmp, c) = setup();
    let (file, mut lines) = stored_file(&c, 5);
    lines.remove(2);
    let (out, name) = verify_rewritten(&c, &file, &lines);
    assert!(
        out.contains(&format!(
            "MISSING stream=f seq=3..3 (after seq 2 at {name}:2, before seq 4 at {name}:3)"
        )),
        "{out}"
    );
    assert!(
        out.contains("FAILED stream=f records=4 seq=1..5 problems=1"),
        "{out}"
    );
}

#[test]
fn verify_files_detects_an_edited_line() {
    let (_tmp, c) = setup();
    let (file, mut lines) = stored_file(&c, 4);
    lines[1] = lines[1].replace("203.0.113.7", "192.0.2.66");
    let (out, name) = verify_rewritten(&c, &file, &lines);
    assert!(
        out.contains(&format!("HASH_BREAK stream=f seq=3 at {name}:3:")),
        "{out}"
    );
    // The DB copy is untouched and still verifies.
    assert_eq!(verify(&[], &c.db_url).0, 0);
}

#[test]
fn verify_reports_gap_records_and_seq_gaps() {
    let (_tmp, c) = setup();
    let mut ch = Chain::new("g");
    let mut lines = vec![ch.next(json!({})), ch.gap(12), ch.next(json!({}))];
    // Lost in transit: seq 4 and 5 never arrive.
    ch.skip(2);
    lines.push(ch.next(json!({})));
    assert_eq!(c.post(Some(TOKEN), &batch(&lines)).0, 200);
    let (code, out) = verify(&[], &c.db_url);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "GAP stream=g seq=2 at db id=g-2: shipper dropped 12 records (reason: queue_full)"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "MISSING stream=g seq=4..5 (after seq 3 at db id=g-3, before seq 6 at db id=g-6)"
        ),
        "{out}"
    );
    assert!(
        out.contains("FAILED stream=g records=4 seq=1..6 problems=2"),
        "{out}"
    );
}

#[test]
fn size_rotation_starts_new_files_and_chain_spans_them() {
    let tmp = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", tmp.path().join("a.db").display());
    let c = Collector::start(
        &tmp.path().join("logs"),
        &db,
        &[("AUDIT_MAX_FILE_BYTES", "1500")],
    );
    let mut ch = Chain::new("r");
    let mut all = Vec::new();
    for _ in 0..3 {
        let lines: Vec<String> = (0..3).map(|_| ch.next(json!({}))).collect();
        assert_eq!(c.post(Some(TOKEN), &batch(&lines)).0, 200);
        all.extend(lines);
    }
    let d = today();
    let base = c.log_dir.join(format!("audit-{d}.jsonl"));
    let rotated = c.log_dir.join(format!("audit-{d}.1.jsonl"));
    assert!(base.exists() && rotated.exists());
    for entry in std::fs::read_dir(&c.log_dir).unwrap() {
        let len = entry.unwrap().metadata().unwrap().len();
        assert!(len <= 1500, "file of {len} bytes passes the limit");
    }
    let mut stored = file_lines(&c.log_dir);
    stored.sort();
    all.sort();
    assert_eq!(stored, all);
    let dir = c.log_dir.to_str().unwrap().to_string();
    let (code, out) = verify(&["--files", &dir], &db);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn retention_deletes_old_files_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let now = time::OffsetDateTime::now_utc().date();
    let recent = (now - time::Duration::days(10)).to_string();
    let old = (now - time::Duration::days(31)).to_string();
    for name in [
        format!("audit-{old}.jsonl"),
        format!("audit-{old}.2.jsonl"),
        "audit-2020-01-01.jsonl".to_string(),
        format!("audit-{recent}.jsonl"),
        "notes.txt".to_string(),
    ] {
        std::fs::write(logs.join(name), "x\n").unwrap();
    }
    let db = format!("sqlite://{}", tmp.path().join("a.db").display());
    let c = Collector::start(&logs, &db, &[("AUDIT_RETENTION_DAYS", "30")]);
    let mut left: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(
        left,
        vec![format!("audit-{recent}.jsonl"), "notes.txt".to_string()]
    );
    drop(c);
}

#[test]
fn db_failure_is_503_cuts_the_file_back_and_the_retry_stores_once() {
    let (tmp, c) = setup();
    let mut ch = Chain::new("d");
    let first = ch.next(json!({}));
    assert_eq!(
        c.post(Some(TOKEN), &batch(std::slice::from_ref(&first))).0,
        200
    );
    // Make the DB refuse one record of the next batch, after the file append.
    let conn = rusqlite::Connection::open(tmp.path().join("audit.db")).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER boom BEFORE INSERT ON audit_records WHEN NEW.id = 'd-3' \
         BEGIN SELECT RAISE(ABORT, 'boom'); END;",
    )
    .unwrap();
    let next = vec![ch.next(json!({})), ch.next(json!({}))];
    let (status, body) = c.post(Some(TOKEN), &batch(&next));
    assert_eq!(status, 503, "{body}");
    assert_eq!(file_lines(&c.log_dir), vec![first.clone()]);
    assert_eq!(query(&c, &[]), vec![first.clone()]);
    conn.execute_batch("DROP TRIGGER boom;").unwrap();
    let (status, body) = c.post(Some(TOKEN), &batch(&next));
    assert_eq!(
        (status, body),
        (200, json!({"accepted": 2, "duplicates": 0}))
    );
    assert_eq!(file_lines(&c.log_dir).len(), 3);
    let dir = c.log_dir.to_str().unwrap().to_string();
    assert_eq!(verify(&["--files", &dir], &c.db_url).0, 0);
}

#[test]
fn file_failure_is_503_and_stores_nothing() {
    let (_tmp, c) = setup();
    // The log directory turns into a plain file: the append cannot happen.
    std::fs::remove_dir_all(&c.log_dir).unwrap();
    std::fs::write(&c.log_dir, "not a directory").unwrap();
    let mut ch = Chain::new("e");
    let lines = vec![ch.next(json!({}))];
    assert_eq!(c.post(Some(TOKEN), &batch(&lines)).0, 503);
    assert!(query(&c, &[]).is_empty());
    std::fs::remove_file(&c.log_dir).unwrap();
    std::fs::create_dir(&c.log_dir).unwrap();
    assert_eq!(c.post(Some(TOKEN), &batch(&lines)).0, 200);
    assert_eq!(file_lines(&c.log_dir), lines);
}

/// A running collector that stored one record of chain `s1`, and today's file.
fn setup_with_one_record() -> (
    tempfile::TempDir,
    Collector,
    Chain,
    String,
    std::path::PathBuf,
) {
    setup_with_one_record_logging_to(None)
}

/// [`setup_with_one_record`], the collector's log written to `log` when given.
fn setup_with_one_record_logging_to(
    log: Option<std::fs::File>,
) -> (
    tempfile::TempDir,
    Collector,
    Chain,
    String,
    std::path::PathBuf,
) {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("audit.db");
    let c = Collector::start_logging_to(
        &tmp.path().join("logs"),
        &format!("sqlite://{}", db.display()),
        &[],
        log.map_or_else(std::process::Stdio::inherit, Into::into),
    );
    let mut ch = Chain::new("s1");
    let first = ch.next(json!({}));
    assert_eq!(
        c.post(Some(TOKEN), &batch(std::slice::from_ref(&first))).0,
        200
    );
    let file = c.log_dir.join(format!("audit-{}.jsonl", today()));
    (tmp, c, ch, first, file)
}

#[test]
fn a_torn_last_line_is_cut_before_the_next_append() {
    // A write cut short (the collector killed mid-batch, a rollback that failed) leaves a
    // line without its LF; it was never acknowledged. The next append must not glue a record
    // to it.
    let (_tmp, c, mut ch, first, file) = setup_with_one_record();
    let torn = ch.next(json!({}));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    std::io::Write::write_all(&mut f, &torn.as_bytes()[..torn.len() / 2]).unwrap();
    drop(f);
    // The shipper sends the torn record again (it was never acknowledged).
    let (status, body) = c.post(Some(TOKEN), &batch(std::slice::from_ref(&torn)));
    assert_eq!(
        (status, body),
        (200, json!({"accepted": 1, "duplicates": 0}))
    );
    assert_eq!(file_lines(&c.log_dir), vec![first, torn]);
    assert!(std::fs::read(&file).unwrap().ends_with(b"\n"));
    let dir = c.log_dir.to_str().unwrap().to_string();
    assert_eq!(verify(&["--files", &dir], &c.db_url).0, 0);
}

fn set_file_size_limit(c: &Collector, limit: &str) {
    let st = Command::new("prlimit")
        .args([
            "--pid",
            &c.child.id().to_string(),
            &format!("--fsize={limit}:"),
        ])
        .status()
        .unwrap();
    assert!(st.success(), "prlimit");
}

#[test]
fn a_write_past_the_file_size_limit_is_503_leaves_no_torn_line_and_the_retry_stores_once() {
    // RLIMIT_FSIZE stands in for a full disk. The write past it raises SIGXFSZ, which killed
    // the collector before it caught the signal; now the write fails (EFBIG), the batch is
    // answered 503 and its bytes are cut off again. The collector's own log is a file on the
    // same full disk, already past the limit: its log lines fail too, and must not take the
    // worker serving the batch down with them (it did: `eprintln!` panics, tiny_http said 500).
    let mut own_log = tempfile::tempfile().unwrap();
    own_log.set_len(1 << 20).unwrap();
    std::io::Seek::seek(&mut own_log, std::io::SeekFrom::End(0)).unwrap();
    let (_tmp, c, mut ch, first, file) = setup_with_one_record_logging_to(Some(own_log));
    let size = std::fs::metadata(&file).unwrap().len();
    // Room for half of the next line: the write is cut short inside it.
    let next = vec![ch.next(json!({})), ch.next(json!({}))];
    set_file_size_limit(&c, &(size + next[0].len() as u64 / 2).to_string());
    let (status, body) = c.post(Some(TOKEN), &batch(&next));
    assert_eq!(status, 503, "{body}");
    assert_eq!(body, json!({"error": "storage unavailable"}));
    assert_eq!(
        file_lines(&c.log_dir),
        vec![first.clone()],
        "cut back, no torn line"
    );
    assert_eq!(std::fs::metadata(&file).unwrap().len(), size);
    assert_eq!(query(&c, &[]), vec![first.clone()]);
    set_file_size_limit(&c, "unlimited");
    let (status, body) = c.post(Some(TOKEN), &batch(&next));
    assert_eq!(
        (status, body),
        (200, json!({"accepted": 2, "duplicates": 0}))
    );
    assert_stored(&c, 3);
    let dir = c.log_dir.to_str().unwrap().to_string();
    assert_eq!(verify(&["--files", &dir], &c.db_url).0, 0);
    assert_eq!(verify(&[], &c.db_url).0, 0);
    assert!(c.stop(), "still running, stops cleanly");
}

#[test]
fn a_database_that_does_not_answer_in_time_is_503_and_the_batch_is_stored_once_later() {
    // Another connection holds SQLite's write lock: the insert waits. With
    // AUDIT_DB_TIMEOUT_MS the collector answers 503 within that bound (not when the lock
    // goes), keeps no half-stored batch, and the retry after the lock is released stores the
    // records exactly once, in the files and the DB.
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("audit.db");
    let url = format!("sqlite://{}", db.display());
    let c = Collector::start(
        &tmp.path().join("logs"),
        &url,
        &[("AUDIT_DB_TIMEOUT_MS", "300")],
    );
    let mut ch = Chain::new("t");
    let first = ch.next(json!({}));
    assert_eq!(
        c.post(Some(TOKEN), &batch(std::slice::from_ref(&first))).0,
        200
    );
    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE; INSERT INTO audit_records (id, ts, kind, type, severity, stream, seq, prev_hash, line, received_at) VALUES ('x', 't', 'k', 't', 's', 'x', 1, 'p', 'l', 'r');").unwrap();
    let next = vec![ch.next(json!({})), ch.next(json!({}))];
    let t0 = std::time::Instant::now();
    let (status, body) = c.post(Some(TOKEN), &batch(&next));
    assert_eq!(status, 503, "{body}");
    // The lock is released only after this answer: without the deadline the insert waited
    // SQLite's former 10 s busy timeout.
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    lock.execute_batch("ROLLBACK;").unwrap();
    let mut answered = (0, json!(null));
    for _ in 0..50 {
        answered = c.post(Some(TOKEN), &batch(&next));
        if answered.0 == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The insert that timed out may have committed once the lock went (then the retry finds
    // its rows), or not (then the retry stores them): either way once.
    assert_eq!(answered.0, 200, "{answered:?}");
    let (a, d) = (
        answered.1["accepted"].as_u64(),
        answered.1["duplicates"].as_u64(),
    );
    assert_eq!(a.unwrap() + d.unwrap(), 2, "{answered:?}");
    assert_stored(&c, 3);
    let dir = c.log_dir.to_str().unwrap().to_string();
    assert_eq!(verify(&["--files", &dir], &c.db_url).0, 0);
}

fn post_announcing(c: &Collector, lines: &[String], chained: u64) -> u16 {
    let headers = [
        ("Content-Type", "application/x-ndjson".to_string()),
        ("Authorization", format!("Bearer {TOKEN}")),
        ("x-aura-audit-chained", chained.to_string()),
    ];
    http(
        &c.addr,
        "POST",
        "/v1/batches",
        &headers,
        batch(lines).as_bytes(),
    )
    .0
}

#[test]
fn records_a_shipper_announced_but_never_delivered_are_reported_once_it_is_silent() {
    // The shipper says with each batch how far its chain reaches (x-aura-audit-chained),
    // records still buffered behind the batch included. Records it never delivers (Envoy
    // restarted with them buffered) used to vanish without a trace: the stream just ended.
    let (_tmp, c, mut ch) = setup_with_chain();
    let lines = vec![ch.next(json!({})), ch.next(json!({}))];
    assert_eq!(post_announcing(&c, &lines, 5), 200);
    // Within the grace period they may still be on their way: informational.
    let (code, out) = verify(&[], &c.db_url);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("PENDING stream=s1 seq=3..5: chained by the shipper"),
        "{out}"
    );
    // After it (0 s here): a problem.
    std::thread::sleep(Duration::from_millis(20));
    let (code, out) = verify(&["--grace-s", "0"], &c.db_url);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("UNDELIVERED stream=s1 seq=3..5: chained by the shipper (last heard "),
        "{out}"
    );
    assert!(
        out.contains("FAILED stream=s1 records=2 seq=1..2 problems=1"),
        "{out}"
    );
    // A lower announcement (a late retry) never lowers the mark; delivering the rest clears it.
    assert_eq!(post_announcing(&c, &lines, 2), 200);
    assert!(verify(&["--grace-s", "0"], &c.db_url)
        .1
        .contains("seq=3..5"));
    let rest = vec![ch.next(json!({})), ch.next(json!({})), ch.next(json!({}))];
    assert_eq!(post_announcing(&c, &rest, 5), 200);
    let (code, out) = verify(&["--grace-s", "0"], &c.db_url);
    assert_eq!(code, 0, "{out}");
    assert!(
        !out.contains("UNDELIVERED") && !out.contains("PENDING"),
        "{out}"
    );
}

#[test]
fn a_stream_mark_that_fails_leaves_the_batch_stored() {
    // The mark is saved in the batch's own transaction (one commit per batch), but it stays
    // best effort: its failure rolls back only itself, never the records.
    let (tmp, c, mut ch) = setup_with_chain();
    let conn = rusqlite::Connection::open(tmp.path().join("audit.db")).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER no_mark BEFORE INSERT ON audit_streams \
         BEGIN SELECT RAISE(ABORT, 'no mark'); END;",
    )
    .unwrap();
    let lines = vec![ch.next(json!({})), ch.next(json!({}))];
    assert_eq!(post_announcing(&c, &lines, 5), 200);
    assert_stored(&c, 2);
    let marks: i64 = conn
        .query_row("SELECT COUNT(*) FROM audit_streams", [], |r| r.get(0))
        .unwrap();
    assert_eq!(marks, 0);
    // Once the mark can be saved again, the next batch's announcement is kept.
    conn.execute_batch("DROP TRIGGER no_mark;").unwrap();
    let more = vec![ch.next(json!({}))];
    assert_eq!(post_announcing(&c, &more, 5), 200);
    let chained: i64 = conn
        .query_row("SELECT chained_seq FROM audit_streams", [], |r| r.get(0))
        .unwrap();
    assert_eq!(chained, 5);
}
