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
        Self::start_with(bin, false)
    }

    /// `tls`: the server gets a self-signed certificate for localhost/127.0.0.1 made here
    /// (`ssl=on`), and pg_hba.conf takes TCP connections over TLS only, so a session that
    /// works proves the client spoke TLS.
    fn start_with(bin: &Path, tls: bool) -> Pg {
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
        let mut ssl_opts = String::new();
        if tls {
            let (crt, key) = (sock.join("server.crt"), sock.join("server.key"));
            let o = Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                ])
                .args(["-subj", "/CN=localhost"])
                .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&crt)
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "openssl: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            // The server refuses a key others can read; as root it must be the server's own.
            let st = Command::new("chmod").arg("600").arg(&key).status().unwrap();
            assert!(st.success());
            if pg.as_postgres {
                let st = Command::new("chown")
                    .args(["postgres:"])
                    .arg(&key)
                    .arg(&crt)
                    .status()
                    .unwrap();
                assert!(st.success());
            }
            std::fs::write(
                pg.data.join("pg_hba.conf"),
                "local all all trust\n\
                 hostssl all all 127.0.0.1/32 trust\n\
                 hostnossl all all 127.0.0.1/32 reject\n",
            )
            .unwrap();
            ssl_opts = format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                crt.display(),
                key.display()
            );
        }
        let o = pg
            .cmd("pg_ctl")
            .arg("-D")
            .arg(&pg.data)
            .arg("-l")
            .arg(sock.join("pg.log"))
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-p {port} -h 127.0.0.1 -k {} -F{ssl_opts}",
                sock.display()
            ))
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

    fn cert(&self) -> PathBuf {
        self.data.parent().unwrap().join("server.crt")
    }

    /// A client of the test's own over TLS (any certificate).
    fn tls_client(&self, db: &str) -> postgres::Client {
        let c = native_tls::TlsConnector::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap();
        postgres::Client::connect(
            &format!(
                "postgres://postgres@127.0.0.1:{}/{db}?sslmode=require",
                self.port
            ),
            postgres_native_tls::MakeTlsConnector::new(c),
        )
        .unwrap()
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
    // sslmode=require against this server without TLS: refused, saying why.
    for args in [vec!["verify"], vec!["query"]] {
        let o = run(&args, &format!("{}?sslmode=require", pg.url()));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains("server does not support TLS"), "{err}");
        assert!(err.contains("the server has ssl=off"), "{err}");
    }
    assert!(c.stop());
    drop(pg);
}

fn pg_bin_or_panic() -> PathBuf {
    pg_bin().unwrap_or_else(|| {
        panic!(
            "PostgreSQL's server binaries not found: install them (scripts/setup.sh does) or \
             set AURA_PG_BIN; AURA_SKIP_PG=1 skips this test, reported as ignored"
        )
    })
}

fn versions(client: &mut postgres::Client) -> Vec<i32> {
    client
        .query("SELECT version FROM schema_version ORDER BY version", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
#[cfg_attr(
    aura_skip_pg,
    ignore = "AURA_SKIP_PG=1: the PostgreSQL test is skipped on request"
)]
fn postgres_over_tls_with_migrations_and_retention() {
    let pg = Pg::start_with(&pg_bin_or_panic(), true);
    let base = format!("postgres://postgres:S3cretPw0rd@127.0.0.1:{}", pg.port);
    let require = format!("{base}/postgres?sslmode=require");

    // Without TLS the server refuses (pg_hba), so what works below went over TLS.
    let o = run(&["verify"], &format!("{base}/postgres?sslmode=disable"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("no encryption"), "{err}");
    assert!(!err.contains("S3cretPw0rd"), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("collector.log");
    let c = Collector::start_logging_to(
        &tmp.path().join("logs"),
        &require,
        &[],
        std::process::Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    let mut ch = Chain::new("tls");
    let lines: Vec<String> = (0..3).map(|_| ch.next(json!({}))).collect();
    assert_eq!(
        c.post(Some(TOKEN), &batch(&lines)),
        (200, json!({"accepted": 3, "duplicates": 0}))
    );
    assert!(c.stop());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("S3cretPw0rd"), "{text}");
    assert!(text.contains("postgres:***@127.0.0.1"), "{text}");

    // verify-full: the certificate checked against sslrootcert, and the host name against it.
    let full = format!(
        "postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
        pg.port,
        pg.cert().display()
    );
    let o = run(&["verify"], &full);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // ... and refused without a root that signs it.
    let o = run(
        &["verify"],
        &format!(
            "postgres://postgres@localhost:{}/postgres?sslmode=verify-full",
            pg.port
        ),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("certificate"), "{err}");

    let mut client = pg.tls_client("postgres");
    assert_eq!(versions(&mut client), vec![1, 2]);

    // Retention: seq 1..2 received long ago are deleted; verify starts from the cut.
    client
        .execute(
            "UPDATE audit_records SET received_at = '2020-01-01T00:00:00.000Z' WHERE seq <= 2",
            &[],
        )
        .unwrap();
    let c = Collector::start(tmp.path(), &require, &[("AUDIT_RETENTION_DAYS", "30")]);
    assert!(c.stop());
    let o = run(&["verify"], &require);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "PRUNED stream=tls seq=1..2: deleted by retention; the chain goes on from hash {}",
            sha256_hex(&lines[1])
        )),
        "{out}"
    );
    assert!(out.contains("OK stream=tls records=1 seq=3..3"), "{out}");

    // A database made before schema versions: migrated in place, once.
    client.batch_execute("CREATE DATABASE legacy").unwrap();
    let mut legacy = pg.tls_client("legacy");
    legacy.batch_execute(SCHEMA_BEFORE_VERSIONS).unwrap();
    legacy
        .execute(
            "INSERT INTO audit_records (id, ts, kind, type, severity, stream, seq, prev_hash, line, received_at) \
             VALUES ('tls-1', '2026-03-01T10:00:00.000Z', 'operation', 'payment_refund', 'info', 'tls', 1, $1, $2, '2026-03-01T10:00:01.000Z')",
            &[&ZERO, &lines[0]],
        )
        .unwrap();
    let legacy_url = format!("{base}/legacy?sslmode=require");
    for _ in 0..2 {
        let o = run(&["verify"], &legacy_url);
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(0), "{out}");
        assert!(out.contains("OK stream=tls records=1 seq=1..1"), "{out}");
        assert_eq!(versions(&mut legacy), vec![1, 2]);
    }
    drop(pg);
}
