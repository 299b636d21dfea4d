//! HTTP side: `POST /v1/batches`, `GET /healthz` and `GET /metrics` on a small synchronous server.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aura_guard_core::audit::format::Limits;
use aura_guard_core::audit::service::CHAINED_HEADER;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use tiny_http::{Header, Method, Request, Response, Server};

use crate::db::Db;
use crate::dbworker::{DbWorker, Done};
use crate::files::{rollback, FileStore, Touched};
use crate::metrics::{Metrics, Reason};
use crate::record::{format_ts, parse_line, split_lines, Record};

/// Largest accepted batch body (the format's limit).
pub const MAX_BODY_BYTES: usize = Limits::BATCH_BYTES;
/// Most records in one batch (the format's limit).
pub const MAX_RECORDS: usize = Limits::BATCH_RECORDS;
const WORKERS: usize = 4;

pub struct ServeConfig {
    pub listen: String,
    pub token: String,
    pub log_dir: PathBuf,
    pub retention_days: u32,
    pub max_file_bytes: u64,
    pub database_url: String,
    /// Deadline of every database operation (`AUDIT_DB_TIMEOUT_MS`, docs/audit.md §5).
    pub db_timeout: Duration,
}

/// A batch appended to the files whose DB insert did not say it committed (an error, or no
/// answer within the deadline): its lines stay in the files until the DB says whether the
/// rows exist ([`Store::settle`]). Cutting them at once would lose them from the files for
/// good if the commit did land (a retry then finds the rows and appends nothing); keeping them
/// when it did not would append them twice on the retry.
struct InDoubt {
    touched: Vec<Touched>,
    ids: Vec<String>,
}

struct Store {
    files: FileStore,
    db: DbWorker,
    in_doubt: Option<InDoubt>,
}

impl Store {
    /// Decides a batch in doubt before anything else is stored: its rows committed (keep its
    /// file lines) or not (cut them off). An error while the DB cannot say.
    fn settle(&mut self) -> Result<(), String> {
        // A late answer: an insert that reports its commit decides; anything else is stale.
        if let Some(Done::Insert(Ok(_))) = self.db.poll() {
            if self.in_doubt.take().is_some() {
                tracing::info!("database: the late insert committed; file lines kept");
            }
        }
        let Some(doubt) = &self.in_doubt else {
            return Ok(());
        };
        let ids: Vec<&str> = doubt.ids.iter().map(String::as_str).collect();
        let found = self
            .db
            .existing_lines(&ids)
            .map_err(|e| format!("batch in doubt not settled: {e}"))?;
        if found.is_empty() {
            rollback(&doubt.touched);
        } else if found.len() != ids.len() {
            // One transaction commits all or nothing; keep the lines rather than lose some.
            tracing::warn!(
                stored = found.len(),
                records = ids.len(),
                "database: part of the batch in doubt stored; file lines kept"
            );
        }
        self.in_doubt = None;
        Ok(())
    }
}

