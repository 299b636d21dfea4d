#!/usr/bin/env python3
"""`make bench`: what aura-guard costs, measured side by side in one run.

Every case is the same Envoy (one worker, the HCM settings of envoy/envoy.yaml, a route that
answers by itself) with a different HTTP filter in front of the router; wrk sends the same load
to each. Cases run in interleaved rounds (a b c ..., then b c ... a, ...) so that drift on a
shared machine spreads over all of them; the table reports per case the median req/s, the
median p99 latency and the ratio to bare Envoy sending the same request.

Why direct_response: the demo upstream is a Python server that tops out at a few thousand
requests per second; behind it every case would measure Python. A direct_response route answers
from Envoy itself, so the differences between cases are the filters' own cost. The auth group
(bare-login, native-ratelimit, aura-ratelimit) routes to a second Envoy that answers directly
instead, because Envoy's ratelimit filter skips routes without a route entry. See
docs/benchmarks.md.

Usage: bench/run.py [--duration S] [--rounds N] [--warmup S] [--connections N]
                    [--cases a,b,...] [--out-dir DIR] [--list]
Environment overrides: BENCH_DURATION, BENCH_ROUNDS, BENCH_WARMUP, BENCH_CONNECTIONS,
BENCH_CASES. Only loopback traffic; every process started here is stopped on exit.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import hmac
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(ROOT / "scripts"))
import render_envoy  # noqa: E402
from aura_common import clean_env, envoy_bin, find_aura_filter, free_port, tail  # noqa: E402
from run_ratelimit import RateLimitService, SetupError  # noqa: E402

import yaml  # noqa: E402

WASM_DIR = ROOT / "target" / "wasm32-wasip1" / "release"
AURA_WASM = WASM_DIR / "aura_guard.wasm"
NOOP_WASM = WASM_DIR / "noop_filter.wasm"
HMAC_WASM = WASM_DIR / "hmac_bench.wasm"
# A test secret only (the bench's JWT key); never a real one.
BENCH_ENV = {"JWT_SECRET_KEY": "bench-only-jwt-secret-0123456789abcdef"}
# RLS call timeout for both rate-limit cases (Envoy's and aura-guard's default is 20 ms). On a
# saturated 2-core machine the service sometimes needs longer; a timeout would turn into a
# fast fail-open (or a 503) and flatter or spoil the numbers, so both get the same 1 s.
RLS_TIMEOUT_MS = 1000
# The webhook case: a test secret and a ~1 KB delivery, signed once here (GitHub's scheme,
# HMAC-SHA256 of the body). Replay protection is off for this case only, because wrk repeats
# the same delivery and each would otherwise be refused as a replay after the first.
WEBHOOK_SECRET = "bench-only-webhook-secret"
WEBHOOK_BODY = json.dumps({"action": "bench", "zen": "x" * 900, "repository": {"id": 1}})
WEBHOOK_SIGNATURE = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), WEBHOOK_BODY.encode(),
                                         hashlib.sha256).hexdigest()
WRK_ENV = {"BENCH_WRK_DIR": str(BENCH / "wrk"), "BENCH_WEBHOOK_BODY": WEBHOOK_BODY,
           "BENCH_WEBHOOK_SIGNATURE": WEBHOOK_SIGNATURE}
# The 1 MiB webhook cases: exactly webhook.max_body_bytes (the default), the largest delivery
# aura-guard accepts. wrk reads it from a file (bench/wrk/webhook_1m.lua): too large for an
# environment variable.
WEBHOOK_1M_BYTES = 1 << 20


def large_webhook_body(size: int = WEBHOOK_1M_BYTES) -> bytes:
    """A JSON delivery of exactly `size` bytes."""
    head, tail = b'{"action":"bench","zen":"', b'","repository":{"id":1}}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def write_large_webhook(work: Path) -> dict:
    """Writes the 1 MiB delivery for wrk and signs it (GitHub's scheme); the wrk environment."""
    body = large_webhook_body()
    path = work / "webhook_1m.json"
    path.write_bytes(body)
    sig = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"BENCH_WEBHOOK_1M_FILE": str(path), "BENCH_WEBHOOK_1M_SIGNATURE": sig}


ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}


def aura_filter(plugin_config: dict) -> dict:
    """aura-guard's filter entry exactly as envoy/envoy.yaml declares it (the single source of
    truth), with the module path and plugin configuration set for the bench."""
    with open(ROOT / "envoy" / "envoy.yaml") as f:
        hf = find_aura_filter(yaml.safe_load(f))
    wasm = hf["typed_config"]["config"]
    wasm["vm_config"]["code"]["local"]["filename"] = str(AURA_WASM)
    wasm["configuration"]["value"] = json.dumps(plugin_config)
    return hf


