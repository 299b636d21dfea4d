"""`make run`'s script: starts the stack on the given ports, prints the banner, serves the
filter's headers, and stops every child on SIGTERM; with ENVOYS=N, a fleet of N Envoys sharing
the rate-limit service and the collector."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from harness import ROOT, TEST_JWT_SECRET, clean_env, free_port, request, wait_until
from aura_common import find_audit_service, find_wasm_config  # scripts/, through harness

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


# --- ENVOYS=N: a fleet on one host ---------------------------------------------------------------

FLEET = 3


def test_run_with_envoys_3_starts_a_fleet_sharing_limits_and_collector_and_ctrl_c_stops_all(
        tmp_path):
    run_dir = tmp_path / "run"
    proc, ports, log = start_run(tmp_path, {"ENVOYS": str(FLEET), "RUN_DIR": str(run_dir),
                                            "AURA_GUARD_CONFIG": '{"ratelimit": {"timeout_ms": 2000}}'})
    listen = [ports["LISTEN_PORT"] + i for i in range(FLEET)]
    admin = [ports["ADMIN_PORT"] + i for i in range(FLEET)]
    try:
        wait_until(lambda: BANNER_END in open(log).read(), 90, "run.sh", proc, log)
        banner = open(log).read()
        # The banner names every Envoy with its listener, admin URL, log and audit stream.
        for i in range(FLEET):
            line = next((ln for ln in banner.splitlines() if ln.strip().startswith(f"envoy{i + 1} ")),
                        None)
            assert line is not None, banner
            assert f"proxy http://127.0.0.1:{listen[i]}" in line, line
            assert f"admin http://127.0.0.1:{admin[i]}" in line, line
            assert f"log envoy{i + 1}.log" in line and f"aura-guard-envoy{i + 1}-" in line, line
        assert f"fleet     {FLEET} Envoys" in banner, banner
        assert "webhook replay check: ratelimit (fleet-wide" in banner, banner
        # Each Envoy answers on its own ports and logs to its own file.
        for i in range(FLEET):
            r = request(listen[i], "GET", "/api/v2/ping")
            assert r.status == 200 and r.header("x-frame-options") == "DENY", r
            assert request(admin[i], "GET", "/ready").status == 200
            assert "aura-guard: configured" in (run_dir / f"envoy{i + 1}.log").read_text()
        # bash, upstream, ratelimit runner, redis, service, collector, and the Envoys
        assert len(children_of(proc.pid)) >= 6 + FLEET
        # They share one rate-limit service: five failing logins spread over the fleet pass,
        # the sixth is refused by every Envoy.
        statuses = [request(listen[i % FLEET], "POST", "/auth/login",
                            {"content-type": "application/x-www-form-urlencoded"},
                            "username=test&password=wrong").status for i in range(5)]
        assert statuses == [401] * 5, statuses
        for port in listen:
            assert request(port, "POST", "/auth/login",
                           {"content-type": "application/x-www-form-urlencoded"},
                           "username=test&password=wrong").status == 429
        # And one collector: a refund through each Envoy lands in its own stream there.
        for i, port in enumerate(listen):
            r = request(port, "POST", "/api/v1/payments/refund",
                        headers={"content-type": "application/json",
                                 "x-request-id": f"fleet-refund-{i + 1}"},
                        body='{"amount": 1}')
            assert r.status == 200, r

        def refund_streams():
            d = tmp_path / "audit"
            lines = [json.loads(ln) for p in d.glob("*.jsonl") for ln in p.read_text().splitlines()
                     if ln.strip()] if d.exists() else []
            return {rec["request_id"]: rec["stream"] for rec in lines
                    if (rec["request_id"] or "").startswith("fleet-refund-")}
        wait_until(lambda: len(refund_streams()) == FLEET, 20, "the fleet's audit records",
                   proc, log)
        for rid, stream in refund_streams().items():
            assert stream.startswith(f"aura-guard-envoy{rid.rsplit('-', 1)[1]}-"), (rid, stream)
    finally:
        # Ctrl-C: the terminal sends SIGINT to the whole foreground process group.
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
        deadline = time.time() + 10
        while children_of(proc.pid) and time.time() < deadline:
            time.sleep(0.1)
        assert children_of(proc.pid) == [], "children left running after Ctrl-C"
    for port in listen + admin:
        with pytest.raises(OSError):
            request(port, "GET", "/ready", timeout=2)


def render_member(tmp_path, *args):
    out = tmp_path / "member.yaml"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "render_envoy.py"),
                        "--out", str(out), "--fleet-member", "envoy2", *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    cfg = yaml.safe_load(out.read_text())
    return (json.loads(find_wasm_config(cfg)["configuration"]["value"]),
            json.loads(find_audit_service(cfg)["configuration"]["value"]))


def test_a_fleet_member_gets_the_fleet_wide_replay_mode_and_its_own_audit_stream_name(tmp_path):
    # What run.sh renders for each Envoy of ENVOYS=N > 1 (scripts/render_envoy.py
    # --fleet-member), checked without starting Envoy: the plugin configuration is kept and the
    # replay mode merged in; the shipper's settings are kept and its stream named.
    plugin, shipper = render_member(
        tmp_path, "--plugin-config", '{"ratelimit": {"timeout_ms": 2000}, "webhook": {"tolerance_s": 60}}')
    assert plugin == {"ratelimit": {"timeout_ms": 2000},
                      "webhook": {"tolerance_s": 60, "replay": {"mode": "ratelimit"}}}, plugin
    template = yaml.safe_load(open(os.path.join(ROOT, "envoy", "envoy.yaml")))
    want = json.loads(find_audit_service(template)["configuration"]["value"])
    assert shipper == {**want, "stream_prefix": "aura-guard-envoy2"}, shipper
    # Without AURA_GUARD_CONFIG: the template's (empty) plugin configuration plus the mode.
    plugin, _ = render_member(tmp_path)
    assert plugin == {"webhook": {"replay": {"mode": "ratelimit"}}}, plugin
    # A mode the operator names stands.
    plugin, _ = render_member(tmp_path, "--plugin-config",
                              '{"webhook": {"replay": {"mode": "local", "max_entries": 5}}}')
    assert plugin == {"webhook": {"replay": {"mode": "local", "max_entries": 5}}}, plugin


@pytest.mark.parametrize("envoys,ports,error", [
    ("0", {}, "ENVOYS=0: give the number of Envoys"),
    ("two", {}, "ENVOYS=two: give the number of Envoys"),
    # Envoy 2's listener would be Envoy 1's admin port.
    ("2", {"LISTEN_PORT": 18000, "ADMIN_PORT": 18001}, "port 18001 is used twice"),
])
def test_run_refuses_a_bad_envoys_or_clashing_fleet_ports_before_starting_anything(
        tmp_path, envoys, ports, error):
    proc, _, log = start_run(tmp_path, {"ENVOYS": envoys, "RUN_DIR": str(tmp_path / "run"),
                                        **{k: str(v) for k, v in ports.items()}})
    try:
        assert proc.wait(timeout=30) == 1
    finally:
        if proc.poll() is None:
            stop_run(proc)
    out = open(log).read()
    assert error in out, out
    assert not (tmp_path / "run").exists()
    assert children_of(proc.pid) == []