struct Shared {
    store: Mutex<Store>,
    token_hash: [u8; 32],
    metrics: Metrics,
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

struct Reply {
    status: u16,
    body: serde_json::Value,
    /// Records in the batch, once parsed (for the metrics).
    records: usize,
    content_type: &'static str,
}

fn reply(status: u16, body: serde_json::Value) -> Reply {
    Reply {
        status,
        body,
        records: 0,
        content_type: "application/json",
    }
}

fn error(status: u16, msg: impl Into<String>) -> Reply {
    reply(status, json!({ "error": msg.into() }))
}

fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

fn authorised(shared: &Shared, req: &Request) -> bool {
    let Some(token) = header(req, "authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
    else {
        return false;
    };
    // Compare digests so neither the content nor the length leaks through timing.
    bool::from(sha256(token.as_bytes()).ct_eq(&shared.token_hash))
}

fn handle_batch(shared: &Shared, req: &mut Request) -> Reply {
    if !authorised(shared, req) {
        return error(401, "missing or wrong bearer token");
    }
    let ctype = header(req, "content-type").unwrap_or_default();
    let mime = ctype.split(';').next().unwrap_or_default().trim();
    if !mime.eq_ignore_ascii_case("application/x-ndjson") {
        return error(415, "Content-Type must be application/x-ndjson");
    }
    if req.body_length().is_some_and(|n| n > MAX_BODY_BYTES) {
        return error(413, format!("body larger than {MAX_BODY_BYTES} bytes"));
    }
    let mut body = Vec::new();
    let limit = u64::try_from(MAX_BODY_BYTES)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    if let Err(e) = req.as_reader().take(limit).read_to_end(&mut body) {
        return error(400, format!("cannot read body: {e}"));
    }
    if body.len() > MAX_BODY_BYTES {
        return error(413, format!("body larger than {MAX_BODY_BYTES} bytes"));
    }
    let Ok(body) = String::from_utf8(body) else {
        return error(400, "body is not UTF-8");
    };
    let lines = match split_lines(&body) {
        Ok(l) => l,
        Err(e) => return error(400, e),
    };
    if lines.len() > MAX_RECORDS {
        return error(413, format!("more than {MAX_RECORDS} records in one batch"));
    }
    let mut records: Vec<(usize, Record)> = Vec::with_capacity(lines.len());
    for (n, line) in lines {
        match parse_line(line) {
            Ok(r) => records.push((n, r)),
            Err(e) => return reply(400, json!({ "error": format!("line {n}: {e}"), "line": n })),
        }
    }
    let n_records = records.len();
    let mut r = store_batch(shared, req, records);
    r.records = n_records;
    r
}

fn store_batch(shared: &Shared, req: &Request, records: Vec<(usize, Record)>) -> Reply {
    // Same id twice in one batch: a copy is a duplicate, anything else is refused.
    let mut seen: HashMap<&str, (usize, &str)> = HashMap::new();
    let mut fresh: Vec<&(usize, Record)> = Vec::new();
    let mut duplicates = 0usize;
    for item in &records {
        let (n, r) = item;
        match seen.get(r.id.as_str()) {
            Some((_, line)) if *line == r.line => duplicates = duplicates.saturating_add(1),
            Some((m, _)) => {
                return reply(
                    400,
                    json!({ "error": format!("line {n}: id {} already used with different content on line {m}", r.id), "line": n }),
                )
            }
            None => {
                seen.insert(r.id.as_str(), (*n, r.line.as_str()));
                fresh.push(item);
            }
        }
    }

    let mut store = shared.store.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(e) = store.settle() {
        shared.metrics.db_error();
        tracing::error!(error = %e, "database");
        return error(503, "storage unavailable");
    }
    let ids: Vec<&str> = fresh.iter().map(|(_, r)| r.id.as_str()).collect();
    let existing = match store.db.existing_lines(&ids) {
        Ok(e) => e,
        Err(e) => {
            shared.metrics.db_error();
            tracing::error!(error = %e, "database");
            return error(503, "storage unavailable");
        }
    };
    let mut new: Vec<&Record> = Vec::new();
    for (n, r) in fresh {
        match existing.get(&r.id) {
            Some(line) if *line == r.line => duplicates = duplicates.saturating_add(1),
            Some(_) => {
                return reply(
                    409,
                    json!({ "error": format!("line {n}: id {} already stored with different content", r.id), "line": n }),
                )
            }
            None => new.push(r),
        }
    }
    let now = OffsetDateTime::now_utc();
    let received_at = format_ts(now).unwrap_or_default();
    let mark = announced(req, &records);
    let mut mark_result = None;
    if !new.is_empty() {
        let lines: Vec<&str> = new.iter().map(|r| r.line.as_str()).collect();
        // File first: if the DB commit then fails, the lines are cut off again
        // and the retry appends them once more; the other order could leave a
        // committed row whose file line is missing forever.
        let started = std::time::Instant::now();
        let touched = match store.files.append(&lines, now) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "file append");
                return error(503, "storage unavailable");
            }
        };
        // The mark rides in the insert's transaction: one commit (one fsync) per batch.
        match store.db.insert_all(&new, &received_at, mark) {
            Ok(r) => {
                shared.metrics.write_took(started.elapsed());
                mark_result = Some(r)
            }
            Err(e) => {
                shared.metrics.db_error();
                tracing::error!(error = %e, "database");
                store.in_doubt = Some(InDoubt {
                    touched,
                    ids: new.iter().map(|r| r.id.clone()).collect(),
                });
                // An error the DB answered (the insert is over) is settled now, so the file is
                // cut back at once; a timed-out insert stays in doubt until the DB answers.
                if let Err(e) = store.settle() {
                    shared.metrics.db_error();
                    tracing::error!(error = %e, "database");
                }
                return error(503, "storage unavailable");
            }
        }
    }
    // Best effort: the batch is stored either way; the next batch says it again.
    let mark_error = match (mark_result, mark) {
        (Some(r), _) => r,
        // Nothing new to insert (a retry): the mark on its own.
        (None, Some((stream, chained))) => store
            .db
            .save_mark(stream, chained, &received_at)
            .err()
            .map(|e| e.to_string()),
        (None, None) => None,
    };
    if let Some(e) = mark_error {
        shared.metrics.db_error();
        tracing::warn!(error = %e, "database: stream mark");
    }
    reply(
        200,
        json!({ "accepted": new.len(), "duplicates": duplicates }),
    )
}