def lua_headers() -> list[tuple[str, str]]:
    """The response headers bench/security_headers.lua sets (one source for both cases)."""
    text = (BENCH / "security_headers.lua").read_text()
    return re.findall(r'\["([a-z-]+)"\] = "(.*)",', text)


def floor_filter() -> dict:
    """The no-op module reading the request headers once and setting the Lua case's headers
    and a request id: the fewest host calls aura-guard's plain request makes (docs/benchmarks.md
    #what-a-request-costs)."""
    f = noop_filter()
    headers = lua_headers() + [("x-request-id", "6c5a3a5e-8a5e-4b0e-9d0e-6b1a2f3c4d5e")]
    f["name"] = "wasm-floor"
    f["typed_config"]["config"]["configuration"] = {
        "@type": "type.googleapis.com/google.protobuf.StringValue",
        "value": "\n".join(f"{k}: {v}" for k, v in headers),
    }
    return f


def wasm_filter(name: str, module: Path) -> dict:
    """A proxy-wasm filter of the bench's own (`name` is also its root and VM id)."""
    return {
        "name": name,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": name,
                "vm_config": {
                    "vm_id": name,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": str(module)}},
                },
            },
        },
    }


def noop_filter() -> dict:
    return wasm_filter("noop", NOOP_WASM)


def hmac_filter() -> dict:
    """crates/hmac-bench: answers each request after one HMAC-SHA256 over 1 MiB."""
    return wasm_filter("hmac-bench", HMAC_WASM)


def buffer_filter() -> dict:
    """Envoy's buffer filter: the bare 1 MiB case reads the whole body before the route
    answers, as Envoy does for aura-guard (a direct_response would answer at the headers and
    close the connection without reading the body)."""
    return {
        "name": "envoy.filters.http.buffer",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
            "max_request_bytes": WEBHOOK_1M_BYTES,
        },
    }


def lua_filter() -> dict:
    return {
        "name": "envoy.filters.http.lua",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"filename": str(BENCH / "security_headers.lua")},
        },
    }


def native_ratelimit_filter() -> dict:
    return {
        "name": "envoy.filters.http.ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
            "domain": "bench",
            "timeout": f"{RLS_TIMEOUT_MS / 1000}s",
            "failure_mode_deny": False,
            "rate_limit_service": {
                "transport_api_version": "V3",
                "grpc_service": {"envoy_grpc": {"cluster_name": "ratelimit"}},
            },
        },
    }


# The descriptor the native filter sends: (bench=native, client=<X-Forwarded-For>), one
# counter per simulated client, matching bench/ratelimit/bench.yaml.
NATIVE_RATE_LIMITS = [{
    "actions": [
        {"generic_key": {"descriptor_key": "bench", "descriptor_value": "native"}},
        {"request_headers": {"header_name": "x-forwarded-for", "descriptor_key": "client"}},
    ]
}]

# Audit is on by default in production; the cases leave it out so each measures its own stage
# (shipping needs the collector; not benchmarked yet).
NO_AUDIT = {"enabled": False}
AURA_HEADERS_CONFIG = {"environment": "production", "audit": NO_AUDIT}
AURA_RATELIMIT_CONFIG = {
    "environment": "production",
    "audit": NO_AUDIT,
    "ratelimit": {"enabled": True, "timeout_ms": RLS_TIMEOUT_MS, "trusted_hops": 1,
                  "trusted_proxies": ["127.0.0.1/32"]},
}

# Descriptors in one aura-guard login check (an IP and a user): docs/ratelimit.md#descriptors.
AURA_LOGIN_DESCRIPTORS = 14

AURA_WEBHOOK_CONFIG = {
    "environment": "production",
    "audit": NO_AUDIT,
    "webhook": {"replay": {"enabled": False},
                "sources": {"github": {"secrets": [WEBHOOK_SECRET], "schemes": ["github"]}}},
}

