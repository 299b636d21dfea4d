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
import itertools
import json
import os
import platform
import re
import shutil
import signal
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
from aura_common import (clean_env, envoy_bin, find_audit_service, find_aura_filter,  # noqa: E402
                         free_port, tail)
from run_ratelimit import RateLimitService, SetupError  # noqa: E402

import yaml  # noqa: E402

WASM_DIR = ROOT / "target" / "wasm32-wasip1" / "release"
AURA_WASM = WASM_DIR / "aura_guard.wasm"
NOOP_WASM = WASM_DIR / "noop_filter.wasm"
HMAC_WASM = WASM_DIR / "hmac_bench.wasm"
# A test secret only (the bench's JWT key); never a real one.
BENCH_ENV = {"JWT_SECRET_KEY": "bench-only-jwt-secret-0123456789abcdef",
             # The aura-audit case's shipper and collector share it (a test token only).
             "AUDIT_COLLECTOR_TOKEN": "bench-only-collector-token-0123456789"}
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
    """Envoy's buffer filter: the bare cases of a request with a body read the whole body
    before the route answers, as Envoy does for aura-guard (a direct_response would answer at
    the headers, before the body is read)."""
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


def native_headers_filter() -> dict:
    """Envoy's header_mutation filter setting the Lua case's headers: the same headers with no
    script and no VM, what a user who stitches Envoy's own filters together pays for them."""
    return {
        "name": "envoy.filters.http.header_mutation",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {"response_mutations": [
                {"append": {"header": {"key": k, "value": v},
                            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}}
                for k, v in lua_headers()]},
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

# The aura-audit case: production defaults, so audit is on (docs/audit.md §9.1) and every
# refund request is a sensitive operation; the shipper is the bootstrap VM envoy/envoy.yaml
# declares, shipping to the real collector (add_audit_shipper, AuditCollector).
AURA_AUDIT_CONFIG = {"environment": "production"}

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
     "wrk": "ping.lua", "baseline": "bare", "sets_headers": True},
    {"id": "native-headers", "label": "Envoy header_mutation filter: security headers",
     "filters": [native_headers_filter], "wrk": "ping.lua", "baseline": "bare",
     "sets_headers": True},
    {"id": "wasm-floor", "label": "wasm floor: one header read, the same headers set",
     "filters": [floor_filter], "wrk": "ping.lua", "baseline": "bare", "sets_headers": True},
    {"id": "aura-headers", "label": "aura-guard: security headers (production)",
     "filters": [lambda: aura_filter(AURA_HEADERS_CONFIG)],
     "wrk": "ping.lua", "baseline": "bare", "sets_headers": True},
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
    {"id": "bare-webhook", "label": "bare Envoy + buffer filter, POST /webhooks/github",
     "filters": [buffer_filter], "wrk": "webhook.lua", "baseline": "bare-webhook"},
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
    {"id": "bare-audit", "label": "bare Envoy + buffer filter, POST /api/v1/payments/refund",
     "filters": [buffer_filter], "wrk": "audit.lua", "baseline": "bare-audit"},
    {"id": "aura-audit", "label": "aura-guard production, audit on (collector + SQLite)",
     "filters": [lambda: aura_filter(AURA_AUDIT_CONFIG)], "wrk": "audit.lua",
     "baseline": "bare-audit", "stage": True, "audit": True},
]

REQUESTS = {"ping.lua": "GET /api/v2/ping", "login.lua": "POST /auth/login (new client each)",
            "webhook.lua": "POST /webhooks/github (1 KB, signed)",
            "webhook_1m.lua": "POST /webhooks/github (1 MiB, signed)",
            "webhook_1m_unsigned.lua": "POST /webhooks/github (1 MiB, unsigned)",
            "audit.lua": "POST /api/v1/payments/refund (JSON, audited)"}


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
    if case.get("audit"):
        add_audit_shipper(cfg)
    return cfg


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return r.status, r.read()


