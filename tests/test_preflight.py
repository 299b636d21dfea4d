"""scripts/preflight.py (`make preflight`, docs/operations.md#preflight) against real services:
Redis + envoyproxy/ratelimit and aura-collector started by the harness, a rendered Envoy
config. A good deployment passes every check; each bad one fails exactly its own check, names
its fix, and leaves the others passing."""
import os
import re
import subprocess
import sys

import pytest
import yaml

from harness import (ROOT, TEST_COLLECTOR_TOKEN, WASM, Collector, free_port,
                     start_ratelimit_service)
import preflight  # noqa: E402  (scripts/ is on the path through harness)
import render_envoy  # noqa: E402

CHECKS = ["environment", "webhook_secrets", "jwt_secret", "ratelimit_service", "redis",
          "collector", "audit_dir", "database_tls", "debug_endpoints", "hsts", "envoy_admin"]
STRIPE_SECRET = "whsec_3b9f0c2e8a41d7765e0f1a9c2b4d6e8f"
GITHUB_SECRET = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
JWT_SECRET = "c1d2e3f4a5b6978812ab34cd56ef7890aa11bb22cc33dd44"


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("preflight"))
    rls = start_ratelimit_service(os.path.join(base, "rls"))
    collector = Collector(os.path.join(base, "collector"))
    try:
        collector.start()
        yield rls, collector
    finally:
        collector.stop()
        rls.stop()


@pytest.fixture
def deployment(services, tmp_path):
    """A good deployment: (env, rendered Envoy config dict, paths) the test may spoil."""
    rls, collector = services
    audit_dir = tmp_path / "audit"
    audit_dir.mkdir()
    (audit_dir / "audit-2026-12-01.jsonl").write_text("")
    os.chmod(audit_dir / "audit-2026-12-01.jsonl", 0o640)
    os.chmod(audit_dir, 0o750)
    env = {
        "ENVIRONMENT": "production",
        "WEBHOOK_SECRET_STRIPE": STRIPE_SECRET,
        "WEBHOOK_SECRET_GITHUB": GITHUB_SECRET,
        "JWT_SECRET_KEY": JWT_SECRET,
        "REDIS_URL": f"127.0.0.1:{rls.redis_port}",
        "AUDIT_COLLECTOR_TOKEN": TEST_COLLECTOR_TOKEN,
        "AUDIT_LOG_DIR": str(audit_dir),
        "AUDIT_DATABASE_URL": "postgresql://audit@db.internal:5432/audit?sslmode=verify-full",
    }
    cfg = render_envoy.render(os.path.join(ROOT, "envoy/envoy.yaml"), free_port(), free_port(),
                              free_port(), rls.grpc_port, collector.port, WASM, {}, None)
    return {"env": env, "envoy": cfg, "plugin": None, "dir": tmp_path}


def run_preflight(d, *extra):
    envoy_path = d["dir"] / "envoy.yaml"
    envoy_path.write_text(yaml.safe_dump(d["envoy"], sort_keys=False))
    args = [sys.executable, os.path.join(ROOT, "scripts/preflight.py"),
            "--envoy-config", str(envoy_path), *extra]
    if d["plugin"] is not None:
        plugin_path = d["dir"] / "plugin.json"
        import json
        plugin_path.write_text(json.dumps(d["plugin"]))
        args += ["--plugin-config", str(plugin_path)]
    # Only the deployment's variables: nothing from the test runner's environment leaks in.
    env = {"PATH": os.environ.get("PATH", ""), **d["env"]}
    p = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    rows = {}
    for line in p.stdout.splitlines():
        m = re.match(r"^(\w+)\s+(PASS|FAIL)\s+(.*)$", line)
        if m:
            rows[m.group(1)] = [m.group(2), m.group(3), ""]
            last = m.group(1)
        elif line.strip().startswith("fix: "):
            rows[last][2] = line.strip()[len("fix: "):]
    return p, rows


def test_a_good_deployment_passes_every_check(deployment):
    p, rows = run_preflight(deployment)
    assert p.returncode == 0, p.stdout + p.stderr
    assert list(rows) == CHECKS, p.stdout
    assert all(r[0] == "PASS" for r in rows.values()), p.stdout
    assert "SERVING" in rows["ratelimit_service"][1]
    assert "token accepted" in rows["collector"][1]
    # The plugin configuration is read from the Envoy config: the default HSTS.
    assert "max-age=31536000" in rows["hsts"][1]
    # No secret is printed.
    for secret in (STRIPE_SECRET, GITHUB_SECRET, JWT_SECRET, TEST_COLLECTOR_TOKEN):
        assert secret not in p.stdout + p.stderr


def spoil_audit_dir(d):
    os.chmod(d["env"]["AUDIT_LOG_DIR"], 0o755)


def spoil_admin(d):
    d["envoy"]["admin"]["address"]["socket_address"]["address"] = "0.0.0.0"


def spoil_hsts(d):
    d["plugin"] = {"headers": {"production": {"Content-Security-Policy": "default-src 'self'"}}}


