//! aura-collector: receives audit batches from the aura-guard filter, stores
//! them durably (JSONL files + SQLite/PostgreSQL), answers incident-response
//! queries and verifies the records' hash chains. See docs/audit.md.

/// `eprintln!` that never panics. The collector's own log may be a file on the disk that just
/// filled up (docs/audit.md §4): `eprintln!` panics when the write fails, which would end the
/// worker thread serving the batch (tiny_http then answers 500) and, one batch at a time, all
/// of them. A log line that cannot be written is dropped instead.
macro_rules! log_line {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod db;
mod dbworker;
mod files;
mod server;
mod verify;

use aura_collector::record;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;

use db::{Db, Filters};

const USAGE: &str = "usage:
  aura-collector [serve] [--listen ADDR] [--log-dir DIR] [--retention-days N]
                 [--max-file-bytes N] [--database-url URL] [--db-timeout-ms N]
  aura-collector query [--since RFC3339] [--until RFC3339] [--type T] [--kind K]
                 [--ip IP] [--user ID] [--path PREFIX] [--limit N] [--database-url URL]
  aura-collector verify [--files DIR] [--allow-missing-start] [--grace-s N] [--database-url URL]

environment: AUDIT_COLLECTOR_TOKEN (required by serve), AUDIT_COLLECTOR_LISTEN,
  AUDIT_LOG_DIR, AUDIT_RETENTION_DAYS, AUDIT_MAX_FILE_BYTES, AUDIT_DATABASE_URL or
  DATABASE_URL, AUDIT_DB_TIMEOUT_MS, ENVIRONMENT (production changes the default log dir).
exit status: 0 ok, 1 verify found problems, 2 usage or runtime error.";

/// How long after a shipper's last batch records it announced but never delivered count as
/// lost (UNDELIVERED) rather than on their way (PENDING): docs/audit.md §7.
const DEFAULT_GRACE_S: u32 = 300;
const DEFAULT_MAX_FILE_BYTES: u64 = 100 * 1024 * 1024;
/// Under the shipper's default `timeout_ms` (5000), so the shipper gets the collector's 503
/// rather than its own timeout (docs/audit.md §5).
const DEFAULT_DB_TIMEOUT_MS: u64 = 3000;

struct Args {
    opts: HashMap<String, String>,
    flags: Vec<String>,
}

fn parse_args(argv: &[String], valued: &[&str], flags: &[&str]) -> Result<Args, String> {
    let mut opts = HashMap::new();
    let mut fl = Vec::new();
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let Some(name) = a.strip_prefix("--") else {
            return Err(format!("unexpected argument {a:?}"));
        };
        let (name, inline) = match name.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (name, None),
        };
        if valued.contains(&name) {
            let v = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("--{name} needs a value"))?,
            };
            opts.insert(name.to_string(), v);
        } else if flags.contains(&name) && inline.is_none() {
            fl.push(name.to_string());
        } else {
            return Err(format!("unknown option --{name}"));
        }
    }
    Ok(Args { opts, flags: fl })
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Args {
    fn get(&self, opt: &str, env_names: &[&str]) -> Option<String> {
        self.opts
            .get(opt)
            .cloned()
            .or_else(|| env_names.iter().find_map(|n| env(n)))
    }
}