# Each case: the filters before the router, the wrk script (request shape), the case whose
# throughput is its 1.0 (same request shape), and what it needs. A "stage" case measures one
# of the filter's stages: the bench fails (exit 1, naming the case and why) when the filter
# refuses its configuration or the stage did not run (docs/benchmarks.md), rather than
# measuring the filter without it.
CASES = [
    {"id": "bare", "label": "bare Envoy", "filters": [], "wrk": "ping.lua", "baseline": "bare"},
    {"id": "noop-wasm", "label": "no-op proxy-wasm filter", "filters": [noop_filter],
     "wrk": "ping.lua", "baseline": "bare"},
    {"id": "lua-headers", "label": "Lua filter: security headers", "filters": [lua_filter],
     "wrk": "ping.lua", "baseline": "bare"},
    {"id": "wasm-floor", "label": "wasm floor: one header read, the same headers set",
     "filters": [floor_filter], "wrk": "ping.lua", "baseline": "bare"},
    {"id": "aura-headers", "label": "aura-guard: security headers (production)",
     "filters": [lambda: aura_filter(AURA_HEADERS_CONFIG)],
     "wrk": "ping.lua", "baseline": "bare"},
    {"id": "bare-login", "label": "bare Envoy, POST /auth/login", "filters": [],
     "wrk": "login.lua", "baseline": "bare-login", "upstream": True},
    {"id": "native-ratelimit", "label": "Envoy ratelimit filter + envoyproxy/ratelimit + Redis",
     "filters": [native_ratelimit_filter], "rate_limits": NATIVE_RATE_LIMITS, "upstream": True,
     "descriptors_per_check": 1,
     "wrk": "login.lua", "baseline": "bare-login", "rls": True},
    {"id": "aura-ratelimit", "label": "aura-guard production, auth route rate limit",
     "filters": [lambda: aura_filter(AURA_RATELIMIT_CONFIG)], "upstream": True,
     "wrk": "login.lua", "baseline": "bare-login", "rls": True, "stage": True,
     "descriptors_per_check": AURA_LOGIN_DESCRIPTORS},
    {"id": "bare-webhook", "label": "bare Envoy, POST /webhooks/github", "filters": [],
     "wrk": "webhook.lua", "baseline": "bare-webhook"},
    {"id": "aura-webhook", "label": "aura-guard production, webhook signature (GitHub)",
     "filters": [lambda: aura_filter(AURA_WEBHOOK_CONFIG)],
     "wrk": "webhook.lua", "baseline": "bare-webhook", "stage": True,
     # An unsigned delivery must be refused; if it is not, the stage did not run.
     "probe": ("POST", "/webhooks/github", {"Content-Type": "application/json"}, WEBHOOK_BODY)},
    # 1 MiB deliveries (docs/benchmarks.md#1-mib-webhooks): body MB/s next to the raw speed of
    # HMAC-SHA256 in the same wasm runtime (wasm-hmac-1m), and a flood of unsigned ones, each
    # of which must be answered 401 ("expect").
    {"id": "bare-webhook-1m", "label": "bare Envoy + buffer filter, POST /webhooks/github 1 MiB",
     "filters": [buffer_filter], "wrk": "webhook_1m.lua", "baseline": "bare-webhook-1m",
     "body_bytes": WEBHOOK_1M_BYTES},
    {"id": "aura-webhook-1m", "label": "aura-guard production, webhook signature (GitHub, 1 MiB)",
     "filters": [lambda: aura_filter(AURA_WEBHOOK_CONFIG)],
     "wrk": "webhook_1m.lua", "baseline": "bare-webhook-1m", "stage": True,
     "body_bytes": WEBHOOK_1M_BYTES, "mac_reference": "wasm-hmac-1m",
     "probe": ("POST", "/webhooks/github", {"Content-Type": "application/json"}, WEBHOOK_BODY)},
    {"id": "aura-webhook-unsigned-1m",
     "label": "aura-guard production, unsigned 1 MiB deliveries (must be 401)",
     "filters": [lambda: aura_filter(AURA_WEBHOOK_CONFIG)],
     "wrk": "webhook_1m_unsigned.lua", "baseline": "bare-webhook-1m", "stage": True,
     "body_bytes": WEBHOOK_1M_BYTES, "expect": 401,
     "probe": ("POST", "/webhooks/github", {"Content-Type": "application/json"}, WEBHOOK_BODY)},
    {"id": "wasm-hmac-1m", "label": "raw HMAC-SHA256 of 1 MiB in wasm (crates/hmac-bench)",
     "filters": [hmac_filter], "wrk": "ping.lua", "baseline": "wasm-hmac-1m",
     "request": "GET /api/v2/ping, answered by the filter after 1 MiB of HMAC",
     "mac_bytes": WEBHOOK_1M_BYTES},
]

REQUESTS = {"ping.lua": "GET /api/v2/ping", "login.lua": "POST /auth/login (new client each)",
            "webhook.lua": "POST /webhooks/github (1 KB, signed)",
            "webhook_1m.lua": "POST /webhooks/github (1 MiB, signed)",
            "webhook_1m_unsigned.lua": "POST /webhooks/github (1 MiB, unsigned)"}


def rls_env() -> dict[str, str]:
    """The rate-limit service's settings for the run, the same for both rate-limit cases:
    BENCH_RLS_ENV="K=V,K=V" (e.g. REDIS_PIPELINE_WINDOW=150us,REDIS_PIPELINE_LIMIT=8)."""
    pairs = [kv.split("=", 1) for kv in os.environ.get("BENCH_RLS_ENV", "").split(",") if "=" in kv]
    return {k.strip(): v.strip() for k, v in pairs}