def stop_process(proc: subprocess.Popen | None) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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

    def answer(self, method: str, path: str, headers: dict | None = None,
               body: str | None = None):
        """One request to the case's listener: (status, response headers), refusals included."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.listen_port}{path}", method=method,
                                     headers=headers or {},
                                     data=body.encode() if body is not None else None)
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.headers
        except urllib.error.HTTPError as err:
            return err.code, err.headers

    def probe_status(self) -> int | None:
        """Status of the case's probe request (None when it has none)."""
        probe = self.case.get("probe")
        return self.answer(*probe)[0] if probe else None

    def missing_headers(self) -> list[str]:
        """The security headers (bench/security_headers.lua's, with their values) that a
        GET /api/v2/ping answer lacks or carries with another value."""
        _, got = self.answer("GET", "/api/v2/ping")
        return [k for k, v in lua_headers() if got.get(k) != v]

    def counter(self, name: str) -> int:
        _, body = http_get(self.admin_port, "/stats?format=json&filter=^" + name + "$")
        for s in json.loads(body).get("stats", []):
            if s.get("name") == name:
                return int(s.get("value", 0))
        return 0

    def stop(self) -> None:
        stop_process(self.proc)


# ---- The aura-audit case: the real collector, the shipper, the drain (docs/benchmarks.md) ----

# The collector the case ships to; `make bench` builds it in release, as it would run.
COLLECTOR_BIN = ROOT / "target" / "release" / "aura-collector"
# How long the drain after the rounds may take before the case reports what arrived.
AUDIT_DRAIN_TIMEOUT_S = 120.0
AUDIT_STAT = "wasmcustom.aura_guard.audit."


class AuditCollector:
    """aura-collector serve, storing into JSONL files and SQLite under the bench's work dir
    (the same disk as everything else), on a port chosen before the Envoys are configured."""

    def __init__(self, binary: Path, workdir: Path, database_url: str | None = None):
        self.binary = binary
        self.port = free_port()
        self.dir = workdir / "collector"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.db = self.dir / "audit.db"
        # --audit-database-url: a PostgreSQL store instead of SQLite (docs/scaling.md).
        self.database_url = database_url or f"sqlite://{self.db}"
        self.log = self.dir / "collector.log"
        self.proc: subprocess.Popen | None = None

    def env(self) -> dict:
        return clean_env({"AUDIT_COLLECTOR_TOKEN": BENCH_ENV["AUDIT_COLLECTOR_TOKEN"],
                          "AUDIT_LOG_DIR": str(self.dir / "audit"),
                          "AUDIT_DATABASE_URL": self.database_url})

    def start(self) -> "AuditCollector":
        if not self.binary.is_file():
            raise RuntimeError(f"{self.binary} is missing: run `cargo build --release -p "
                               "aura-collector` (make bench does)")
        logf = open(self.log, "ab")
        try:
            self.proc = subprocess.Popen(
                [str(self.binary), "serve", "--listen", f"127.0.0.1:{self.port}"],
                stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env(),
                cwd=self.dir, start_new_session=True)
        finally:
            logf.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"aura-collector exited:\n{tail(self.log, 20)}")
            try:
                if http_get(self.port, "/healthz")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"aura-collector not ready after 30s; see {self.log}")

    def stored(self) -> dict[str, int]:
        """Stored records by kind (operation, security_event, gap), read from SQLite (WAL: a
        reader does not block the collector), or from PostgreSQL with psql."""
        query = "SELECT kind, COUNT(*) FROM audit_records GROUP BY kind"
        if self.database_url.startswith("postgres"):
            out = subprocess.run(["psql", self.database_url, "-Atc", query], check=True,
                                 capture_output=True, text=True, timeout=60).stdout
            return {kind: int(n) for kind, n in
                    (line.split("|") for line in out.splitlines() if "|" in line)}
        import sqlite3
        con = sqlite3.connect(self.db, timeout=10)
        try:
            return dict(con.execute(query))
        finally:
            con.close()

    def verify(self) -> str:
        """The last line of `aura-collector verify` on the DB (its summary)."""
        r = subprocess.run([str(self.binary), "verify"], capture_output=True, text=True,
                           env=self.env(), timeout=300)
        lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
        return lines[-1] if lines else f"verify printed nothing (exit {r.returncode})"

    def stop(self) -> None:
        stop_process(self.proc)


# Set by main() when an audit case runs; add_audit_shipper points the shipper at it.
AUDIT_COLLECTOR: AuditCollector | None = None


def shipper_config() -> dict:
    """The audit shipper's configuration in envoy/envoy.yaml (batch size, flush interval,
    buffer), as the aura-audit case runs it."""
    with open(ROOT / "envoy" / "envoy.yaml") as f:
        svc = find_audit_service(yaml.safe_load(f))
    return json.loads(svc["configuration"]["value"]) if svc else {}