fn database_url(a: &Args) -> String {
    a.get("database-url", &["AUDIT_DATABASE_URL", "DATABASE_URL"])
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

fn cmd_serve(argv: &[String]) -> Result<ExitCode, String> {
    let a = parse_args(
        argv,
        &[
            "listen",
            "log-dir",
            "retention-days",
            "max-file-bytes",
            "database-url",
            "db-timeout-ms",
        ],
        &[],
    )?;
    let token = env("AUDIT_COLLECTOR_TOKEN")
        .ok_or("AUDIT_COLLECTOR_TOKEN is not set: refusing to start without a token")?;
    if token.len() < 16 {
        return Err("AUDIT_COLLECTOR_TOKEN: must be at least 16 characters".into());
    }
    let production = env("ENVIRONMENT").is_some_and(|e| e.eq_ignore_ascii_case("production"));
    let log_dir = a.get("log-dir", &["AUDIT_LOG_DIR"]).unwrap_or_else(|| {
        if production {
            "/var/log/auraconnect/audit".into()
        } else {
            "./logs/audit".into()
        }
    });
    let cfg = server::ServeConfig {
        listen: a
            .get("listen", &["AUDIT_COLLECTOR_LISTEN"])
            .unwrap_or_else(|| "127.0.0.1:9300".into()),
        token,
        log_dir: PathBuf::from(log_dir),
        retention_days: parse_num(
            "AUDIT_RETENTION_DAYS",
            a.get("retention-days", &["AUDIT_RETENTION_DAYS"]),
            365u32,
        )?,
        max_file_bytes: parse_num(
            "AUDIT_MAX_FILE_BYTES",
            a.get("max-file-bytes", &["AUDIT_MAX_FILE_BYTES"]),
            DEFAULT_MAX_FILE_BYTES,
        )?,
        database_url: database_url(&a),
        db_timeout: std::time::Duration::from_millis(parse_num(
            "AUDIT_DB_TIMEOUT_MS",
            a.get("db-timeout-ms", &["AUDIT_DB_TIMEOUT_MS"]),
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

fn ts_arg(a: &Args, name: &str) -> Result<Option<String>, String> {
    a.opts
        .get(name)
        .map(|v| record::normalise_ts(v).map_err(|e| format!("--{name}: {e}")))
        .transpose()
}

fn cmd_query(argv: &[String]) -> Result<ExitCode, String> {
    let a = parse_args(
        argv,
        &[
            "since",
            "until",
            "type",
            "kind",
            "ip",
            "user",
            "path",
            "limit",
            "database-url",
        ],
        &[],
    )?;
    let f = Filters {
        since: ts_arg(&a, "since")?,
        until: ts_arg(&a, "until")?,
        type_: a.opts.get("type").cloned(),
        kind: a.opts.get("kind").cloned(),
        ip: a.opts.get("ip").cloned(),
        user: a.opts.get("user").cloned(),
        path_prefix: a.opts.get("path").cloned(),
        limit: parse_num("--limit", a.opts.get("limit").cloned(), 1000u64)?,
    };
    let mut db = Db::open(&database_url(&a))?;
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for line in db.query(&f)? {
        writeln!(out, "{line}").map_err(|e| format!("write: {e}"))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_verify(argv: &[String]) -> Result<ExitCode, String> {
    let a = parse_args(
        argv,
        &["files", "database-url", "grace-s"],
        &["allow-missing-start"],
    )?;
    let grace_s = parse_num("--grace-s", a.opts.get("grace-s").cloned(), DEFAULT_GRACE_S)?;
    let mut announced = BTreeMap::new();
    let items: Vec<(String, String)> = match a.opts.get("files") {
        Some(dir) => files::read_all(&PathBuf::from(dir))?
            .into_iter()
            .map(|l| (format!("{}:{}", l.file, l.line_no), l.line))
            .collect(),
        None => {
            let mut db = Db::open(&database_url(&a))?;
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
            db.all_lines()?
                .into_iter()
                .map(|(id, line)| (format!("db id={id}"), line))
                .collect()
        }
    };
    let report = verify::verify(
        items,
        a.flags.iter().any(|f| f == "allow-missing-start"),
        &announced,
    );
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

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match argv.split_first() {
        Some((c, rest)) if !c.starts_with("--") => (c.as_str(), rest),
        _ => ("serve", argv.as_slice()),
    };
    let result = match cmd {
        "serve" => cmd_serve(rest),
        "query" => cmd_query(rest),
        "verify" => cmd_verify(rest),
        "help" => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        other => Err(format!("unknown command {other:?}\n{USAGE}")),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("aura-collector: {e}");
            ExitCode::from(2)
        }
    }
}