def upstream_config(listen_port: int, admin_port: int) -> dict:
    """The login group's upstream: another Envoy that answers every request itself, so it is
    fast and the same for every case of the group."""
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "upstream",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "direct_response": DIRECT_RESPONSE}]}]},
        "http_filters": [ROUTER],
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {"listeners": [{
            "name": "upstream",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen_port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": hcm}]}],
        }]},
    }


DIRECT_RESPONSE = {"status": 200, "body": {"inline_string": "{\"ok\":true}\n"}}


def envoy_config(case: dict, listen_port: int, admin_port: int, rls_port: int,
                 upstream_port: int) -> dict:
    """envoy/envoy.yaml's listener and HCM settings, with a direct_response route (or, for the
    login group, a route to the bench upstream), the case's filters, and the clusters."""
    with open(ROOT / "envoy" / "envoy.yaml") as f:
        cfg = yaml.safe_load(f)
    # No audit shipper (bootstrap VM): audit is not part of these cases (docs/benchmarks.md).
    cfg.pop("bootstrap_extensions", None)
    cfg["admin"]["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": admin_port}
    listener = cfg["static_resources"]["listeners"][0]
    listener["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": listen_port}
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["stat_prefix"] = "bench"
    if case.get("upstream"):
        route = {"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "15s"}}
    else:
        route = {"match": {"prefix": "/"}, "direct_response": DIRECT_RESPONSE}
    vhost = {"name": "bench", "domains": ["*"], "routes": [route]}
    if case.get("rate_limits"):
        vhost["rate_limits"] = case["rate_limits"]
    hcm["route_config"] = {"name": "bench", "virtual_hosts": [vhost]}
    hcm["http_filters"] = [make() for make in case["filters"]] + [ROUTER]
    if case.get("wasm"):
        # A "-before" copy of an aura-guard case (--compare-wasm): the other module.
        for hf in hcm["http_filters"]:
            code = hf.get("typed_config", {}).get("config", {}).get("vm_config", {}).get("code", {})
            if code.get("local", {}).get("filename") == str(AURA_WASM):
                code["local"]["filename"] = case["wasm"]
    clusters = [c for c in cfg["static_resources"]["clusters"] if c["name"] in ("ratelimit", "upstream")]
    holder = {"static_resources": {"clusters": clusters}}
    render_envoy.set_cluster_port(holder, "ratelimit", rls_port)
    render_envoy.set_cluster_port(holder, "upstream", upstream_port)
    cfg["static_resources"]["clusters"] = clusters
    return cfg


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return r.status, r.read()


class EnvoyCase:
    def __init__(self, case: dict, workdir: Path, rls_port: int, upstream_port: int):
        self.case = case
        self.id = case["id"]
        self.listen_port = free_port()
        self.admin_port = free_port()
        self.dir = workdir / self.id
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.dir / "envoy.yaml"
        if case.get("is_upstream"):
            cfg = upstream_config(self.listen_port, self.admin_port)
        else:
            cfg = envoy_config(case, self.listen_port, self.admin_port, rls_port, upstream_port)
        with open(self.config_path, "w") as f:
            yaml.safe_dump(cfg, f, sort_keys=False)
        self.log = self.dir / "envoy.log"
        self.proc: subprocess.Popen | None = None

    def validate(self) -> str | None:
        """None when Envoy accepts the config, else the tail of its complaint."""
        r = subprocess.run([envoy_bin(), "--mode", "validate", "-c", str(self.config_path),
                            "--log-level", "warn"], capture_output=True, text=True,
                           env=clean_env(BENCH_ENV), timeout=60)
        if r.returncode == 0:
            return None
        lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
        # The filter's own reason (e.g. "invalid configuration: unknown field `ratelimit`")
        # says more than Envoy's generic "Unable to create Wasm plugin".
        why = [ln for ln in lines if "invalid configuration" in ln] or lines[-2:]
        return " | ".join(ln.split("] ")[-1] for ln in why)[-400:]

    def start(self) -> None:
        logf = open(self.log, "ab")
        try:
            self.proc = subprocess.Popen(
                [envoy_bin(), "-c", str(self.config_path), "--concurrency", "1",
                 "--disable-hot-restart", "--log-level", "warn"],
                stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=clean_env(BENCH_ENV), cwd=ROOT, start_new_session=True)
        finally:
            logf.close()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"envoy for {self.id} exited; see {self.log}:\n{tail(self.log, 20)}")
            try:
                if http_get(self.admin_port, "/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"envoy for {self.id} not ready after {timeout}s; see {self.log}")

    def probe_status(self) -> int | None:
        """Status of the case's probe request (None when it has none)."""
        probe = self.case.get("probe")
        if not probe:
            return None
        method, path, headers, body = probe
        req = urllib.request.Request(f"http://127.0.0.1:{self.listen_port}{path}", method=method,
                                     headers=headers, data=body.encode())
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as err:
            return err.code

    def counter(self, name: str) -> int:
        _, body = http_get(self.admin_port, "/stats?format=json&filter=^" + name + "$")
        for s in json.loads(body).get("stats", []):
            if s.get("name") == name:
                return int(s.get("value", 0))
        return 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_wrk(port: int, script: str, duration: float, connections: int) -> dict:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "5s",
           "-s", str(BENCH / "wrk" / script), f"http://127.0.0.1:{port}"]
    env = dict(os.environ, **WRK_ENV)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=duration + 60)
    for line in r.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            out = json.loads(line[len("BENCH_JSON "):])
            out["rps"] = out["requests"] / (out["duration_us"] / 1e6) if out["duration_us"] else 0.0
            return out
    raise RuntimeError(f"wrk printed no result (exit {r.returncode}):\n{r.stdout}\n{r.stderr}")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) the process has used so far; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # Fields 14 and 15 of proc(5) (utime, stime), counted after the ")" that ends the name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_commands(port: int) -> int:
    """Commands Redis has executed so far (INFO commandstats, every command but INFO itself)."""
    r = subprocess.run(["redis-cli", "-p", str(port), "INFO", "commandstats"], capture_output=True,
                       text=True, timeout=10)
    total = 0
    for m in re.finditer(r"^cmdstat_(\w+):calls=(\d+)", r.stdout, re.M):
        if m.group(1) != "info":
            total += int(m.group(2))
    return total