/// The shipper's `x-aura-audit-chained` (the last seq it has chained in its stream) and the
/// batch's stream; None without the header or when the batch mixes streams.
fn announced<'a>(req: &Request, records: &'a [(usize, Record)]) -> Option<(&'a str, u64)> {
    let chained = header(req, CHAINED_HEADER)?.trim().parse::<u64>().ok()?;
    let stream = records.first()?.1.stream.as_str();
    if records.iter().any(|(_, r)| r.stream != stream) {
        return None;
    }
    Some((stream, chained))
}

/// The batch's outcome in the metrics: its status says why it was refused.
fn count_batch(m: &Metrics, r: &Reply) {
    let reason = match r.status {
        200 => {
            let n = |k: &str| {
                r.body
                    .get(k)
                    .and_then(serde_json::Value::as_u64)
                    .and_then(|v| usize::try_from(v).ok())
                    .unwrap_or(0)
            };
            m.batch_ok(n("accepted"), n("duplicates"));
            return;
        }
        401 => Reason::Unauthorized,
        415 => Reason::UnsupportedMediaType,
        413 => Reason::TooLarge,
        409 => Reason::Conflict,
        503 => Reason::StorageUnavailable,
        _ => Reason::Invalid,
    };
    m.batch_refused(reason, r.records);
}

fn route(shared: &Shared, req: &mut Request) -> Reply {
    let path = req.url().split('?').next().unwrap_or_default().to_string();
    match (req.method(), path.as_str()) {
        (Method::Get, "/healthz") => reply(200, json!({ "status": "ok" })),
        // Without the token: a scrape carries none, and the counts say nothing about the
        // records' content (docs/audit.md §5, "Metrics").
        (Method::Get, "/metrics") => match shared.metrics.render() {
            Ok(text) => Reply {
                status: 200,
                body: serde_json::Value::String(text),
                records: 0,
                content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
            },
            Err(e) => {
                tracing::error!(error = %e, "metrics");
                error(500, "metrics unavailable")
            }
        },
        (Method::Post, "/v1/batches") => {
            let r = handle_batch(shared, req);
            count_batch(&shared.metrics, &r);
            r
        }
        (_, "/healthz") | (_, "/v1/batches") | (_, "/metrics") => error(405, "method not allowed"),
        _ => error(404, "not found"),
    }
}

fn respond(req: Request, r: Reply) {
    let body = match r.body {
        serde_json::Value::String(text) if r.content_type != "application/json" => text,
        other => other.to_string(),
    };
    let mut resp = Response::from_string(body).with_status_code(r.status);
    if let Ok(h) = Header::from_bytes(&b"Content-Type"[..], r.content_type.as_bytes()) {
        resp = resp.with_header(h);
    }
    if r.status == 401 {
        if let Ok(h) = Header::from_bytes(&b"WWW-Authenticate"[..], &b"Bearer"[..]) {
            resp = resp.with_header(h);
        }
    }
    if let Err(e) = req.respond(resp) {
        tracing::warn!(error = %e, "cannot send response");
    }
}

