//! The queryable store: table `audit_records` in SQLite or PostgreSQL.
//! Both dialects get the same schema (TEXT timestamps, normalised so that text
//! order is time order), so the query code is shared.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use aura_guard_core::audit::format::line_hash;

use crate::record::Record;

pub enum Db {
    Sqlite(rusqlite::Connection),
    Postgres(Box<postgres::Client>),
}

/// Where DATABASE_URL points.
#[derive(Debug, PartialEq)]
pub enum DbTarget {
    Sqlite(PathBuf),
    Postgres(String),
}

pub fn parse_database_url(url: &str) -> DbTarget {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return DbTarget::Postgres(url.to_string());
    }
    // sqlite:///abs/path -> /abs/path; sqlite://rel/path and sqlite:rel/path -> rel/path.
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    DbTarget::Sqlite(PathBuf::from(path))
}

/// Version 1: the schema the collector created before it had versions (hence `IF NOT EXISTS`:
/// a database made by that collector is recorded as version 1 unchanged).
const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS audit_records (
    id TEXT PRIMARY KEY,
    ts TEXT NOT NULL,
    kind TEXT NOT NULL,
    type TEXT NOT NULL,
    severity TEXT NOT NULL,
    method TEXT,
    path TEXT,
    status INTEGER,
    client_ip TEXT,
    user_id TEXT,
    request_id TEXT,
    stream TEXT NOT NULL,
    seq BIGINT NOT NULL,
    prev_hash TEXT NOT NULL,
    line TEXT NOT NULL,
    received_at TEXT NOT NULL
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
    stream TEXT PRIMARY KEY,
    chained_seq BIGINT NOT NULL,
    seen_at TEXT NOT NULL
);
";

/// Version 2: where retention cut each stream (docs/audit.md §4, "Retention"): the rows up to
/// `seq` were deleted, and `hash` is the sha256 of the line at `seq`, which the next record's
/// `prev_hash` must equal, so `verify` starts the chain there.
const SCHEMA_V2: &str = "
CREATE TABLE IF NOT EXISTS audit_pruned (
    stream TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL,
    pruned_at TEXT NOT NULL
);
";

/// The migrations, in order: `MIGRATIONS[i]` brings the schema to version `i + 1`. Append
/// only; never edit one that has shipped.
const MIGRATIONS: [&str; 2] = [SCHEMA_V1, SCHEMA_V2];

/// The table that records the schema version, one row per applied migration.
const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    applied_at TEXT NOT NULL
)";

/// Where retention cut one stream: the rows up to `seq` are gone; `hash` is the line hash of
/// the record at `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pruned {
    pub seq: u64,
    pub hash: String,
}

/// One stream's cut by a retention run.
pub struct PruneReport {
    pub stream: String,
    pub seq: u64,
    pub rows: u64,
}

/// The URL with its password replaced by `***`, for the log.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return redact_query(url);
    };
    let user = match userinfo.split_once(':') {
        Some((u, _)) => format!("{u}:***"),
        None => userinfo.to_string(),
    };
    redact_query(&format!("{scheme}://{user}@{host}{tail}"))
}

/// `password=` in the query string, too.
fn redact_query(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => kv.to_string(),
        })
        .collect();
    format!("{base}?{}", parts.join("&"))
}

/// An error with its causes ("error performing TLS handshake: server does not support TLS"):
/// the client library's own message names only the step that failed.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !out.contains(&c_text) {
            out.push_str(": ");
            out.push_str(&c_text);
        }
        cause = c.source();
    }
    out
}