def add_audit_shipper(cfg: dict) -> None:
    """The audit shipper bootstrap VM and the audit_collector cluster exactly as
    envoy/envoy.yaml declares them (batch size, flush interval, buffer: production's), with
    the bench's module and the bench collector's port."""
    with open(ROOT / "envoy" / "envoy.yaml") as f:
        full = yaml.safe_load(f)
    svc = find_audit_service(full)
    if svc is None or AUDIT_COLLECTOR is None:
        raise LookupError("no audit shipper in envoy/envoy.yaml, or no collector started")
    svc["vm_config"]["code"]["local"]["filename"] = str(AURA_WASM)
    cfg["bootstrap_extensions"] = full["bootstrap_extensions"]
    holder = {"static_resources": {"clusters": [
        c for c in full["static_resources"]["clusters"] if c["name"] == "audit_collector"]}}
    render_envoy.set_cluster_port(holder, "audit_collector", AUDIT_COLLECTOR.port)
    cfg["static_resources"]["clusters"] += holder["static_resources"]["clusters"]


def audit_counts(e: "EnvoyCase") -> dict:
    """Where the case's audit records are: built by the filter (`enqueued` +
    `enqueue_failed`: one per audited request, the exact count), stored in the collector,
    dropped and counted (`dropped`), still in the shipper (`buffered`)."""
    stored = AUDIT_COLLECTOR.stored() if AUDIT_COLLECTOR else {}
    return {
        "t": time.monotonic(),
        "built": e.counter(AUDIT_STAT + "enqueued") + e.counter(AUDIT_STAT + "enqueue_failed"),
        "stored": stored.get("operation", 0),
        "gap_records": stored.get("gap", 0),
        "dropped": e.counter(AUDIT_STAT + "dropped"),
        "buffered": e.counter(AUDIT_STAT + "buffered"),
    }


def batch_round_trip_ms(e: "EnvoyCase") -> dict:
    """Envoy's own histogram of the shipper's batch POSTs (request to answer, as the shipper
    waits for it: one batch in flight), cumulative p50 and p99 in ms; empty if absent."""
    name = "cluster.audit_collector.upstream_rq_time"
    _, body = http_get(e.admin_port, "/stats?format=json&filter=^" + name + "$")
    for s in json.loads(body).get("stats", []):
        h = s.get("histograms")
        if not h:
            continue
        quantiles = h.get("supported_quantiles", [])
        for q in h.get("computed_quantiles", []):
            if q.get("name") == name:
                values = dict(zip(quantiles, (v.get("cumulative") for v in q["values"])))
                return {"batch_rtt_ms_p50": values.get(50), "batch_rtt_ms_p99": values.get(99)}
    return {}


def audit_round(before: dict, after: dict) -> dict:
    """One timed round of the audit case: records built and stored per second while the load
    ran, and what was still on its way at the end (0 when delivery keeps up)."""
    secs = max(after["t"] - before["t"], 1e-9)
    return {
        "records_built_per_s": (after["built"] - before["built"]) / secs,
        "records_stored_per_s": (after["stored"] - before["stored"]) / secs,
        "dropped": after["dropped"] - before["dropped"],
        "backlog_at_end": after["built"] - after["stored"] - after["dropped"],
        "buffered_at_end": after["buffered"],
    }


def audit_drain(e: "EnvoyCase", runs: list[dict]) -> dict:
    """After the rounds: waits (at most AUDIT_DRAIN_TIMEOUT_S) until every record the filter
    built is stored or counted as dropped, then reports records_delivered_ratio = operation
    records in the collector / records built (one per audited request)."""
    t0 = time.monotonic()
    while True:
        c = audit_counts(e)
        settled = c["stored"] + c["dropped"] >= c["built"] and c["buffered"] == 0
        if settled or time.monotonic() - t0 > AUDIT_DRAIN_TIMEOUT_S:
            break
        time.sleep(0.25)
    drain_s = time.monotonic() - t0
    rounds = [r["audit"] for r in runs if "audit" in r]
    return {
        "audited_requests": c["built"],
        "records_stored": c["stored"],
        "records_delivered_ratio": c["stored"] / c["built"] if c["built"] else None,
        "records_dropped": c["dropped"],
        "gap_records": c["gap_records"],
        "unaccounted": c["built"] - c["stored"] - c["dropped"],
        "drain_s": drain_s,
        "drain_timed_out": not settled,
        # Per round, while wrk ran: the median of the rounds, like req/s.
        "shipper": shipper_config(),
        "records_per_s": statistics.median(r["records_built_per_s"] for r in rounds) if rounds else 0.0,
        "stored_per_s": statistics.median(r["records_stored_per_s"] for r in rounds) if rounds else 0.0,
        "max_backlog_at_round_end": max((r["backlog_at_end"] for r in rounds), default=0),
        "batches_shipped": e.counter(AUDIT_STAT + "batches_shipped"),
        "batches_failed": e.counter(AUDIT_STAT + "batches_failed"),
        "verify": AUDIT_COLLECTOR.verify() if AUDIT_COLLECTOR else "",
        **batch_round_trip_ms(e),
    }


