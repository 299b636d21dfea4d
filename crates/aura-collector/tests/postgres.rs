//! The collector against a real PostgreSQL server: a throw-away cluster made
//! with initdb in a temp dir, on a free port on 127.0.0.1, stopped at the end.
//! Needs PostgreSQL's server binaries (any version; `pg_bin` says where they are
//! looked for). Without them the test fails, naming what to install; only
//! AURA_SKIP_PG=1 skips it, and then cargo reports it ignored (build.rs), never
//! passed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::json;

struct Pg {
    _dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
    port: u16,
}

fn is_root() -> bool {
    let o = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim() == "0"
}

impl Pg {
    fn cmd(&self, prog: &str) -> Command {
        let path = self.bin.join(prog);
        if self.as_postgres {
            // initdb and postgres refuse to run as root.
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn start(bin: &Path) -> Pg {
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = is_root();
        if as_postgres {
            let st = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(st.success());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = Pg {
            data: dir.path().join("data"),
            _dir: dir,
            bin: bin.to_path_buf(),
            as_postgres,
            port,
        };
        let o = pg
            .cmd("initdb")
            .arg("-D")
            .arg(&pg.data)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let sock = pg.data.parent().unwrap().to_path_buf();
        let o = pg
            .cmd("pg_ctl")
            .arg("-D")
            .arg(&pg.data)
            .arg("-l")
            .arg(sock.join("pg.log"))
            .args(["-w", "-t", "60", "-o"])
            .arg(format!("-p {port} -h 127.0.0.1 -k {} -F", sock.display()))
            .arg("start")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        pg
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// The directory of PostgreSQL's server binaries (`initdb`, `pg_ctl`): `AURA_PG_BIN`, else
/// the newest Debian `/usr/lib/postgresql/<version>/bin`, else `pg_config --bindir`.
fn pg_bin() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("AURA_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    bin.join("initdb").exists().then_some(bin)
}

#[test]
#[cfg_attr(
    aura_skip_pg,
    ignore = "AURA_SKIP_PG=1: the PostgreSQL test is skipped on request"
)]
fn postgres_stores_queries_and_verifies() {
    let bin = pg_bin().unwrap_or_else(|| {
        panic!(
            "PostgreSQL's server binaries not found (no /usr/lib/postgresql/<version>/bin or \
             pg_config --bindir with initdb): install them (scripts/setup.sh does: apt-get \
             install postgresql) or set AURA_PG_BIN; AURA_SKIP_PG=1 skips this test, reported \
             as ignored"
        )
    });
    assert!(
        bin.join("initdb").exists(),
        "no initdb in AURA_PG_BIN={}",
        bin.display()
    );
    let pg = Pg::start(&bin);
    let logs = tempfile::tempdir().unwrap();
    let c = Collector::start(logs.path(), &pg.url(), &[]);

    let mut ch = Chain::new("pg");
    let lines = vec![
        ch.next(json!({})),
        ch.next(json!({"kind": "security_event", "type": "webhook_validation_failure", "severity": "medium", "outcome": "blocked", "status": 401, "client_ip": "198.51.100.3", "path": "/api/v1/webhooks/square"})),
        ch.gap(3),
    ];
    let (status, body) = c.post(Some(TOKEN), &batch(&lines));
    assert_eq!(
        (status, body),
        (200, json!({"accepted": 3, "duplicates": 0}))
    );
    let (status, body) = c.post(Some(TOKEN), &batch(&lines));
    assert_eq!(
        (status, body),
        (200, json!({"accepted": 0, "duplicates": 3}))
    );
    let (status, _) = c.post(Some(TOKEN), &format!("{}\nnot json\n", ch.next(json!({}))));
    assert_eq!(status, 400);

    let mut client = postgres::Client::connect(&pg.url(), postgres::NoTls).unwrap();
    let rows = client
        .query(
            "SELECT id, ts, kind, type, status, client_ip, stream, seq, prev_hash, line FROM audit_records ORDER BY seq",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), 3);
    let r = &rows[1];
    assert_eq!(r.get::<_, String>(0), "pg-2");
    assert_eq!(r.get::<_, String>(1), "2026-03-01T10:00:00.000Z");
    assert_eq!(r.get::<_, String>(2), "security_event");
    assert_eq!(r.get::<_, String>(3), "webhook_validation_failure");
    assert_eq!(r.get::<_, Option<i32>>(4), Some(401));
    assert_eq!(r.get::<_, String>(5), "198.51.100.3");
    assert_eq!(
        (r.get::<_, String>(6), r.get::<_, i64>(7)),
        ("pg".to_string(), 2)
    );
    assert_eq!(r.get::<_, String>(8), sha256_hex(&lines[0]));
    assert_eq!(r.get::<_, String>(9), lines[1]);

    let o = run(
        &[
            "query",
            "--ip",
            "198.51.100.3",
            "--path",
            "/api/v1/webhooks/",
        ],
        &pg.url(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(stdout_lines(&o), vec![lines[1].clone()]);

    let o = run(&["verify"], &pg.url());
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("GAP stream=pg seq=3 at db id=pg-3: shipper dropped 3 records"),
        "{out}"
    );
    assert!(c.stop());
    drop(pg);
}