/// libpq's `sslmode` values; the client library knows only disable/prefer/require.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// Decodes `%XX` in a URL query value.
fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let hex = b
            .get(i.saturating_add(1)..i.saturating_add(3))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (c, hex) {
            (b'%', Some(x)) => {
                out.push(x);
                i = i.saturating_add(3);
            }
            _ => {
                out.push(c);
                i = i.saturating_add(1);
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Takes libpq's TLS parameters (`sslmode`, `sslrootcert`) out of the URL's query string,
/// which the client library would refuse (verify-ca, verify-full, sslrootcert), and gives the
/// URL back with `sslmode` as the library understands it.
fn take_tls_params(url: &str) -> Result<(String, SslMode, Option<String>), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), SslMode::Prefer, None));
    };
    let mut mode = SslMode::Prefer;
    let mut root = None;
    let mut keep = Vec::new();
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "sslmode" => {
                mode = match percent_decode(v).as_str() {
                    "disable" => SslMode::Disable,
                    "allow" | "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => return Err(format!("DATABASE_URL: unknown sslmode {other:?}")),
                }
            }
            "sslrootcert" => root = Some(percent_decode(v)),
            _ => keep.push(kv),
        }
    }
    let lib_mode = match mode {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => "require",
    };
    keep.push(match lib_mode {
        "disable" => "sslmode=disable",
        "prefer" => "sslmode=prefer",
        _ => "sslmode=require",
    });
    Ok((format!("{base}?{}", keep.join("&")), mode, root))
}

/// The TLS connector for `mode`, with libpq's meaning: `prefer` and `require` encrypt without
/// checking the server's certificate; `verify-ca` checks it against the roots (`sslrootcert`,
/// else the system's); `verify-full` also checks the host name.
fn tls_connector(
    mode: SslMode,
    root: Option<&str>,
) -> Result<postgres_native_tls::MakeTlsConnector, String> {
    let mut b = native_tls::TlsConnector::builder();
    match mode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => {
            b.danger_accept_invalid_certs(true);
            b.danger_accept_invalid_hostnames(true);
        }
        SslMode::VerifyCa => {
            b.danger_accept_invalid_hostnames(true);
        }
        SslMode::VerifyFull => {}
    }
    if let Some(path) = root {
        let pem = std::fs::read(path).map_err(|e| format!("sslrootcert {path}: {e}"))?;
        let cert = native_tls::Certificate::from_pem(&pem)
            .map_err(|e| format!("sslrootcert {path}: {e}"))?;
        b.add_root_certificate(cert);
    }
    let c = b.build().map_err(|e| format!("TLS setup: {e}"))?;
    Ok(postgres_native_tls::MakeTlsConnector::new(c))
}

/// Applies the migrations the database has not seen yet, in order, each in its own
/// transaction with its version row; all of them under a lock so two collectors starting
/// together do not both apply one. Idempotent: an up-to-date database is left alone.
fn migrate_sqlite(c: &mut rusqlite::Connection) -> Result<(), String> {
    let e = |e: rusqlite::Error| format!("sqlite schema: {e}");
    c.execute_batch(VERSION_TABLE).map_err(e)?;
    // IMMEDIATE: the write lock from the start, so the version read stays true.
    let tx = c
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(e)?;
    let current: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )
        .map_err(e)?;
    let now = crate::record::format_ts(time::OffsetDateTime::now_utc())?;
    let pending = pending_migrations(current)?;
    for (version, sql) in pending {
        tx.execute_batch(sql).map_err(e)?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
            rusqlite::params![version, now],
        )
        .map_err(e)?;
    }
    tx.commit().map_err(e)
}

fn migrate_postgres(c: &mut postgres::Client) -> Result<(), String> {
    let e = |e: postgres::Error| format!("postgres schema: {e}");
    c.batch_execute(VERSION_TABLE).map_err(e)?;
    let mut tx = c.transaction().map_err(e)?;
    // Serialises collectors migrating the same database at once.
    tx.batch_execute("LOCK TABLE schema_version IN EXCLUSIVE MODE")
        .map_err(e)?;
    let current: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_version",
            &[],
        )
        .and_then(|r| r.try_get(0))
        .map_err(e)?;
    let now = crate::record::format_ts(time::OffsetDateTime::now_utc())?;
    for (version, sql) in pending_migrations(current)? {
        tx.batch_execute(sql).map_err(e)?;
        let v = i32::try_from(version).map_err(|_| "schema version out of range".to_string())?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)",
            &[&v, &now],
        )
        .map_err(e)?;
    }
    tx.commit().map_err(e)
}