def audit_capacity(e: "EnvoyCase", connections: int) -> dict:
    """How fast the shipper and the collector deliver when records are waiting: the collector
    is stopped (SIGSTOP) for two seconds of load, so a backlog builds up in the shipper (below
    its buffer at this machine's rates), then resumed with no load; the rate at which the
    backlog is stored, up to its last partial batch (which waits for the flush interval), is
    the delivery capacity. Measured after the ratio, so it does not count in it."""
    if AUDIT_COLLECTOR is None or AUDIT_COLLECTOR.proc is None:
        return {}
    AUDIT_COLLECTOR.proc.send_signal(signal.SIGSTOP)
    try:
        run_wrk(e.listen_port, e.case["wrk"], 2, connections)
    finally:
        AUDIT_COLLECTOR.proc.send_signal(signal.SIGCONT)
    start = audit_counts(e)
    last = start
    # The last partial batch waits for the flush interval: not part of the rate.
    batch = shipper_config().get("batch_size", 100)
    while time.monotonic() - start["t"] < AUDIT_DRAIN_TIMEOUT_S:
        last = audit_counts(e)
        if last["built"] - last["stored"] - last["dropped"] < batch:
            break
        time.sleep(0.05)
    secs = last["t"] - start["t"]
    backlog = start["built"] - start["stored"] - start["dropped"]
    return {"capacity_backlog": backlog,
            "capacity_dropped": last["dropped"] - start["dropped"],
            "capacity_records_per_s": (last["stored"] - start["stored"]) / secs if secs > 0 else None}


def audit_failure(row: dict) -> str | None:
    """Why the audit case did not measure what it says (None when it did)."""
    if not row.get("audited_requests"):
        return (f"no audit records built in {row.get('requests', 0)} requests: the audit "
                "stage did not run")
    if row.get("unaccounted"):
        return (f"{row['unaccounted']} records neither stored nor counted as dropped after "
                f"{row['drain_s']:.0f} s (drain_timed_out: {row['drain_timed_out']})")
    return None


def audit_notes(result: dict) -> list[str]:
    """The audit case's delivery under the table."""
    out = []
    for r in result["cases"]:
        if "records_delivered_ratio" not in r or r["records_delivered_ratio"] is None:
            continue
        out += ["", f"{r['label']}: records_delivered_ratio **{r['records_delivered_ratio']:.4f}** "
                f"({r['records_stored']:,} operation records in the collector / "
                f"{r['audited_requests']:,} audited requests, counted by the filter), "
                f"{r['records_per_s']:,.0f} records/s built and {r['stored_per_s']:,.0f} "
                f"stored per second while wrk ran (median of the rounds), "
                f"{r['records_dropped']:,} dropped and counted ({r['gap_records']} gap "
                f"records), largest backlog at the end of a round {r['max_backlog_at_round_end']:,}, "
                f"drained in {r['drain_s']:.1f} s, {r['batches_shipped']:,} batches "
                f"({r['batches_failed']} failed attempts; round trip p50 "
                f"{r.get('batch_rtt_ms_p50') or 0:.1f} ms, p99 {r.get('batch_rtt_ms_p99') or 0:.1f} ms); "
                "`aura-collector verify`: "
                f"{r['verify']}. Per round, records built/s, stored/s (backlog at its end): "
                + ", ".join(f"{x['audit']['records_built_per_s']:,.0f}/"
                            f"{x['audit']['records_stored_per_s']:,.0f} "
                            f"({x['audit']['backlog_at_end']:,})"
                            for x in r.get("runs", []) if "audit" in x) + "."]
        if r.get("capacity_records_per_s"):
            out[-1] += (f" Delivery capacity (a backlog of {r['capacity_backlog']:,} records "
                        f"built while the collector was stopped, then delivered with no load): "
                        f"**{r['capacity_records_per_s']:,.0f} records/s**.")
    return out


