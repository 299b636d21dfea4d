//! aura-collector: receives audit batches from the aura-guard filter, stores
//! them durably (JSONL files + SQLite/PostgreSQL), answers incident-response
//! queries and verifies the records' hash chains. See docs/audit.md.

mod db;
mod dbworker;
mod files;
mod metrics;
mod server;
mod verify;

use aura_collector::record;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use db::{Db, Filters};

/// Audit collector for aura-guard (docs/audit.md). Without a subcommand it serves.
///
/// Environment: AUDIT_COLLECTOR_TOKEN (required by serve, at least 16 characters),
/// AUDIT_COLLECTOR_LISTEN, AUDIT_LOG_DIR, AUDIT_RETENTION_DAYS, AUDIT_MAX_FILE_BYTES,
/// AUDIT_DATABASE_URL or DATABASE_URL, AUDIT_DB_TIMEOUT_MS, ENVIRONMENT (production changes
/// the default log dir). Flags win over the environment.
/// Exit status: 0 ok, 1 verify found problems, 2 usage or runtime error.
#[derive(Parser)]
#[command(
    name = "aura-collector",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Receive batches on POST /v1/batches, store them, serve /healthz and /metrics.
    Serve(ServeArgs),
    /// Print the stored records matching the filters as NDJSON, oldest first.
    Query(QueryArgs),
    /// Check every stream's hash chain (the DB, or the files with --files).
    Verify(VerifyArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Listen address (env AUDIT_COLLECTOR_LISTEN; default 127.0.0.1:9300; port 0 picks one).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Directory of the JSONL files (env AUDIT_LOG_DIR).
    #[arg(long, value_name = "DIR")]
    log_dir: Option<String>,
    /// Days of files and database rows kept (env AUDIT_RETENTION_DAYS; default 365).
    #[arg(long, value_name = "N")]
    retention_days: Option<String>,
    /// Size rotation of the files (env AUDIT_MAX_FILE_BYTES; default 100 MiB).
    #[arg(long, value_name = "N")]
    max_file_bytes: Option<String>,
    /// SQLite path or postgres:// URL (env AUDIT_DATABASE_URL, else DATABASE_URL).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Deadline of every database call (env AUDIT_DB_TIMEOUT_MS; default 3000).
    #[arg(long, value_name = "N")]
    db_timeout_ms: Option<String>,
}

#[derive(Args)]
struct QueryArgs {
    /// ts >= T (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    since: Option<String>,
    /// ts < T (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    until: Option<String>,
    /// Exact record type.
    #[arg(long = "type", value_name = "T")]
    type_: Option<String>,
    /// operation, security_event or gap.
    #[arg(long, value_name = "K")]
    kind: Option<String>,
    /// Exact client IP.
    #[arg(long, value_name = "IP")]
    ip: Option<String>,
    /// Exact user id.
    #[arg(long, value_name = "ID")]
    user: Option<String>,
    /// Path prefix (case-sensitive, no wildcards).
    #[arg(long, value_name = "PREFIX")]
    path: Option<String>,
    /// At most N records (default 1000; 0 = no limit).
    #[arg(long, value_name = "N")]
    limit: Option<String>,
    /// SQLite path or postgres:// URL (env AUDIT_DATABASE_URL, else DATABASE_URL).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
}

#[derive(Args)]
struct VerifyArgs {
    /// Verify the JSONL files of DIR instead of the database.
    #[arg(long, value_name = "DIR")]
    files: Option<String>,
    /// A stream may begin after seq 1 (files deleted by retention).
    #[arg(long)]
    allow_missing_start: bool,
    /// Seconds of silence after which announced records are UNDELIVERED (default 300).
    #[arg(long, value_name = "N")]
    grace_s: Option<String>,
    /// SQLite path or postgres:// URL (env AUDIT_DATABASE_URL, else DATABASE_URL).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
}

/// How long after a shipper's last batch records it announced but never delivered count as
/// lost (UNDELIVERED) rather than on their way (PENDING): docs/audit.md §7.
const DEFAULT_GRACE_S: u32 = 300;
const DEFAULT_MAX_FILE_BYTES: u64 = 100 * 1024 * 1024;
/// Under the shipper's default `timeout_ms` (5000), so the shipper gets the collector's 503
/// rather than its own timeout (docs/audit.md §5).
const DEFAULT_DB_TIMEOUT_MS: u64 = 3000;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The flag, else the first environment variable set (an empty one counts as unset).
fn or_env(flag: &Option<String>, env_names: &[&str]) -> Option<String> {
    flag.clone()
        .or_else(|| env_names.iter().find_map(|n| env(n)))
}

fn database_url(flag: &Option<String>) -> String {
    or_env(flag, &["AUDIT_DATABASE_URL", "DATABASE_URL"])
        .unwrap_or_else(|| "./data/audit.db".to_string())
}

fn parse_num<T: std::str::FromStr>(name: &str, v: Option<String>, default: T) -> Result<T, String> {
    match v {
        None => Ok(default),
        Some(s) => s
            .trim()
            .parse::<T>()
            .map_err(|_| format!("{name}: not a valid number: {s:?}")),
    }
}