# check -> (how to spoil the good deployment, what the detail says, what the fix says)
BAD = {
    "environment": (lambda d: d["env"].update(ENVIRONMENT="staging"),
                    "'staging'", "ENVIRONMENT=production"),
    "webhook_secrets": (lambda d: d["env"].update(WEBHOOK_SECRET_GITHUB="a1a1a1a1a1a1a1a1a1a1"),
                        "WEBHOOK_SECRET_GITHUB has about 20 bits", "openssl rand"),
    "jwt_secret": (lambda d: d["env"].update(JWT_SECRET_KEY="short-but-random-7f3a9c"),
                   "shorter than 32 bytes", "openssl rand -hex 32"),
    "ratelimit_service": (None, "", "start envoyproxy/ratelimit"),
    "redis": (lambda d: d["env"].update(REDIS_URL=f"127.0.0.1:{free_port()}"),
              "REDIS_URL", "start Redis"),
    "collector": (lambda d: d["env"].update(AUDIT_COLLECTOR_TOKEN="wrong-token-0123456789"),
                  "refuses AUDIT_COLLECTOR_TOKEN", "same AUDIT_COLLECTOR_TOKEN"),
    "audit_dir": (spoil_audit_dir, "mode 0755", "chmod o-rwx"),
    "database_tls": (lambda d: d["env"].update(
        AUDIT_DATABASE_URL="postgresql://audit@db.internal:5432/audit"),
        "without sslmode", "sslmode=verify-full"),
    "debug_endpoints": (lambda d: d["env"].update(DEBUG_ENDPOINTS_ENABLED="true"),
                        "DEBUG_ENDPOINTS_ENABLED=true", "unset DEBUG_ENDPOINTS_ENABLED"),
    "hsts": (spoil_hsts, "no Strict-Transport-Security", "Strict-Transport-Security"),
    "envoy_admin": (spoil_admin, "0.0.0.0", "bind admin to 127.0.0.1"),
}


@pytest.mark.parametrize("check", CHECKS)
def test_each_check_fails_for_its_own_reason_and_names_its_fix(deployment, check):
    spoil, detail, fix = BAD[check]
    extra = []
    if spoil is None:
        # The rate-limit service is not where the Envoy config says.
        extra = ["--ratelimit-addr", f"127.0.0.1:{free_port()}"]
    else:
        spoil(deployment)
    p, rows = run_preflight(deployment, *extra)
    assert p.returncode == 1, p.stdout + p.stderr
    assert rows[check][0] == "FAIL", p.stdout
    assert detail in rows[check][1], p.stdout
    assert fix in rows[check][2], p.stdout
    others = {k: v[0] for k, v in rows.items() if k != check}
    assert others == {k: "PASS" for k in CHECKS if k != check}, p.stdout
    assert f"1 failed ({check})" in p.stdout


def test_jwt_rule_is_the_filters_own():
    """The preflight's JWT thresholds and lists are the ones in the filter's source, so it
    refuses exactly what production refuses."""
    with open(os.path.join(ROOT, "crates/aura-guard-core/src/config/mod.rs")) as f:
        src = f.read()
    assert int(re.search(r"MIN_JWT_SECRET_BYTES: usize = (\d+);", src).group(1)) == \
        preflight.MIN_JWT_SECRET_BYTES
    demo = re.search(r"DEMO_JWT_SECRETS: &\[&str\] = &\[(.*?)\];", src, re.S).group(1)
    assert tuple(re.findall(r'"([^"]*)"', demo)) == preflight.DEMO_JWT_SECRETS
    words = re.search(r"PLACEHOLDER_WORDS: &\[&str\] = &\[(.*?)\];", src, re.S).group(1)
    assert tuple(re.findall(r'"([^"]*)"', words)) == preflight.PLACEHOLDER_WORDS
    weak = preflight.weak_jwt_secret
    assert weak("x" * 31) and weak("x" * 32) is None
    assert weak("é" * 16) is None  # 32 bytes, as the filter counts
    assert weak("Demo-JWT-Secret ") and weak("a-CHANGE_ME-" + "x" * 40)


def test_webhook_secret_rule():
    weak = preflight.weak_webhook_secret
    assert weak(STRIPE_SECRET) is None and weak(GITHUB_SECRET) is None
    assert "shorter than 16" in weak("whsec_0123456789abcde")
    assert "entropy" in weak("ab" * 20)
    assert "placeholder" in weak("replace-me-with-the-github-secret")
    # A provider's 32-hex-character token passes.
    assert weak("f3c9a1e07b2d4c5f8a6e9d0b1c2a3f4e") is None


def test_a_webhook_secret_for_no_known_source_is_reported(deployment):
    deployment["env"]["WEBHOOK_SECRET_STRIPPE"] = STRIPE_SECRET
    p, rows = run_preflight(deployment)
    assert p.returncode == 1
    assert rows["webhook_secrets"][0] == "FAIL"
    assert "WEBHOOK_SECRET_STRIPPE names no configured source" in rows["webhook_secrets"][1]


def test_sqlite_passes_with_a_note(deployment):
    deployment["env"]["AUDIT_DATABASE_URL"] = "sqlite:///var/lib/aura/audit.db"
    p, rows = run_preflight(deployment)
    assert p.returncode == 0, p.stdout
    assert rows["database_tls"][0] == "PASS" and "local file" in rows["database_tls"][1]


def test_a_source_left_with_only_its_previous_secret_is_reported(deployment):
    # Mid-rotation with the new secret never set: the filter would refuse every new delivery.
    env = deployment["env"]
    env["WEBHOOK_SECRET_GITHUB_PREVIOUS"] = env.pop("WEBHOOK_SECRET_GITHUB")
    p, rows = run_preflight(deployment)
    assert p.returncode == 1, p.stdout
    assert rows["webhook_secrets"][0] == "FAIL"
    assert "github: no current secret" in rows["webhook_secrets"][1], rows["webhook_secrets"]
    assert "set WEBHOOK_SECRET_GITHUB" in rows["webhook_secrets"][2]
    assert [c for c, r in rows.items() if r[0] == "FAIL"] == ["webhook_secrets"], p.stdout
