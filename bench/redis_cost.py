#!/usr/bin/env python3
"""What one auth request costs Redis, measured through the real path: Envoy + the built filter +
envoyproxy/ratelimit, once on one Redis (REDIS_TYPE SINGLE, the default) and once on a local
3-master Redis Cluster (REDIS_TYPE=cluster, scripts/run_ratelimit.py --redis-cluster). The
login route's default limits (docs/ratelimit.md); the clients' addresses come from
X-Forwarded-For (127.0.0.1 trusted) so every login can be a new user from a new address.

For each Redis it reports:
- Redis commands (INFO commandstats, summed over the nodes) for a login the upstream accepts
  with no failures to clear (one ShouldRateLimit call: the check) and for a failing login (the
  check plus the fire-and-forget call that records the failure);
- the keys a first failing login of a new user from a new address creates, and their bytes
  (MEMORY USAGE of each key, which counts the key, its value and Redis's per-key overhead);
- used_memory (INFO memory, summed over the nodes) grown per login over --logins failing logins
  of new users from new addresses;
- the same for a webhook delivery checked fleet-wide (`webhook.replay.mode: "ratelimit"`,
  docs/webhooks.md): a new GitHub delivery accepted, and a copy of it refused as a replay
  (its check plus the call that releases its attempt).

Counts, not timings: they do not depend on the machine's load (the one timing printed, Envoy's
p50/p99 of its rate-limit calls, does). docs/scaling.md quotes them. Usage: bench/redis_cost.py [--logins N] [--out FILE.json] (default /tmp/redis_cost.json).
Needs `make build` and scripts/setup-ratelimit.sh; every process it starts is stopped on exit.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from harness import Stack, request, start_ratelimit_service, wait_until  # noqa: E402
from test_webhook_e2e import body_for, env_for, signed  # noqa: E402

RL = {"timeout_ms": 2000, "trusted_hops": 1, "trusted_proxies": ["127.0.0.1/32"]}
PLUGIN = {"ratelimit": RL, "webhook": {"replay": {"mode": "ratelimit"}}}
FORM = {"content-type": "application/x-www-form-urlencoded"}
# What the measurement itself sends to Redis, left out of the counts.
ADMIN = {"info", "config", "flushall", "cluster", "ping", "memory", "dbsize", "scan", "command",
         "client", "hello", "auth", "select", "keys", "readonly"}
RLS_DONE = "cluster.ratelimit.upstream_rq_completed"


class Measure:
    def __init__(self, svc, stack):
        self.svc, self.stack = svc, stack
        self.calls = 0  # ShouldRateLimit calls Envoy has completed
        self.n = 0

    def cli(self, port, *args):
        return self.svc.redis_cli(port, *args)

    def reset(self, flush=True):
        """Zeroes the command counts and (with `flush`) empties Redis."""
        for p in self.svc.redis_ports:
            if flush:
                self.cli(p, "FLUSHALL")
            self.cli(p, "CONFIG", "RESETSTAT")

    def commands(self):
        out = {}
        for p in self.svc.redis_ports:
            for line in self.cli(p, "INFO", "commandstats").splitlines():
                if line.startswith("cmdstat_"):
                    name, rest = line[len("cmdstat_"):].split(":", 1)
                    calls = int(dict(kv.split("=") for kv in rest.split(","))["calls"])
                    if name.split("|")[0] not in ADMIN:
                        out[name] = out.get(name, 0) + calls
        return out

    def keys(self):
        """{key: bytes} over every node."""
        out = {}
        for p in self.svc.redis_ports:
            for key in self.cli(p, "--scan").split():
                out[key] = int(self.cli(p, "MEMORY", "USAGE", key, "SAMPLES", "0").strip())
        return out

    def used_memory(self):
        total = 0
        for p in self.svc.redis_ports:
            for line in self.cli(p, "INFO", "memory").splitlines():
                if line.startswith("used_memory:"):
                    total += int(line.split(":")[1])
        return total

    def settle(self, calls):
        """Waits until Envoy completed `calls` more ShouldRateLimit calls."""
        self.calls += calls
        wait_until(lambda: self.stack.stats(RLS_DONE).get(RLS_DONE, 0) >= self.calls, 10,
                   f"{self.calls} rate-limit calls")

    def login(self, user, password, calls):
        """A login of `user` from a new address; waits for its `calls` ShouldRateLimit calls."""
        self.n += 1
        ip = f"10.{self.n >> 16 & 255}.{self.n >> 8 & 255}.{self.n & 255}"
        r = self.stack.request("POST", "/auth/login", {**FORM, "x-forwarded-for": ip},
                               f"username={user}&password={password}")
        self.settle(calls)
        return r.status

    def delivery(self, body, calls):
        """A GitHub delivery of `body`; waits for its `calls` ShouldRateLimit calls."""
        path, headers = signed(self.stack, "github", body)
        r = self.stack.request("POST", path, headers=headers, body=body)
        self.settle(calls)
        return r.status


def rls_time(stack):
    """Envoy's p50 and p99 of its calls to the rate-limit service (ms, since it started):
    a timing, so only indicative on a shared machine."""
    r = request(stack.admin_port, "GET", "/stats?filter=cluster.ratelimit.upstream_rq_time$")
    text = r.body.decode()
    quantiles = dict(re.findall(r"P(\d+(?:\.\d+)?)\([^,]*,([^)]*)\)", text))
    return [round(float(quantiles.get(q, "nan")), 2) for q in ("50", "99")]


def measure(svc, stack, logins):
    m = Measure(svc, stack)
    out = {"nodes": len(svc.redis_ports)}
    # A login the upstream accepts, nothing to clear: the check alone.
    m.reset()
    assert m.login("demo", "demo-password", 1) == 200
    out["check_commands"] = m.commands()
    # A failing login of a new user: the check and the failure record.
    m.reset()
    assert m.login("new-user-0", "wrong", 2) == 401
    out["failed_login_commands"] = m.commands()
    keys = m.keys()
    out["failed_login_keys"] = len(keys)
    out["failed_login_key_bytes"] = sum(keys.values())
    out["key_example"] = sorted(keys)[:3]
    # Growth of used_memory over many failing logins of new users from new addresses.
    before = m.used_memory()
    for i in range(1, logins + 1):
        assert m.login(f"new-user-{i}", "wrong", 2) == 401
    out["logins"] = logins
    out["check_ms_p50_p99"] = rls_time(stack)
    out["used_memory_per_login"] = round((m.used_memory() - before) / logins)
    out["keys_per_login"] = round(sum(int(m.cli(p, "DBSIZE").strip())
                                      for p in svc.redis_ports) / (logins + 1), 2)
    # A new webhook delivery (one call: the check), then a copy of it refused as a replay (its
    # check, then the release of its attempt).
    m.reset()
    body = body_for("github")
    assert m.delivery(body, 1) == 200
    out["delivery_commands"] = m.commands()
    keys = m.keys()
    out["delivery_keys"] = len(keys)
    out["delivery_key_bytes"] = sum(keys.values())
    m.reset(flush=False)  # the delivery's counters stay: the copy is a replay
    assert m.delivery(body, 2) == 401
    out["replay_commands"] = m.commands()
    before = m.used_memory()
    for _ in range(logins):
        assert m.delivery(body_for("github"), 1) == 200
    out["used_memory_per_delivery"] = round((m.used_memory() - before) / logins)
    return out


def run(kind, work, logins):
    svc = start_ratelimit_service(os.path.join(work, kind, "rls"), RL,
                                  redis_cluster=3 if kind == "cluster" else None)
    stack = None
    try:
        stack = Stack(os.path.join(work, kind, "stack"), plugin_config=PLUGIN,
                      env=env_for(["github"], environment="development"),
                      ratelimit_port=svc.grpc_port)
        stack.start()
        assert request(stack.listen_port, "GET", "/api/v2/ping").status == 200
        return measure(svc, stack, logins)
    finally:
        if stack is not None:
            stack.stop()
        svc.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--logins", type=int, default=500)
    ap.add_argument("--out", default="/tmp/redis_cost.json")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="redis-cost-") as work:
        results = {kind: run(kind, work, a.logins) for kind in ("single", "cluster")}
    with open(a.out, "w") as f:
        json.dump(results, f, indent=2)
    for kind, r in results.items():
        print(f"{kind} ({r['nodes']} node(s)):")
        print(f"  check:        {sum(r['check_commands'].values())} commands {r['check_commands']}")
        print(f"  failed login: {sum(r['failed_login_commands'].values())} commands "
              f"{r['failed_login_commands']}")
        print(f"  first failed login of a new user from a new address: "
              f"{r['failed_login_keys']} keys, {r['failed_login_key_bytes']} bytes (MEMORY USAGE)")
        print(f"  over {r['logins']} such logins: {r['keys_per_login']} keys and "
              f"{r['used_memory_per_login']} bytes of used_memory per login")
        print(f"  webhook delivery accepted: {sum(r['delivery_commands'].values())} commands "
              f"{r['delivery_commands']}, {r['delivery_keys']} keys, "
              f"{r['delivery_key_bytes']} bytes; over {r['logins']}: "
              f"{r['used_memory_per_delivery']} bytes of used_memory per delivery")
        print(f"  replay refused (check + release): {sum(r['replay_commands'].values())} "
              f"commands {r['replay_commands']}")
        print(f"  Envoy's rate-limit calls, p50/p99 ms (a timing: indicative only): "
              f"{r['check_ms_p50_p99']}")
    print(f"written {a.out}")


if __name__ == "__main__":
    main()