# Each wrk run's clients (login.lua) start this many after the previous run's: a run of the
# auth group makes well under 65,536 requests, and 256 runs fit before the addresses wrap.
CLIENTS_PER_RUN = 65536
WRK_RUNS = itertools.count()


def run_wrk(port: int, script: str, duration: float, connections: int) -> dict:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "5s",
           "-s", str(BENCH / "wrk" / script), f"http://127.0.0.1:{port}"]
    env = dict(os.environ, **WRK_ENV,
               BENCH_CLIENT_OFFSET=str(next(WRK_RUNS) * CLIENTS_PER_RUN))
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
        "expect": str(case.get("expect", "2xx")),
        # Answers other than the expected status: a 2xx case that got refusals (e.g. clients a
        # rate limit refused) measured the refusal, not the request.
        "unexpected_status": (sum(r.get("unexpected_status", 0) for r in runs)
                              if "expect" in case else errors.get("status", 0)),
        "socket_errors": sum(v for k, v in errors.items() if k != "status"),
        "rls_calls_per_request": (rls_calls / requests) if requests else 0.0,
        "descriptors_per_check": case.get("descriptors_per_check"),
        **{k: statistics.median(r["meters"][k] for r in runs)
           for k in (runs[0].get("meters", {}) if runs else {})},
        **large_body_fields(case, runs),
        "runs": runs,
    }


def large_body_fields(case: dict, runs: list[dict]) -> dict:
    """The 1 MiB cases: body MB/s (10^6 bytes) received, or MACed for the raw HMAC case."""
    out: dict = {}
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
    out += audit_notes(result)
    failed = [r for r in result["cases"] if r.get("failed")]
    if failed:
        out.append("")
        out += [f"- FAILED {r['label']}: {r['failed']}" for r in failed]
    return "\n".join(out) + "\n"


def chart_groups(cases: list[dict]) -> list[tuple[str, list[dict]]]:
    """The table's rows grouped by their baseline (bare Envoy sending the same request), in
    table order; each group is named by its request."""
    groups: dict[str, list[dict]] = {}
    for r in cases:
        groups.setdefault(r["baseline"], []).append(r)
    by_id = {r["id"]: r for r in cases}
    return [(by_id.get(base, rows[0]).get("request") or base, rows)
            for base, rows in groups.items()]