class Meters:
    """What a run costs besides wall-clock throughput: CPU seconds of each process the request
    crosses, and Redis commands. CPU per request is far steadier than req/s on a shared machine
    (a busy neighbour slows a case down but does not make each request need more CPU), so the
    table shows both (docs/benchmarks.md)."""

    def __init__(self, case_envoy: "EnvoyCase", upstream: "EnvoyCase | None", rls):
        self.pids = {"envoy": case_envoy.proc.pid if case_envoy.proc else None}
        if case_envoy.case.get("upstream") and upstream is not None and upstream.proc:
            self.pids["upstream"] = upstream.proc.pid
        if case_envoy.case.get("rls") and rls is not None:
            for name, proc in rls._procs:
                self.pids["rls" if name == "service_cmd" else "redis"] = proc.pid
        self.redis_port = rls.redis_port if case_envoy.case.get("rls") and rls else None

    def read(self) -> dict:
        out = {k: cpu_seconds(pid) for k, pid in self.pids.items() if pid}
        if self.redis_port:
            out["redis_commands"] = redis_commands(self.redis_port)
        return out

    @staticmethod
    def per_request(before: dict, after: dict, requests: int) -> dict:
        if not requests:
            return {}
        out = {f"cpu_us_{k}": (after[k] - before[k]) * 1e6 / requests
               for k in before if k != "redis_commands"}
        if "redis_commands" in before:
            out["redis_commands_per_request"] = (after["redis_commands"]
                                                 - before["redis_commands"]) / requests
        return out


def summarise(case: dict, runs: list[dict], rls_calls: int) -> dict:
    requests = sum(r["requests"] for r in runs)
    errors = {k: sum(r["errors"][k] for r in runs) for k in runs[0]["errors"]} if runs else {}
    return {
        "id": case["id"],
        "label": case["label"],
        "request": case.get("request") or REQUESTS[case["wrk"]],
        "baseline": case["baseline"],
        "rounds": len(runs),
        "rps_median": statistics.median(r["rps"] for r in runs) if runs else 0.0,
        "rps_min": min((r["rps"] for r in runs), default=0.0),
        "rps_max": max((r["rps"] for r in runs), default=0.0),
        "p50_ms_median": statistics.median(r["latency_us"]["p50"] for r in runs) / 1000 if runs else 0.0,
        "p99_ms_median": statistics.median(r["latency_us"]["p99"] for r in runs) / 1000 if runs else 0.0,
        "requests": requests,
        "non_2xx": errors.get("status", 0),
        "socket_errors": sum(v for k, v in errors.items() if k != "status"),
        "rls_calls_per_request": (rls_calls / requests) if requests else 0.0,
        "descriptors_per_check": case.get("descriptors_per_check"),
        **{k: statistics.median(r["meters"][k] for r in runs)
           for k in (runs[0].get("meters", {}) if runs else {})},
        **large_body_fields(case, runs),
        "runs": runs,
    }


