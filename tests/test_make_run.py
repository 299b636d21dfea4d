"""`make run`'s script: starts the stack on the given ports, prints the banner, serves the
filter's headers, and stops every child on SIGTERM."""
import os
import signal
import subprocess
import time

import pytest

from harness import ROOT, TEST_JWT_SECRET, clean_env, free_port, request, wait_until

CSP_START = "default-src 'self'; script-src"
BANNER_END = "Ctrl-C stops everything"


def start_run(tmp_path, env):
    ports = {"LISTEN_PORT": free_port(), "ADMIN_PORT": free_port(), "UPSTREAM_PORT": free_port(),
             "COLLECTOR_PORT": free_port(), "RATELIMIT_GRPC_PORT": free_port()}
    # The audit collector keeps its files and database in the test's directory.
    env = {"AUDIT_LOG_DIR": str(tmp_path / "audit"),
           "AUDIT_DATABASE_URL": f"sqlite://{tmp_path}/audit.db", **env}
    env = clean_env({**{k: str(v) for k, v in ports.items()}, **env})
    log = open(tmp_path / "run.log", "wb")
    proc = subprocess.Popen(["bash", "scripts/run.sh"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    return proc, ports, str(tmp_path / "run.log")


def children_of(pid):
    out = subprocess.run(["pgrep", "-s", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_run_serves_headers_and_stops_every_child_on_sigterm(tmp_path):
    # A generous rate-limit call timeout: the machine running the tests may be busy.
    # Production needs a real JWT secret (make run's demo value is for development only).
    proc, ports, log = start_run(tmp_path, {"ENVIRONMENT": "production",
                                            "JWT_SECRET_KEY": TEST_JWT_SECRET,
                                            "RUN_DIR": str(tmp_path / "run"),
                                            "AURA_GUARD_CONFIG": '{"ratelimit": {"timeout_ms": 2000}}'})
    try:
        wait_until(lambda: BANNER_END in open(log).read(), 60, "run.sh",
                   proc, log)
        banner = open(log).read()
        assert f"http://127.0.0.1:{ports['LISTEN_PORT']}" in banner
        assert "environment: production, from ENVIRONMENT" in banner
        assert "demo value" not in banner and TEST_JWT_SECRET not in banner
        r = request(ports["LISTEN_PORT"], "GET", "/api/v2/ping")
        assert r.status == 200
        assert r.header("content-security-policy").startswith(CSP_START)
        assert r.header("strict-transport-security")
        assert r.header("x-frame-options") == "DENY"
        # bash, upstream, ratelimit runner, redis, service, collector, envoy
        assert len(children_of(proc.pid)) >= 7
        assert f"http://127.0.0.1:{ports['COLLECTOR_PORT']}" in banner
        # Audit runs end to end (make run enables it): a refund reaches the collector's file,
        # and the run's random collector token is never printed.
        r = request(ports["LISTEN_PORT"], "POST", "/api/v1/payments/refund",
                    headers={"content-type": "application/json"},
                    body='{"amount": 1, "card_token": "tok_make_run_secret"}')
        assert r.status == 200

        def audit_text():
            d = tmp_path / "audit"
            return "".join(p.read_text() for p in d.glob("*.jsonl")) if d.exists() else ""
        wait_until(lambda: "payment_refund" in audit_text(), 15, "audit record", proc, log)
        assert "tok_make_run_secret" not in audit_text()
        assert "envoyproxy/ratelimit + Redis" in banner
        # The original's manual login check (docs/original-behaviour.md#manual-checks) against
        # the real rate-limit service: the sixth login is 429.
        statuses = [request(ports["LISTEN_PORT"], "POST", "/auth/login",
                            {"content-type": "application/x-www-form-urlencoded"},
                            "username=test&password=wrong").status for _ in range(6)]
        assert statuses == [401] * 5 + [429], statuses
    finally:
        stop_run(proc)


def stop_run(proc):
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)
    deadline = time.time() + 10
    while children_of(proc.pid) and time.time() < deadline:
        time.sleep(0.1)
    assert children_of(proc.pid) == [], "children left running after SIGTERM"


def test_run_without_environment_names_development_explicitly_and_says_so(tmp_path):
    # The filter alone would run as production; make run passes ENVIRONMENT=development.
    proc, ports, log = start_run(tmp_path, {"RUN_DIR": str(tmp_path / "run")})
    try:
        wait_until(lambda: BANNER_END in open(log).read(), 60, "run.sh", proc, log)
        banner = open(log).read()
        assert ("environment: development, set by make run because ENVIRONMENT was not set; "
                "the filter alone runs as production") in banner, banner
        assert "JWT_SECRET_KEY (demo value, development only)" in banner, banner
        # The filter really runs as development: debug endpoints reach the upstream, no CSP.
        r = request(ports["LISTEN_PORT"], "GET", "/debug/token")
        assert r.status == 200 and r.json()["upstream"] == "demo", r
        assert r.header("content-security-policy") is None
        envoy_log = tmp_path / "run" / "envoy.log"
        wait_until(lambda: "aura-guard: configured for environment development"
                   in envoy_log.read_text(), 10, "the filter's configure line", proc, log)
        assert "ENVIRONMENT is not set" not in envoy_log.read_text()
    finally:
        stop_run(proc)


@pytest.mark.parametrize("environment", ["production", " Production ", "staging"])
def test_run_outside_development_without_a_jwt_secret_stops_before_starting_anything(
        tmp_path, environment):
    proc, _, log = start_run(tmp_path, {"ENVIRONMENT": environment,
                                        "RUN_DIR": str(tmp_path / "run")})
    try:
        assert proc.wait(timeout=30) == 1
    finally:
        if proc.poll() is None:
            stop_run(proc)
    out = open(log).read()
    assert "needs JWT_SECRET_KEY" in out and "development only" in out, out
    assert "demo-jwt-secret" not in out, out
    assert BANNER_END not in out
    # Nothing was started: no run directory, no process left.
    assert not (tmp_path / "run").exists()
    assert children_of(proc.pid) == []