/// Deletes the files and database rows older than the retention (docs/audit.md §4,
/// "Retention"). The rows go through a connection of their own with no statement timeout
/// (a large delete may take longer than `AUDIT_DB_TIMEOUT_MS`), outside the store lock: rows
/// being inserted meanwhile are new, so never in the pruned range.
fn run_retention(shared: &Shared, cfg: &ServeConfig) {
    let now = OffsetDateTime::now_utc();
    {
        let store = shared.store.lock().unwrap_or_else(|p| p.into_inner());
        match store.files.apply_retention(cfg.retention_days, now) {
            Ok(deleted) => {
                shared
                    .metrics
                    .retention("files", u64::try_from(deleted.len()).unwrap_or(u64::MAX));
                for d in deleted {
                    tracing::info!(file = %d, "retention deleted a file");
                }
            }
            Err(e) => tracing::error!(error = %e, "retention: files"),
        }
    }
    let result = crate::files::retention_cutoff(cfg.retention_days, now)
        .and_then(|cutoff| Db::open(&cfg.database_url)?.prune(&cutoff));
    match result {
        Ok(pruned) => {
            for p in &pruned {
                shared.metrics.retention("db", p.rows);
                tracing::info!(
                    stream = %p.stream,
                    up_to_seq = p.seq,
                    rows = p.rows,
                    "retention deleted database rows"
                );
            }
        }
        Err(e) => {
            shared.metrics.db_error();
            tracing::error!(error = %e, "retention: database");
        }
    }
}

pub fn serve(cfg: ServeConfig) -> Result<(), String> {
    let files = FileStore::open(&cfg.log_dir, cfg.max_file_bytes)?;
    // Reachable at start, or the collector does not start (the worker reconnects later).
    drop(Db::open_with_timeout(&cfg.database_url, cfg.db_timeout)?);
    let shared = Arc::new(Shared {
        store: Mutex::new(Store {
            files,
            db: DbWorker::new(&cfg.database_url, cfg.db_timeout),
            in_doubt: None,
        }),
        token_hash: sha256(cfg.token.as_bytes()),
        metrics: Metrics::new(),
    });
    run_retention(&shared, &cfg);

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| format!("cannot install signal handler: {e}"))?;
    }
    // A write past the file size limit (RLIMIT_FSIZE) raises SIGXFSZ, which kills the process
    // by default; caught, the write fails with EFBIG instead and the batch is answered 503
    // like any other full disk (docs/audit.md §5).
    signal_hook::flag::register(
        signal_hook::consts::SIGXFSZ,
        Arc::new(AtomicBool::new(false)),
    )
    .map_err(|e| format!("cannot install signal handler: {e}"))?;
    let server = Arc::new(
        Server::http(cfg.listen.as_str()).map_err(|e| format!("listen {}: {e}", cfg.listen))?,
    );
    let addr = server
        .server_addr()
        .to_ip()
        .map(|a| a.to_string())
        .unwrap_or_else(|| cfg.listen.clone());
    tracing::info!(
        listen = %addr,
        log_dir = %cfg.log_dir.display(),
        database = %crate::db::redact_url(&cfg.database_url),
        retention_days = cfg.retention_days,
        "listening"
    );
    // Tests and scripts read this line to learn the port (e.g. with --listen 127.0.0.1:0).
    {
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = writeln!(out, "aura-collector listening on {addr}").and_then(|()| out.flush());
    }

    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let server = Arc::clone(&server);
        let shared = Arc::clone(&shared);
        let stop = Arc::clone(&stop);
        workers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match server.recv_timeout(Duration::from_millis(200)) {
                    Ok(Some(mut req)) => {
                        let r = route(&shared, &mut req);
                        respond(req, r);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "accept"),
                }
            }
        }));
    }
    // Retention once a day, checked in short steps so a stop is prompt.
    let mut last_day = OffsetDateTime::now_utc().date();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        let today = OffsetDateTime::now_utc().date();
        if today != last_day {
            last_day = today;
            run_retention(&shared, &cfg);
        }
    }
    tracing::info!("stopping");
    for w in workers {
        if w.join().is_err() {
            tracing::error!("worker thread failed");
        }
    }
    Ok(())
}