/// (version, SQL) of each migration after `current`; an error if the database is newer than
/// this collector (a downgrade): it does not know that schema.
fn pending_migrations(current: i64) -> Result<Vec<(i64, &'static str)>, String> {
    let latest = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    if current > latest {
        return Err(format!(
            "database schema version {current} is newer than this collector's ({latest}): upgrade the collector"
        ));
    }
    Ok((1..=latest)
        .zip(MIGRATIONS)
        .filter(|(v, _)| *v > current)
        .collect())
}

/// What a shipper last said about its stream: the last seq it had chained
/// (`x-aura-audit-chained`), and when (docs/audit.md §7, UNDELIVERED).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamMark {
    pub chained_seq: u64,
    /// Normalised UTC timestamp (text order = time order).
    pub seen_at: String,
}

/// How long `query` and `verify` wait for a connection.
const CLI_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Keeps the highest chained seq announced for a stream ([`Db::save_mark`]).
const MARK_SQLITE: &str =
    "INSERT INTO audit_streams (stream, chained_seq, seen_at) VALUES (?1, ?2, ?3) \
     ON CONFLICT (stream) DO UPDATE SET \
     chained_seq = MAX(audit_streams.chained_seq, excluded.chained_seq), \
     seen_at = excluded.seen_at";
const MARK_POSTGRES: &str =
    "INSERT INTO audit_streams (stream, chained_seq, seen_at) VALUES ($1, $2, $3) \
     ON CONFLICT (stream) DO UPDATE SET \
     chained_seq = GREATEST(audit_streams.chained_seq, EXCLUDED.chained_seq), \
     seen_at = EXCLUDED.seen_at";

/// Per stream with rows received before the cutoff (`?1`): the last seq of its prefix that
/// retention deletes, i.e. the highest seq below the first seq received since the cutoff
/// (all of the stream's rows if none was).
const PRUNE_CUTS_SQLITE: &str = "SELECT o.stream, MAX(o.seq) FROM audit_records o \
     WHERE o.received_at < ?1 AND o.seq < COALESCE( \
     (SELECT MIN(n.seq) FROM audit_records n WHERE n.stream = o.stream AND n.received_at >= ?1), \
     9223372036854775807) \
     GROUP BY o.stream";
const PRUNE_CUTS_POSTGRES: &str = "SELECT o.stream, MAX(o.seq) FROM audit_records o \
     WHERE o.received_at < $1 AND o.seq < COALESCE( \
     (SELECT MIN(n.seq) FROM audit_records n WHERE n.stream = o.stream AND n.received_at >= $1), \
     9223372036854775807) \
     GROUP BY o.stream";

/// Keeps the highest cut per stream (a later cut is always further on).
const PRUNED_UPSERT_SQLITE: &str =
    "INSERT INTO audit_pruned (stream, seq, hash, pruned_at) VALUES (?1, ?2, ?3, ?4) \
     ON CONFLICT (stream) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, \
     pruned_at = excluded.pruned_at WHERE excluded.seq > audit_pruned.seq";
const PRUNED_UPSERT_POSTGRES: &str =
    "INSERT INTO audit_pruned (stream, seq, hash, pruned_at) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (stream) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash, \
     pruned_at = EXCLUDED.pruned_at WHERE EXCLUDED.seq > audit_pruned.seq";

const INSERT_COLS: &str = "id, ts, kind, type, severity, method, path, status, client_ip, user_id, request_id, stream, seq, prev_hash, line, received_at";

/// Filters of `aura-collector query`; all optional, combined with AND.
#[derive(Debug, Default)]
pub struct Filters {
    pub since: Option<String>,
    pub until: Option<String>,
    pub type_: Option<String>,
    pub kind: Option<String>,
    pub ip: Option<String>,
    pub user: Option<String>,
    pub path_prefix: Option<String>,
    /// 0 = no limit.
    pub limit: u64,
}

fn status_i32(r: &Record) -> Option<i32> {
    r.status.map(i32::from)
}

fn seq_i64(r: &Record) -> Result<i64, String> {
    i64::try_from(r.seq).map_err(|_| "seq out of range".to_string())
}