def large_body_fields(case: dict, runs: list[dict]) -> dict:
    """The 1 MiB cases: the status every answer must have ("expect", default 2xx) and how many
    had another; body MB/s (10^6 bytes) received, or MACed for the raw HMAC case."""
    out: dict = {"expect": str(case.get("expect", "2xx"))}
    if "expect" in case:
        out["unexpected_status"] = sum(r.get("unexpected_status", 0) for r in runs)
    per_request = case.get("body_bytes") or case.get("mac_bytes")
    if per_request and runs:
        out["body_bytes"] = per_request
        out["body_mb_s"] = statistics.median(r["rps"] for r in runs) * per_request / 1e6
        # What a request costs Envoy (all its threads), whatever the client managed to send:
        # the measure of a flood's price for the proxy.
        cpu = [r["envoy_cpu_s"] for r in runs if "envoy_cpu_s" in r]
        requests = sum(r["requests"] for r in runs if "envoy_cpu_s" in r)
        if cpu and requests:
            out["envoy_cpu_ms_per_request"] = 1000 * sum(cpu) / requests
    return out


def add_mac_ratios(rows: list[dict], cases: list[dict]) -> None:
    """aura-webhook-1m's body MB/s over the raw in-wasm HMAC MB/s of the same run."""
    by_id = {r["id"]: r for r in rows}
    for c in cases:
        row, ref = by_id.get(c["id"]), by_id.get(c.get("mac_reference", ""))
        if row and ref and row.get("body_mb_s") and ref.get("body_mb_s"):
            row["vs_raw_hmac"] = row["body_mb_s"] / ref["body_mb_s"]


def large_body_markdown(result: dict) -> list[str]:
    rows = [r for r in result["cases"] if r.get("body_mb_s") is not None]
    if not rows:
        return []
    out = ["", "1 MiB webhooks: body MB/s (10^6 bytes a second; for the raw HMAC case, bytes "
           "MACed) and, for aura-guard's signed case, its ratio to the raw in-wasm HMAC-SHA256 "
           "speed of the same run.", "",
           "| case | body MB/s | vs raw HMAC | Envoy CPU ms/request | expect | unexpected status |",
           "|---|---:|---:|---:|---|---:|"]
    for r in rows:
        ratio = f"{r['vs_raw_hmac']:.2f}" if r.get("vs_raw_hmac") is not None else "-"
        cpu = r.get("envoy_cpu_ms_per_request")
        cpu = f"{cpu:.2f}" if cpu is not None else "-"
        unexpected = r.get("unexpected_status", r.get("non_2xx", 0))
        out.append(f"| {r['label']} | {r['body_mb_s']:,.1f} | {ratio} | {cpu} | {r['expect']} | "
                   f"{unexpected} |")
    return out


def add_ratios(rows: list[dict]) -> None:
    by_id = {r["id"]: r for r in rows}
    for r in rows:
        base = by_id.get(r["baseline"])
        r["ratio"] = (r["rps_median"] / base["rps_median"]
                      if base and base.get("rps_median") and "rps_median" in r else None)


def num(v, fmt: str) -> str:
    return "-" if v is None else fmt.format(v)