def draw_chart(result: dict, paths: list[Path]) -> None:
    """Horizontal bars of each case's ratio to its group's bare Envoy (median req/s over the
    baseline's median), grouped as the table is; the error bar spans the case's slowest and
    fastest round over the same baseline median. Written to each of `paths` (.png, .svg).
    Raises on any failure; the caller reports it and carries on."""
    import matplotlib
    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    by_id = {r["id"]: r for r in result["cases"]}
    groups = chart_groups(result["cases"])
    # One slot per case, one for each group's title, one blank between groups.
    slots = sum(len(rows) + 2 for _, rows in groups)
    fig, ax = plt.subplots(figsize=(10, 0.36 * slots + 1.6))
    palette = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3"]
    y = 0.0
    ticks, labels = [], []
    xmax = 1.2
    for g, (title, rows) in enumerate(groups):
        ax.text(0, y, title, fontsize=9, fontweight="bold", va="center", ha="left")
        y += 1
        for r in rows:
            ticks.append(y)
            labels.append(r["id"])
            base = by_id.get(r["baseline"], {}).get("rps_median")
            if r.get("failed") or r.get("ratio") is None or not base:
                ax.text(0.01, y, "FAILED: " + (r.get("failed") or "no ratio")[:90],
                        fontsize=8, va="center", color="#C44E52")
                y += 1
                continue
            lo, hi = r["rps_min"] / base, r["rps_max"] / base
            color = "#9A9A9A" if r["id"] == r["baseline"] else palette[g % len(palette)]
            ax.barh(y, r["ratio"], height=0.7, color=color,
                    xerr=[[max(r["ratio"] - lo, 0)], [max(hi - r["ratio"], 0)]],
                    error_kw={"ecolor": "#333333", "capsize": 3, "lw": 1})
            note = f"{r['ratio']:.2f}  ({r['rps_median']:,.0f} req/s)"
            if r.get("records_delivered_ratio") is not None:
                note += f"  delivered {r['records_delivered_ratio']:.3f}"
            ax.text(max(hi, r["ratio"]) + 0.015, y, note, fontsize=8, va="center")
            xmax = max(xmax, hi + 0.45)
            y += 1
        y += 1
    ax.axvline(1.0, color="#333333", lw=0.8, ls="--")
    ax.set_yticks(ticks, labels, fontsize=9)
    ax.set_ylim(y - 1, -1)
    ax.set_xlim(0, xmax)
    ax.set_xlabel("req/s relative to bare Envoy sending the same request (median of the rounds;"
                  " bars: slowest–fastest round)", fontsize=9)
    p = result["params"]
    ax.set_title(f"aura-guard bench {result['started']}, Envoy {result['envoy']}, "
                 f"{result['cpus']} CPUs, load {result['loadavg']}; {p['rounds']} rounds x "
                 f"{p['duration_s']:g} s, wrk -c{p['connections']}", fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    for path in paths:
        fig.savefig(path, dpi=110)
    plt.close(fig)


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
    global AURA_WASM, AUDIT_COLLECTOR  # --aura-wasm: what aura_filter() loads
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
    ap.add_argument("--collector", type=Path, default=COLLECTOR_BIN,
                    help="the aura-collector binary the aura-audit case ships to "
                         "(default: the release build)")
    ap.add_argument("--audit-database-url",
                    default=os.environ.get("BENCH_AUDIT_DATABASE_URL") or None,
                    help="the aura-audit case's collector store (default: SQLite in the "
                         "work dir); e.g. a PostgreSQL URL from scripts/pg-temp.sh")
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
        copies = []
        for c in cases:
            if c["id"].startswith("aura-"):
                copies.append(dict(c, id=c["id"] + "-before", label=c["label"] + " (before)",
                                   wasm=str(a.compare_wasm.resolve())))
        cases = cases + copies
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
        if any(c.get("audit") for c in cases):
            AUDIT_COLLECTOR = AuditCollector(a.collector.resolve(), work,
                                             a.audit_database_url).start()
            if AUDIT_COLLECTOR.database_url.startswith("postgres"):
                for c in cases:
                    if c["id"] == "aura-audit":
                        c["label"] = c["label"].replace("SQLite", "PostgreSQL")
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
            missing = e.missing_headers() if e.case.get("sets_headers") else []
            if missing:
                probe_failures[e.id] = (f"the response lacks {', '.join(missing)}: the case "
                                        "does not set the headers it measures")
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
                audit_before = audit_counts(e) if e.case.get("audit") else None
                meters = Meters(e, upstream, rls)
                before = meters.read()
                r = run_wrk(e.listen_port, e.case["wrk"], a.duration, a.connections)
                r["meters"] = Meters.per_request(before, meters.read(), r["requests"])
                if "cpu_us_envoy" in r["meters"]:
                    r["envoy_cpu_s"] = r["meters"]["cpu_us_envoy"] * r["requests"] / 1e6
                if audit_before is not None:
                    r["audit"] = audit_round(audit_before, audit_counts(e))
                runs[e.id].append(r)
                print(f"  round {rnd + 1}/{a.rounds} {e.id:18} {r['rps']:>10,.0f} req/s  "
                      f"p99 {r['latency_us']['p99'] / 1000:6.2f} ms", flush=True)
        for e in envoys:
            calls = e.counter("cluster.ratelimit.upstream_rq_total") - rls_before[e.id]
            row = summarise(e.case, runs[e.id], calls)
            if e.case.get("audit"):
                row.update(audit_drain(e, runs[e.id]))
                row.update(audit_capacity(e, a.connections))
                row["failed"] = audit_failure(row)
                if row["failed"] is None:
                    del row["failed"]
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
        if AUDIT_COLLECTOR is not None:
            AUDIT_COLLECTOR.stop()

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
    # The chart is a convenience: if it cannot be drawn (no matplotlib, a bad value), the bench
    # says so and its results and exit status are those of the measurements alone.
    try:
        draw_chart(result, [a.out_dir / f"bench-{stamp}.{ext}" for ext in ("png", "svg")])
        chart = True
    except Exception as err:  # noqa: BLE001 -- any failure of the drawing
        print(f"bench: chart not drawn: {type(err).__name__}: {err}", file=sys.stderr)
        chart = False
    for name in (f"bench-{stamp}", "latest"):
        (a.out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        (a.out_dir / f"{name}.md").write_text(
            md + (f"\n![req/s ratio per case, with each case's slowest and fastest round]"
                  f"({name}.png)\n" if chart else ""))
        if chart and name == "latest":
            for ext in ("png", "svg"):
                shutil.copyfile(a.out_dir / f"bench-{stamp}.{ext}", a.out_dir / f"latest.{ext}")
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