fn cmd_serve(a: &ServeArgs) -> Result<ExitCode, String> {
    let token = env("AUDIT_COLLECTOR_TOKEN")
        .ok_or("AUDIT_COLLECTOR_TOKEN is not set: refusing to start without a token")?;
    if token.len() < 16 {
        return Err("AUDIT_COLLECTOR_TOKEN: must be at least 16 characters".into());
    }
    let production = env("ENVIRONMENT").is_some_and(|e| e.eq_ignore_ascii_case("production"));
    let log_dir = or_env(&a.log_dir, &["AUDIT_LOG_DIR"]).unwrap_or_else(|| {
        if production {
            "/var/log/auraconnect/audit".into()
        } else {
            "./logs/audit".into()
        }
    });
    let cfg = server::ServeConfig {
        listen: or_env(&a.listen, &["AUDIT_COLLECTOR_LISTEN"])
            .unwrap_or_else(|| "127.0.0.1:9300".into()),
        token,
        log_dir: PathBuf::from(log_dir),
        retention_days: parse_num(
            "AUDIT_RETENTION_DAYS",
            or_env(&a.retention_days, &["AUDIT_RETENTION_DAYS"]),
            365u32,
        )?,
        max_file_bytes: parse_num(
            "AUDIT_MAX_FILE_BYTES",
            or_env(&a.max_file_bytes, &["AUDIT_MAX_FILE_BYTES"]),
            DEFAULT_MAX_FILE_BYTES,
        )?,
        database_url: database_url(&a.database_url),
        db_timeout: std::time::Duration::from_millis(parse_num(
            "AUDIT_DB_TIMEOUT_MS",
            or_env(&a.db_timeout_ms, &["AUDIT_DB_TIMEOUT_MS"]),
            DEFAULT_DB_TIMEOUT_MS,
        )?),
    };
    if cfg.max_file_bytes == 0 {
        return Err("AUDIT_MAX_FILE_BYTES: must be > 0".into());
    }
    if cfg.db_timeout.is_zero() {
        return Err("AUDIT_DB_TIMEOUT_MS: must be > 0".into());
    }
    server::serve(cfg)?;
    Ok(ExitCode::SUCCESS)
}

fn ts_arg(v: &Option<String>, name: &str) -> Result<Option<String>, String> {
    v.as_ref()
        .map(|v| record::normalise_ts(v).map_err(|e| format!("--{name}: {e}")))
        .transpose()
}

fn cmd_query(a: &QueryArgs) -> Result<ExitCode, String> {
    let f = Filters {
        since: ts_arg(&a.since, "since")?,
        until: ts_arg(&a.until, "until")?,
        type_: a.type_.clone(),
        kind: a.kind.clone(),
        ip: a.ip.clone(),
        user: a.user.clone(),
        path_prefix: a.path.clone(),
        limit: parse_num("--limit", a.limit.clone(), 1000u64)?,
    };
    let mut db = Db::open(&database_url(&a.database_url))?;
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for line in db.query(&f)? {
        writeln!(out, "{line}").map_err(|e| format!("write: {e}"))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_verify(a: &VerifyArgs) -> Result<ExitCode, String> {
    let grace_s = parse_num("--grace-s", a.grace_s.clone(), DEFAULT_GRACE_S)?;
    let mut announced = BTreeMap::new();
    let mut pruned = BTreeMap::new();
    let items: Vec<(String, String)> = match &a.files {
        Some(dir) => files::read_all(&PathBuf::from(dir))?
            .into_iter()
            .map(|l| (format!("{}:{}", l.file, l.line_no), l.line))
            .collect(),
        None => {
            let mut db = Db::open(&database_url(&a.database_url))?;
            let now = time::OffsetDateTime::now_utc();
            let cutoff = record::format_ts(now - time::Duration::seconds(i64::from(grace_s)))?;
            for (stream, m) in db.marks()? {
                let stale = m.seen_at < cutoff;
                announced.insert(
                    stream,
                    verify::Announced {
                        chained_seq: m.chained_seq,
                        seen_at: m.seen_at,
                        stale,
                    },
                );
            }
            pruned = db.pruned()?;
            db.all_lines()?
                .into_iter()
                .map(|(id, line)| (format!("db id={id}"), line))
                .collect()
        }
    };
    let report = verify::verify(items, a.allow_missing_start, &announced, &pruned);
    for l in &report.lines {
        println!("{l}");
    }
    println!(
        "verify: {} streams, {} records, {} problems",
        report.streams, report.records, report.problems
    );
    Ok(if report.problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// JSON log lines on stderr, one event per line (docs/audit.md §5, "Log"). The log may sit on
/// a full disk (§4): a line that cannot be written is dropped, and `log_internal_errors(false)`
/// keeps the subscriber from reporting that failure with `eprintln!`, which would panic.
fn init_log() {
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .log_internal_errors(false)
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        // --help and --version exit 0 on stdout; a usage error exits 2 on stderr.
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    init_log();
    let result = match &cli.cmd {
        None => cmd_serve(&cli.serve),
        Some(Cmd::Serve(a)) => cmd_serve(a),
        Some(Cmd::Query(a)) => cmd_query(a),
        Some(Cmd::Verify(a)) => cmd_verify(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = %e, "aura-collector stopped");
            ExitCode::from(2)
        }
    }
}