def markdown(result: dict) -> str:
    p = result["params"]
    out = [
        f"Run {result['started']} on {result['machine']} ({result['cpus']} CPUs, load average "
        f"{result['loadavg']} at the start), Envoy {result['envoy']}: 1 Envoy worker, "
        f"wrk -t1 -c{p['connections']}, {p['rounds']} interleaved round(s) of {p['duration_s']:g} s "
        f"per case after {p['warmup_s']:g} s warm-up. Routes answer with direct_response; the "
        "POST /auth/login group goes through a second Envoy that answers directly. Ratios are "
        "to the bare Envoy case of the same request.",
        "",
        "| case | request | req/s (median) | min–max | vs baseline | p99 ms | non-2xx | RLS calls/req "
        "| descriptors/check | Redis cmds/req | CPU µs/req: Envoy | upstream | RLS | Redis |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["cases"]:
        if "rps_median" not in r:
            out.append(f"| {r['label']} | | FAILED: {r['failed']} |" + " |" * 11)
            continue
        ratio = f"{r['ratio']:.2f}" if r.get("ratio") is not None else "-"
        # A case that must be refused says so rather than count its refusals as failures.
        non_2xx = (f"{r['non_2xx']} (expected {r['expect']}; "
                   f"{r.get('unexpected_status', 0)} not)" if r.get("expect", "2xx") != "2xx"
                   else f"{r['non_2xx']}")
        out.append(
            f"| {r['label']} | {r['request']} | {r['rps_median']:,.0f} | "
            f"{r['rps_min']:,.0f}–{r['rps_max']:,.0f} | {ratio} | {r['p99_ms_median']:.2f} | "
            f"{non_2xx} | {r['rls_calls_per_request']:.2f} | "
            f"{num(r.get('descriptors_per_check'), '{:d}')} | "
            f"{num(r.get('redis_commands_per_request'), '{:.1f}')} | "
            + " | ".join(num(r.get(f"cpu_us_{k}"), "{:.0f}")
                         for k in ("envoy", "upstream", "rls", "redis")) + " |")
    out += large_body_markdown(result)
    failed = [r for r in result["cases"] if r.get("failed")]
    if failed:
        out.append("")
        out += [f"- FAILED {r['label']}: {r['failed']}" for r in failed]
    return "\n".join(out) + "\n"


def envoy_version() -> str:
    try:
        v = subprocess.run([envoy_bin(), "--version"], capture_output=True, text=True, timeout=30)
        m = re.search(r"/(\d+\.\d+\.\d+)/", v.stdout + v.stderr)
        if m:
            return m.group(1)
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def env_num(name: str, default: float) -> float:
    v = os.environ.get(name)
    return float(v) if v else default


def main() -> int:
    global AURA_WASM  # --aura-wasm: what aura_filter() loads
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=env_num("BENCH_DURATION", 6),
                    help="seconds of load per case per round (default 6)")
    ap.add_argument("--rounds", type=int, default=int(env_num("BENCH_ROUNDS", 3)))
    ap.add_argument("--warmup", type=float, default=env_num("BENCH_WARMUP", 2),
                    help="seconds of unmeasured load per case before the rounds (0: none)")
    ap.add_argument("--connections", type=int, default=int(env_num("BENCH_CONNECTIONS", 32)))
    ap.add_argument("--cases", default=os.environ.get("BENCH_CASES", ""),
                    help="comma-separated case ids (default: all)")
    ap.add_argument("--out-dir", type=Path, default=BENCH / "results")
    ap.add_argument("--aura-wasm", type=Path, default=AURA_WASM,
                    help="the aura-guard module the aura-* cases load (default: make build's)")
    ap.add_argument("--compare-wasm", type=Path, default=None,
                    help="also run every selected aura-guard case with this module, as "
                         "<case>-before (before/after of a change in one run)")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    a = ap.parse_args()
    AURA_WASM = a.aura_wasm.resolve()

    if a.list:
        for c in CASES:
            print(f"{c['id']:18} {c['label']}")
        return 0
    cases = CASES
    if a.cases:
        wanted = [c.strip() for c in a.cases.split(",") if c.strip()]
        unknown = set(wanted) - {c["id"] for c in CASES}
        if unknown:
            print(f"bench: unknown case(s) {sorted(unknown)}; see --list", file=sys.stderr)
            return 2
        cases = [c for c in CASES if c["id"] in wanted]
    if a.compare_wasm:
        before = []
        for c in cases:
            if c["id"].startswith("aura-"):
                before.append(dict(c, id=c["id"] + "-before", label=c["label"] + " (before)",
                                   wasm=str(a.compare_wasm.resolve())))
        cases = cases + before
    for need, what in ((AURA_WASM, "make build"),
                       (NOOP_WASM, "bash scripts/build-wasm.sh -p noop-filter"),
                       (HMAC_WASM, "bash scripts/build-wasm.sh -p hmac-bench")):
        used = any(c["id"].startswith("aura-") if need == AURA_WASM
                   else c["id"] in {NOOP_WASM: ("noop-wasm", "wasm-floor"),
                                  HMAC_WASM: ("wasm-hmac-1m",)}[need]
                   for c in cases)
        if used and not need.is_file():
            print(f"bench: {need} is missing: run `{what}` (make bench does both)", file=sys.stderr)
            return 2
    if not shutil.which("wrk"):
        print("bench: wrk not found: run `bash scripts/setup.sh bench`", file=sys.stderr)
        return 2

    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    # Recorded because the machine may be shared: a busy one lowers every case.
    loadavg = " ".join(f"{x:.1f}" for x in os.getloadavg())
    a.out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="aura-bench-"))
    WRK_ENV.update(write_large_webhook(work))
    rls = None
    upstream = None
    envoys: list[EnvoyCase] = []
    rows: dict[str, dict] = {}
    try:
        rls_port = free_port()
        if any(c.get("rls") for c in cases):
            # The bench's own domain next to the repo's config (domain aura-guard): the service
            # loads every file in its config directory.
            conf_dir = work / "ratelimit" / "runtime" / "ratelimit" / "config"
            conf_dir.mkdir(parents=True)
            shutil.copy(BENCH / "ratelimit" / "bench.yaml", conf_dir / "bench.yaml")
            rls = RateLimitService(work / "ratelimit", grpc_port=rls_port,
                                   extra_env=rls_env()).start()
        if any(c.get("upstream") for c in cases):
            upstream = EnvoyCase({"id": "upstream", "is_upstream": True}, work, 0, 0)
            upstream.start()
            upstream.wait_ready()
        upstream_port = upstream.listen_port if upstream else free_port()
        for c in cases:
            e = EnvoyCase(c, work, rls_port, upstream_port)
            # A stage case is validated first, so a refusal names the filter's reason (others
            # fail loudly at start).
            problem = e.validate() if c.get("stage") else None
            if problem is not None:
                rows[c["id"]] = {"id": c["id"], "label": c["label"], "baseline": c["baseline"],
                                 "failed": f"the filter refuses the case's configuration: "
                                           f"{problem}"}
                continue
            e.start()
            envoys.append(e)
        probe_failures = {}
        for e in envoys:
            e.wait_ready()
            status = e.probe_status()
            if status == 200:
                probe_failures[e.id] = ("an unsigned probe request got 200: the stage does not "
                                        "verify this route")
        print(f"bench: {len(envoys)} cases, {a.rounds} rounds x {a.duration:g}s, "
              f"warm-up {a.warmup:g}s, wrk -t1 -c{a.connections}", flush=True)
        if a.warmup > 0:
            for e in envoys:
                run_wrk(e.listen_port, e.case["wrk"], a.warmup, a.connections)
        rls_before = {e.id: e.counter("cluster.ratelimit.upstream_rq_total") for e in envoys}
        runs: dict[str, list[dict]] = {e.id: [] for e in envoys}
        for rnd in range(a.rounds):
            # Each round starts one case later, so no case always runs first or right after
            # the same neighbour.
            shift = rnd % len(envoys) if envoys else 0
            for e in envoys[shift:] + envoys[:shift]:
                meters = Meters(e, upstream, rls)
                before = meters.read()
                r = run_wrk(e.listen_port, e.case["wrk"], a.duration, a.connections)
                r["meters"] = Meters.per_request(before, meters.read(), r["requests"])
                if "cpu_us_envoy" in r["meters"]:
                    r["envoy_cpu_s"] = r["meters"]["cpu_us_envoy"] * r["requests"] / 1e6
                runs[e.id].append(r)
                print(f"  round {rnd + 1}/{a.rounds} {e.id:18} {r['rps']:>10,.0f} req/s  "
                      f"p99 {r['latency_us']['p99'] / 1000:6.2f} ms", flush=True)
        for e in envoys:
            calls = e.counter("cluster.ratelimit.upstream_rq_total") - rls_before[e.id]
            row = summarise(e.case, runs[e.id], calls)
            if e.id in probe_failures:
                row["failed"] = probe_failures[e.id]
            if e.case.get("rls") and row["requests"] and calls == 0:
                row["failed"] = (f"no rate-limit service calls in {row['requests']} requests: "
                                 "the route was not rate-limited")
            if row.get("unexpected_status") and "failed" not in row:
                row["failed"] = (f"{row['unexpected_status']} of {row['requests']} answers were "
                                 f"not the expected {row['expect']}")
            if e.proc is not None and e.proc.poll() is not None:
                row["failed"] = f"Envoy exited during the run; see {e.log}"
            rows[e.id] = row
    finally:
        for e in envoys:
            e.stop()
        if upstream is not None:
            upstream.stop()
        if rls is not None:
            rls.stop()

    ordered = [rows[c["id"]] for c in cases if c["id"] in rows]
    add_ratios(ordered)
    add_mac_ratios(ordered, cases)
    result = {
        "started": started,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg": loadavg,
        "envoy": envoy_version(),
        "upstream": "direct_response; the login group routes to a second Envoy that answers "
                    "directly (Envoy's ratelimit filter skips direct_response routes)",
        "params": {"duration_s": a.duration, "rounds": a.rounds, "warmup_s": a.warmup,
                   "connections": a.connections, "wrk_threads": 1, "envoy_workers": 1},
        "cases": ordered,
    }
    md = markdown(result)
    stamp = started.replace(":", "").replace("-", "")
    for name in (f"bench-{stamp}", "latest"):
        (a.out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        (a.out_dir / f"{name}.md").write_text(md)
    print()
    print(md)
    print(f"bench: results in {a.out_dir}/latest.{{json,md}} (and bench-{stamp}.*)")
    shutil.rmtree(work, ignore_errors=True)
    failed = [r for r in ordered if r.get("failed")]
    for r in failed:
        print(f"bench: FAILED {r['id']}: {r['failed']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, SetupError, LookupError) as err:
        print(f"bench: {err}", file=sys.stderr)
        sys.exit(1)