impl Db {
    /// Opens the store for `query` and `verify`: no statement timeout (a verification of a
    /// large table may take long), a connect timeout so an unreachable server is an error.
    pub fn open(url: &str) -> Result<Self, String> {
        Self::connect(url, CLI_CONNECT_TIMEOUT, None)
    }

    /// Opens the store for `serve`: `timeout` bounds the connection (PostgreSQL's
    /// `connect_timeout`), every statement on the server (`statement_timeout`) and SQLite's
    /// wait for a lock (`busy_timeout`). A server that does not answer at all (stopped, or
    /// packets dropped) is bounded by the caller's deadline (`dbworker.rs`).
    pub fn open_with_timeout(url: &str, timeout: Duration) -> Result<Self, String> {
        Self::connect(url, timeout, Some(timeout))
    }

    fn connect(url: &str, connect: Duration, statement: Option<Duration>) -> Result<Self, String> {
        match parse_database_url(url) {
            DbTarget::Sqlite(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| format!("create {}: {e}", parent.display()))?;
                }
                let c = rusqlite::Connection::open(&path)
                    .map_err(|e| format!("open sqlite {}: {e}", path.display()))?;
                // WAL + FULL: a commit is on disk when it returns, and readers
                // (query/verify) do not block the collector.
                c.pragma_update(None, "journal_mode", "WAL")
                    .and_then(|()| c.pragma_update(None, "synchronous", "FULL"))
                    .and_then(|()| c.busy_timeout(statement.unwrap_or(CLI_CONNECT_TIMEOUT)))
                    .map_err(|e| format!("sqlite setup: {e}"))?;
                let mut c = c;
                migrate_sqlite(&mut c)?;
                Ok(Db::Sqlite(c))
            }
            DbTarget::Postgres(url) => {
                let (url, mode, root) = take_tls_params(&url)?;
                // The library's message may quote the URL, password and all: not repeated.
                let mut cfg: postgres::Config = url.parse().map_err(|_| {
                    format!("DATABASE_URL: not a PostgreSQL URL: {}", redact_url(&url))
                })?;
                cfg.connect_timeout(connect);
                if let Some(t) = statement {
                    // Server side: a statement that runs too long (a lock wait, an overloaded
                    // server) is cancelled by the server itself, and so is a session left idle
                    // inside a transaction by a collector that gave up on it.
                    let ms = t.as_millis();
                    let ours = format!(
                        "-c statement_timeout={ms} -c idle_in_transaction_session_timeout={}",
                        ms.saturating_mul(2)
                    );
                    let options = match cfg.get_options() {
                        Some(o) if !o.is_empty() => format!("{o} {ours}"),
                        _ => ours,
                    };
                    cfg.options(&options);
                }
                let tls = tls_connector(mode, root.as_deref())?;
                let mut c = cfg.connect(tls).map_err(|e| {
                    let e = with_causes(&e);
                    let hint = if e.contains("does not support TLS") {
                        " (the URL's sslmode asks for TLS; the server has ssl=off)"
                    } else {
                        ""
                    };
                    format!("connect postgres: {e}{hint}")
                })?;
                migrate_postgres(&mut c)?;
                Ok(Db::Postgres(Box::new(c)))
            }
        }
    }

    /// The stored line of each id that already exists.
    pub fn existing_lines(&mut self, ids: &[&str]) -> Result<HashMap<String, String>, String> {
        let mut out = HashMap::new();
        match self {
            Db::Sqlite(c) => {
                let mut st = c
                    .prepare_cached("SELECT line FROM audit_records WHERE id = ?1")
                    .map_err(|e| format!("sqlite: {e}"))?;
                for id in ids {
                    let mut rows = st.query([id]).map_err(|e| format!("sqlite: {e}"))?;
                    if let Some(row) = rows.next().map_err(|e| format!("sqlite: {e}"))? {
                        let line: String = row.get(0).map_err(|e| format!("sqlite: {e}"))?;
                        out.insert((*id).to_string(), line);
                    }
                }
            }
            Db::Postgres(c) => {
                let ids: Vec<String> = ids.iter().map(|s| (*s).to_string()).collect();
                let rows = c
                    .query(
                        "SELECT id, line FROM audit_records WHERE id = ANY($1)",
                        &[&ids],
                    )
                    .map_err(|e| format!("postgres: {e}"))?;
                for row in rows {
                    let id: String = row.try_get(0).map_err(|e| format!("postgres: {e}"))?;
                    let line: String = row.try_get(1).map_err(|e| format!("postgres: {e}"))?;
                    out.insert(id, line);
                }
            }
        }
        Ok(out)
    }

    /// Inserts all records in one transaction: all or nothing. `mark` (the batch's stream and
    /// announced chain end, see [`Db::save_mark`]) is saved in the same transaction, so a batch
    /// costs one commit (one fsync) rather than two, but best effort as on its own: inside a
    /// savepoint, its failure rolls back only itself and is returned as `Ok(Some(error))`.
    pub fn insert_all(
        &mut self,
        records: &[&Record],
        received_at: &str,
        mark: Option<(&str, u64)>,
    ) -> Result<Option<String>, String> {
        // A mark out of range is not saved; the records go in all the same.
        let (mark, bad_mark) = match mark.map(|(s, c)| i64::try_from(c).map(|c| (s, c))) {
            None => (None, None),
            Some(Ok(m)) => (Some(m), None),
            Some(Err(_)) => (None, Some("seq out of range".to_string())),
        };
        match self {
            Db::Sqlite(c) => {
                let mut tx = c.transaction().map_err(|e| format!("sqlite: {e}"))?;
                {
                    let mut st = tx
                        .prepare_cached(&format!(
                            "INSERT INTO audit_records ({INSERT_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16)"
                        ))
                        .map_err(|e| format!("sqlite: {e}"))?;
                    for r in records {
                        st.execute(rusqlite::params![
                            r.id,
                            r.ts,
                            r.kind,
                            r.type_,
                            r.severity,
                            r.method,
                            r.path,
                            status_i32(r),
                            r.client_ip,
                            r.user_id,
                            r.request_id,
                            r.stream,
                            seq_i64(r)?,
                            r.prev_hash,
                            r.line,
                            received_at
                        ])
                        .map_err(|e| format!("sqlite insert: {e}"))?;
                    }
                }
                let mark_error = mark.and_then(|(stream, chained)| {
                    tx.savepoint()
                        .and_then(|sp| {
                            sp.execute(
                                MARK_SQLITE,
                                rusqlite::params![stream, chained, received_at],
                            )?;
                            sp.commit()
                        })
                        .err()
                        .map(|e| format!("sqlite: {e}"))
                });
                tx.commit().map_err(|e| format!("sqlite commit: {e}"))?;
                Ok(mark_error.or(bad_mark))
            }
            Db::Postgres(c) => {
                let mut tx = c.transaction().map_err(|e| format!("postgres: {e}"))?;
                let st = tx
                    .prepare(&format!(
                        "INSERT INTO audit_records ({INSERT_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16)"
                    ))
                    .map_err(|e| format!("postgres: {e}"))?;
                for r in records {
                    let seq = seq_i64(r)?;
                    let status = status_i32(r);
                    tx.execute(
                        &st,
                        &[
                            &r.id,
                            &r.ts,
                            &r.kind,
                            &r.type_,
                            &r.severity,
                            &r.method,
                            &r.path,
                            &status,
                            &r.client_ip,
                            &r.user_id,
                            &r.request_id,
                            &r.stream,
                            &seq,
                            &r.prev_hash,
                            &r.line,
                            &received_at,
                        ],
                    )
                    .map_err(|e| format!("postgres insert: {e}"))?;
                }
                // A failed statement aborts a PostgreSQL transaction: the savepoint keeps the
                // records' insert whatever the mark does.
                let mark_error = mark.and_then(|(stream, chained)| {
                    tx.savepoint("mark")
                        .and_then(|mut sp| {
                            sp.execute(MARK_POSTGRES, &[&stream, &chained, &received_at])?;
                            sp.commit()
                        })
                        .err()
                        .map(|e| format!("postgres: {e}"))
                });
                tx.commit().map_err(|e| format!("postgres commit: {e}"))?;
                Ok(mark_error.or(bad_mark))
            }
        }
    }

    /// Keeps the highest chained seq a shipper announced for its stream.
    pub fn save_mark(&mut self, stream: &str, chained: u64, seen_at: &str) -> Result<(), String> {
        let chained = i64::try_from(chained).map_err(|_| "seq out of range".to_string())?;
        match self {
            Db::Sqlite(c) => c
                .execute(MARK_SQLITE, rusqlite::params![stream, chained, seen_at])
                .map(|_| ())
                .map_err(|e| format!("sqlite: {e}")),
            Db::Postgres(c) => c
                .execute(MARK_POSTGRES, &[&stream, &chained, &seen_at])
                .map(|_| ())
                .map_err(|e| format!("postgres: {e}")),
        }
    }

    /// Deletes the rows received before `cutoff` (a normalised timestamp) as a prefix of each
    /// stream's chain, and records where each stream was cut ([`Pruned`]), all in one
    /// transaction. Only a prefix: a row before the cut but received later (a late retry) keeps
    /// the rows after it, so what stays is one unbroken chain from the cut on.
    pub fn prune(&mut self, cutoff: &str) -> Result<Vec<PruneReport>, String> {
        let now = crate::record::format_ts(time::OffsetDateTime::now_utc())?;
        match self {
            Db::Sqlite(c) => {
                let e = |e: rusqlite::Error| format!("sqlite prune: {e}");
                let tx = c
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(e)?;
                let cuts: Vec<(String, i64)> = {
                    let mut st = tx.prepare(PRUNE_CUTS_SQLITE).map_err(e)?;
                    let rows = st
                        .query_map([cutoff], |r| Ok((r.get(0)?, r.get(1)?)))
                        .map_err(e)?;
                    rows.collect::<Result<_, _>>().map_err(e)?
                };
                let mut out = Vec::new();
                for (stream, seq) in cuts {
                    let line: String = tx
                        .query_row(
                            "SELECT line FROM audit_records WHERE stream = ?1 AND seq = ?2 ORDER BY id LIMIT 1",
                            rusqlite::params![stream, seq],
                            |r| r.get(0),
                        )
                        .map_err(e)?;
                    let hash = line_hash(line.as_bytes());
                    let rows = tx
                        .execute(
                            "DELETE FROM audit_records WHERE stream = ?1 AND seq <= ?2",
                            rusqlite::params![stream, seq],
                        )
                        .map_err(e)?;
                    tx.execute(
                        PRUNED_UPSERT_SQLITE,
                        rusqlite::params![stream, seq, hash, now],
                    )
                    .map_err(e)?;
                    out.push(PruneReport {
                        stream,
                        seq: u64::try_from(seq).unwrap_or(0),
                        rows: u64::try_from(rows).unwrap_or(u64::MAX),
                    });
                }
                tx.commit().map_err(e)?;
                Ok(out)
            }
            Db::Postgres(c) => {
                let e = |e: postgres::Error| format!("postgres prune: {e}");
                let mut tx = c.transaction().map_err(e)?;
                let cuts: Vec<(String, i64)> = tx
                    .query(PRUNE_CUTS_POSTGRES, &[&cutoff])
                    .map_err(e)?
                    .iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect::<Result<_, postgres::Error>>()
                    .map_err(e)?;
                let mut out = Vec::new();
                for (stream, seq) in cuts {
                    let line: String = tx
                        .query_one(
                            "SELECT line FROM audit_records WHERE stream = $1 AND seq = $2 ORDER BY id LIMIT 1",
                            &[&stream, &seq],
                        )
                        .and_then(|r| r.try_get(0))
                        .map_err(e)?;
                    let hash = line_hash(line.as_bytes());
                    let rows = tx
                        .execute(
                            "DELETE FROM audit_records WHERE stream = $1 AND seq <= $2",
                            &[&stream, &seq],
                        )
                        .map_err(e)?;
                    tx.execute(PRUNED_UPSERT_POSTGRES, &[&stream, &seq, &hash, &now])
                        .map_err(e)?;
                    out.push(PruneReport {
                        stream,
                        seq: u64::try_from(seq).unwrap_or(0),
                        rows,
                    });
                }
                tx.commit().map_err(e)?;
                Ok(out)
            }
        }
    }

    /// Where retention cut each stream, by stream.
    pub fn pruned(&mut self) -> Result<BTreeMap<String, Pruned>, String> {
        let sql = "SELECT stream, seq, hash FROM audit_pruned";
        let rows: Vec<(String, i64, String)> = match self {
            Db::Sqlite(c) => {
                let mut st = c.prepare(sql).map_err(|e| format!("sqlite: {e}"))?;
                let rows = st
                    .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                    .map_err(|e| format!("sqlite: {e}"))?;
                rows.collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("sqlite: {e}"))?
            }
            Db::Postgres(c) => {
                let rows = c.query(sql, &[]).map_err(|e| format!("postgres: {e}"))?;
                rows.iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                    .collect::<Result<Vec<_>, postgres::Error>>()
                    .map_err(|e| format!("postgres: {e}"))?
            }
        };
        Ok(rows
            .into_iter()
            .map(|(stream, seq, hash)| {
                let seq = u64::try_from(seq).unwrap_or(0);
                (stream, Pruned { seq, hash })
            })
            .collect())
    }

    /// Every stream's mark, by stream.
    pub fn marks(&mut self) -> Result<BTreeMap<String, StreamMark>, String> {
        let sql = "SELECT stream, chained_seq, seen_at FROM audit_streams";
        let rows: Vec<(String, i64, String)> = match self {
            Db::Sqlite(c) => {
                let mut st = c.prepare(sql).map_err(|e| format!("sqlite: {e}"))?;
                let rows = st
                    .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                    .map_err(|e| format!("sqlite: {e}"))?;
                rows.collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("sqlite: {e}"))?
            }
            Db::Postgres(c) => {
                let rows = c.query(sql, &[]).map_err(|e| format!("postgres: {e}"))?;
                rows.iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                    .collect::<Result<Vec<_>, postgres::Error>>()
                    .map_err(|e| format!("postgres: {e}"))?
            }
        };
        Ok(rows
            .into_iter()
            .map(|(stream, seq, seen_at)| {
                let chained_seq = u64::try_from(seq).unwrap_or(0);
                (
                    stream,
                    StreamMark {
                        chained_seq,
                        seen_at,
                    },
                )
            })
            .collect())
    }

    /// Lines matching the filters, oldest first.
    pub fn query(&mut self, f: &Filters) -> Result<Vec<String>, String> {
        let pg = matches!(self, Db::Postgres(_));
        let mut conds: Vec<String> = Vec::new();
        let mut params: Vec<String> = Vec::new();
        let mut add = |expr: &str, value: &str| {
            params.push(value.to_string());
            let n = params.len();
            let ph = if pg { format!("${n}") } else { format!("?{n}") };
            conds.push(expr.replace('#', &ph));
        };
        if let Some(v) = &f.since {
            add("ts >= #", v);
        }
        if let Some(v) = &f.until {
            add("ts < #", v);
        }
        if let Some(v) = &f.type_ {
            add("type = #", v);
        }
        if let Some(v) = &f.kind {
            add("kind = #", v);
        }
        if let Some(v) = &f.ip {
            add("client_ip = #", v);
        }
        if let Some(v) = &f.user {
            add("user_id = #", v);
        }
        if let Some(v) = &f.path_prefix {
            // substr, not LIKE: LIKE is case-insensitive in SQLite and treats % and _ specially.
            let n = v.chars().count();
            add(&format!("substr(path, 1, {n}) = #"), v);
        }
        let mut sql = String::from("SELECT line FROM audit_records");
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        sql.push_str(" ORDER BY ts, stream, seq");
        if f.limit > 0 {
            sql.push_str(&format!(" LIMIT {}", f.limit));
        }
        match self {
            Db::Sqlite(c) => {
                let mut st = c.prepare(&sql).map_err(|e| format!("sqlite: {e}"))?;
                let rows = st
                    .query_map(rusqlite::params_from_iter(params.iter()), |row| {
                        row.get::<_, String>(0)
                    })
                    .map_err(|e| format!("sqlite: {e}"))?;
                rows.collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("sqlite: {e}"))
            }
            Db::Postgres(c) => {
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = params
                    .iter()
                    .map(|p| p as &(dyn postgres::types::ToSql + Sync))
                    .collect();
                let rows = c.query(&sql, &refs).map_err(|e| format!("postgres: {e}"))?;
                rows.iter()
                    .map(|r| r.try_get::<_, String>(0))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("postgres: {e}"))
            }
        }
    }

    /// (id, line) of every record, by stream then seq (for `verify`).
    pub fn all_lines(&mut self) -> Result<Vec<(String, String)>, String> {
        let sql = "SELECT id, line FROM audit_records ORDER BY stream, seq, id";
        match self {
            Db::Sqlite(c) => {
                let mut st = c.prepare(sql).map_err(|e| format!("sqlite: {e}"))?;
                let rows = st
                    .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
                    .map_err(|e| format!("sqlite: {e}"))?;
                rows.collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("sqlite: {e}"))
            }
            Db::Postgres(c) => {
                let rows = c.query(sql, &[]).map_err(|e| format!("postgres: {e}"))?;
                rows.iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect::<Result<Vec<_>, postgres::Error>>()
                    .map_err(|e| format!("postgres: {e}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_hides_passwords_only() {
        assert_eq!(
            redact_url("postgres://audit:s3cret@db:5432/audit?sslmode=require"),
            "postgres://audit:***@db:5432/audit?sslmode=require"
        );
        assert_eq!(
            redact_url("postgresql://audit@db/audit?password=s3cret&sslmode=disable"),
            "postgresql://audit@db/audit?password=***&sslmode=disable"
        );
        // An '@' in the password: everything up to the last one is user info.
        assert_eq!(
            redact_url("postgres://a:p@ss@db/x"),
            "postgres://a:***@db/x"
        );
        assert_eq!(redact_url("./data/audit.db"), "./data/audit.db");
    }

    #[test]
    fn tls_params_leave_the_url_as_the_library_reads_it() {
        let (url, mode, root) = take_tls_params(
            "postgres://u@h/db?connect_timeout=3&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(url, "postgres://u@h/db?connect_timeout=3&sslmode=require");
        assert_eq!(
            (mode, root.as_deref()),
            (SslMode::VerifyFull, Some("/etc/ca.pem"))
        );
        let (url, mode, _) = take_tls_params("postgres://u@h/db").unwrap();
        assert_eq!((url.as_str(), mode), ("postgres://u@h/db", SslMode::Prefer));
        assert_eq!(
            take_tls_params("postgres://u@h/db?sslmode=disable")
                .unwrap()
                .1,
            SslMode::Disable
        );
        assert!(take_tls_params("postgres://u@h/db?sslmode=bogus").is_err());
    }

    #[test]
    fn migrations_after_a_version() {
        assert_eq!(pending_migrations(0).unwrap().len(), MIGRATIONS.len());
        assert_eq!(
            pending_migrations(1)
                .unwrap()
                .iter()
                .map(|(v, _)| *v)
                .collect::<Vec<_>>(),
            vec![2]
        );
        assert!(pending_migrations(2).unwrap().is_empty());
        assert!(pending_migrations(3).is_err());
    }

    #[test]
    fn database_url_forms() {
        assert_eq!(
            parse_database_url("sqlite:///var/lib/a.db"),
            DbTarget::Sqlite("/var/lib/a.db".into())
        );
        assert_eq!(
            parse_database_url("sqlite://data/a.db"),
            DbTarget::Sqlite("data/a.db".into())
        );
        assert_eq!(
            parse_database_url("./data/audit.db"),
            DbTarget::Sqlite("./data/audit.db".into())
        );
        assert!(matches!(
            parse_database_url("postgresql://u@127.0.0.1:5/db"),
            DbTarget::Postgres(_)
        ));
    }
}
