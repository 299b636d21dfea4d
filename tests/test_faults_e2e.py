"""Dependency faults end to end, under steady load: real Envoy + the built filter + the real
envoyproxy/ratelimit service + real Redis (docs/robustness.md, "Dependency faults under load:
the rate limiter and Envoy itself").

- The rate-limit service, or its Redis, hung (SIGSTOP) for 5 s during 50 logins/s: every login
  gets the route's failure mode within the call timeout, none waits for the hang, none is left
  hanging after SIGCONT, and the service is used again afterwards.
- The `ratelimit` cluster's circuit breaker refuses calls past its limit at once while the
  service hangs: the failure mode without the wait.
- 200 slow clients each sending a 1 MiB webhook at 1 KiB/s: Envoy's request timeouts cut them
  off, control traffic stays served and Envoy's memory stays bounded and comes back.
- Held bodies past the overload manager's heap limit: Envoy refuses new requests, then serves
  again once the memory is back.
- A hot restart of Envoy at 20 requests/s answers every request.

Latency is asserted with a bound that tells "answered within the timeout" from "waited for the
hang" on a busy shared machine (timeout + 1 s against a 5 s hang). `make soak` runs the same
tests with AURA_SOAK=1, which also asserts the issue's strict bounds (the failure mode within
timeout + 50 ms, control p99 under 200 ms); the measured numbers are in docs/robustness.md.
Each test appends what it measured to logs/faults/measurements.jsonl."""
import itertools
import json
import os
import select
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness import ROOT, find_aura_hcm, wait_until
import render_envoy  # noqa: E402 (scripts/, on sys.path through harness)

SOAK = os.environ.get("AURA_SOAK") == "1"
UNAVAILABLE = {"detail": "Service temporarily unavailable. Please try again later."}
FORM = {"content-type": "application/x-www-form-urlencoded"}
PROD = {"ENVIRONMENT": "production"}


def record(name, **numbers):
    """Appends one test's measurements to logs/faults/measurements.jsonl (read into
    docs/robustness.md)."""
    d = os.path.join(ROOT, "logs", "faults")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "measurements.jsonl"), "a") as f:
        f.write(json.dumps({"test": name, "at": time.time(), "soak": SOAK, **numbers}) + "\n")


def percentile(values, p):
    """The p-th percentile (nearest rank) of values."""
    s = sorted(values)
    if not s:
        return None
    return s[min(len(s) - 1, max(0, int(round(p / 100 * len(s) + 0.5)) - 1))]


class Load:
    """Open-loop load: `send()` is started every 1/rate s on a thread of its own (a pool large
    enough for every request of a 5 s hang), so a request that hangs never delays the next one.
    Each result is (sent_at, latency_s, response or the exception)."""

    def __init__(self, send, rate, workers=512):
        self.send = send
        self.period = 1.0 / rate
        self.pool = ThreadPoolExecutor(max_workers=workers)
        self.futures = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _one(self):
        t0 = time.monotonic()
        try:
            out = self.send()
        except Exception as e:  # noqa: BLE001 (a connection error is a result here)
            out = e
        return t0, time.monotonic() - t0, out

    def _run(self):
        nxt = time.monotonic()
        while not self.stopping.is_set():
            self.futures.append(self.pool.submit(self._one))
            nxt += self.period
            delay = nxt - time.monotonic()
            if delay > 0:
                self.stopping.wait(delay)

    def start(self):
        self.thread.start()
        return self

    def stop(self, timeout):
        """Stops sending and waits (at most `timeout` s) for every request's answer."""
        self.stopping.set()
        self.thread.join()
        deadline = time.monotonic() + timeout
        results = []
        for f in self.futures:
            results.append(f.result(timeout=max(0.1, deadline - time.monotonic())))
        self.pool.shutdown(wait=False)
        return results


# --- 1. the rate-limit service or its Redis hung ---------------------------------------------
HANG_S = 5.0
# Far above what the load sends in one window: every answer is the service's OK or the failure
# mode, never a 429 (the limits themselves are pinned in tests/test_ratelimit_e2e.py).
HIGH_LIMIT = 1_000_000


def rl_config(timeout_ms, failure_mode):
    return {"timeout_ms": timeout_ms,
            "routes": [{"name": "login", "path": "/auth/login", "requests": HIGH_LIMIT,
                        "window_s": 60, "failure_mode": failure_mode,
                        "identity": {"body_fields": ["username", "email"]}}]}


def brief(results):
    """(latency s, status or error) of results, for a failure message."""
    return [(round(r[1], 3), getattr(r[2], "status", r[2])) for r in results]


def threads_stopped(pid):
    """Whether every thread of process `pid` is stopped (state T). kill(SIGSTOP) returns before
    they are: on this machine the service has been seen answering a check sent just after it."""
    task = f"/proc/{pid}/task"
    states = []
    for tid in os.listdir(task):
        try:
            with open(f"{task}/{tid}/stat") as f:
                # The state follows the command name, which is in parentheses.
                states.append(f.read().rsplit(")", 1)[1].split()[0])
        except OSError:
            pass  # a thread that ended meanwhile
    return bool(states) and all(st == "T" for st in states)


def hang(svc, name):
    """SIGSTOPs one of the service's processes and waits until all its threads are stopped."""
    pid = svc.send_signal(name, signal.SIGSTOP)
    wait_until(lambda: threads_stopped(pid), 5, f"{name} to stop")


def timed(call):
    t0 = time.monotonic()
    call()
    return time.monotonic() - t0


def login(stack, timeout=15):
    return stack.request("POST", "/auth/login", headers=FORM,
                         body="username=someone&password=wrong", timeout=timeout)


def gauge(stack, name):
    return stack.stats(name).get(name, 0)


@pytest.mark.parametrize("timeout_ms", [20, 200])
@pytest.mark.parametrize("hung", ["service_cmd", "redis-server"])
def test_a_hung_rate_limit_dependency_gets_the_failure_mode_within_the_call_timeout(
        stack_factory, ratelimit_factory, hung, timeout_ms):
    # Production: `default` fails closed there (docs/ratelimit.md, "Failure modes"); the
    # second stack is configured to fail open. Both use the one service that hangs.
    svc = ratelimit_factory(rl_config(timeout_ms, "default"))
    stacks = {
        "closed": stack_factory(plugin_config={"ratelimit": rl_config(timeout_ms, "default")},
                                env=PROD, ratelimit_port=svc.grpc_port, name="closed"),
        "open": stack_factory(plugin_config={"ratelimit": rl_config(timeout_ms, "open")},
                              env=PROD, ratelimit_port=svc.grpc_port, name="open"),
    }
    for s in stacks.values():
        # The service answers, the upstream refuses. Waited for: the first check also opens
        # the connection to the service, which can take longer than 20 ms on a busy machine.
        wait_until(lambda s=s: login(s).status == 401, 15, "the service to answer")
    # Failing open forwards to the upstream, whose answer through Envoy comes on top of the
    # timeout (with the demo upstream often about 40 ms: Python's http.server writes its head
    # and body apart, and delayed ACKs). Measured on a path the rate limiter does not check.
    upstream_s = percentile([timed(lambda: stacks["open"].request(
        "POST", "/api/v2/ping", FORM, "username=someone&password=wrong"))
        for _ in range(10)], 50)
    loads = {mode: Load(lambda s=s: login(s), rate=50).start() for mode, s in stacks.items()}
    time.sleep(2)
    hang(svc, hung)
    # Once stopped: a request sent before may still be answered by the service.
    stopped_at = time.monotonic()
    try:
        time.sleep(HANG_S)
    finally:
        continued_at = time.monotonic()
        svc.send_signal(hung, signal.SIGCONT)
    time.sleep(2)
    # Every request is answered: none waits longer than the client's own 15 s.
    results = {mode: load.stop(timeout=20) for mode, load in loads.items()}

    timeout_s = timeout_ms / 1000
    # The requests sent while the dependency was hung, early enough that no answer could
    # come from it before their deadline (a second of slack for a busy machine).
    in_hang = {mode: [r for r in rs if stopped_at <= r[0] <= continued_at - 1.0]
               for mode, rs in results.items()}
    measured = {}
    for mode, rs in results.items():
        errors = [r for r in rs if not hasattr(r[2], "status")]
        assert not errors, f"{mode}: {len(errors)} requests not answered: {brief(errors)[:5]}"
        want = {401, 503} if mode == "closed" else {401}
        wrong = [r for r in rs if r[2].status not in want]
        assert not wrong, f"{mode}: unexpected answers {brief(wrong)[:5]}, e.g. {wrong[0]}"
        hang_rs = in_hang[mode]
        assert len(hang_rs) >= 100, f"{mode}: only {len(hang_rs)} requests during the hang"
        if mode == "closed":
            not_closed = [r for r in hang_rs if r[2].status != 503]
            assert not not_closed, (f"closed: {len(not_closed)} of {len(hang_rs)} answered "
                                    f"otherwise during the hang: {brief(not_closed)[:5]}")
            assert all(r[2].json() == UNAVAILABLE for r in rs if r[2].status == 503)
        # None waited for the hang: each answer came within the call timeout (+ 1 s of slack
        # for a busy machine, against the 5 s hang).
        bound = timeout_s + 1.0
        slow = sorted(r[1] for r in rs if r[1] > bound)
        assert not slow, (f"{mode}: {len(slow)} requests slower than {bound:.3f} s "
                          f"(timeout {timeout_ms} ms), slowest {slow[-3:]}")
        if SOAK:
            # The bound for the failure mode: the timeout + 50 ms (+ the upstream's
            # own answer when the route fails open and forwards).
            strict = timeout_s + 0.05 + (upstream_s if mode == "open" else 0)
            slow = sorted(r[1] for r in hang_rs if r[1] > strict)
            assert not slow, (f"{mode}: {len(slow)} of {len(hang_rs)} failure-mode answers "
                              f"slower than {strict:.3f} s, slowest {slow[-3:]}")
        over = [(r[1] - timeout_s) * 1000 for r in hang_rs]
        healthy = [r[1] * 1000 for r in rs if r[0] < stopped_at]
        measured[mode] = {"requests": len(rs), "in_hang": len(hang_rs),
                          "healthy_p50_ms": round(percentile(healthy, 50), 1),
                          "p50_over_timeout_ms": round(percentile(over, 50), 1),
                          "p99_over_timeout_ms": round(percentile(over, 99), 1),
                          "max_over_timeout_ms": round(max(over), 1)}
    record(f"rls_hang[{hung}-{timeout_ms}]", timeout_ms=timeout_ms,
           upstream_p50_ms=round(upstream_s * 1000, 1), **measured)

    closed, opened = stacks["closed"], stacks["open"]
    n_503 = sum(1 for r in results["closed"] if r[2].status == 503)
    assert closed.stats().get(
        "wasmcustom.aura_guard.ratelimit.service_failure.login.closed", 0) == n_503
    assert opened.stats().get(
        "wasmcustom.aura_guard.ratelimit.service_failure.login.open", 0) >= len(in_hang["open"])
    # Nothing is left hanging in Envoy: no client stream, and no call to the service (the
    # fire-and-forget failure records of the open stack included) outlives its timeout.
    for s in stacks.values():
        wait_until(lambda s=s: gauge(s, "http.ingress.downstream_rq_active") == 0, 10,
                   "client streams to end")
        wait_until(lambda s=s: gauge(s, "cluster.ratelimit.upstream_rq_active") == 0, 10,
                   "rate-limit calls to end")
    # And the service is used again: a login is answered by it (401 from the upstream, not
    # the failure mode) within a bounded time.
    wait_until(lambda: login(closed).status == 401, 15, "the service to answer again")


TEST_MAX_REQUESTS = 10


def test_the_rate_limit_circuit_breaker_fails_checks_at_once_while_the_service_hangs(
        stack_factory, ratelimit_factory):
    # A long call timeout: without the breaker every check of the hang waits all of it.
    timeout_ms = 2000

    def fewer_requests(cfg):
        # envoy/envoy.yaml's breaker for the ratelimit cluster as shipped, but for max_requests
        # (KeyError: the template lost it).
        cluster = next(c for c in cfg["static_resources"]["clusters"]
                       if c["name"] == "ratelimit")
        cluster["circuit_breakers"]["thresholds"][0]["max_requests"] = TEST_MAX_REQUESTS

    svc = ratelimit_factory(rl_config(timeout_ms, "default"))
    s = stack_factory(plugin_config={"ratelimit": rl_config(timeout_ms, "default")}, env=PROD,
                      ratelimit_port=svc.grpc_port, edit=fewer_requests)
    wait_until(lambda: login(s).status == 401, 15, "the service to answer")
    active = Sampler(s, "cluster.ratelimit.upstream_rq_active", period=0.1).start()
    try:
        hang(svc, "service_cmd")
        load = Load(lambda: login(s), rate=50).start()
        time.sleep(HANG_S)
        results = load.stop(timeout=timeout_ms / 1000 + 15)
    finally:
        svc.send_signal("service_cmd", signal.SIGCONT)
    most_active = max(active.stop())

    errors = [r for r in results if not hasattr(r[2], "status")]
    assert not errors, f"{len(errors)} requests not answered: {brief(errors)[:5]}"
    # Every check failed closed: the ones admitted at the call timeout, the rest at once.
    not_closed = [r for r in results if r[2].status != 503]
    assert not not_closed, f"{len(not_closed)} not failed closed: {brief(not_closed)[:5]}"
    at_once = [r for r in results if r[1] < timeout_ms / 1000 / 2]
    # Envoy's count of the calls its breaker refused (max_requests).
    overflow = s.stats("cluster.ratelimit.upstream_rq_active_overflow").get(
        "cluster.ratelimit.upstream_rq_active_overflow", 0)
    record("rls_circuit_breaker", timeout_ms=timeout_ms, max_requests=TEST_MAX_REQUESTS,
           requests=len(results), failed_at_once=len(at_once), overflow=overflow,
           most_active=most_active)
    assert most_active <= TEST_MAX_REQUESTS, most_active
    assert len(at_once) >= len(results) // 2, (len(at_once), len(results))
    assert overflow >= len(at_once), overflow


# --- 2. slow clients on a webhook route -------------------------------------------------------
WEBHOOK_BODY = 1024 * 1024  # 1 MiB: the filter holds the whole body (docs/webhooks.md)
SLOW_CLIENTS = 200
STALLED_CLIENTS = 20
# The HCM timeouts the test runs with: envoy/envoy.yaml's shape with shorter values, so the
# cut-off shows within seconds (tests/test_envoy_config.py pins the shipped values).
TEST_REQUEST_TIMEOUT_S = 5
TEST_STREAM_IDLE_TIMEOUT_S = 2
# Below the idle timeout, as shipped (10 s and 20 s): header lines arriving do not count as
# activity for the idle timer, which would cut these clients off otherwise.
TEST_REQUEST_HEADERS_TIMEOUT_S = 1
# Clients that send their headers a line a second and never finish them (slowloris).
SLOW_HEADER_CLIENTS = 20
MIB = 1024 * 1024


def webhook_head(port, delivery):
    """A GitHub delivery's request head: valid-looking headers, a 1 MiB body announced."""
    return (f"POST /webhooks/github HTTP/1.1\r\nHost: localhost:{port}\r\n"
            "Content-Type: application/json\r\nUser-Agent: GitHub-Hookshot/abc1234\r\n"
            f"X-GitHub-Event: push\r\nX-GitHub-Delivery: {delivery}\r\n"
            f"X-Hub-Signature-256: sha256={'0' * 64}\r\n"
            f"Content-Length: {WEBHOOK_BODY}\r\n\r\n").encode()


def slow_client(port, i, rate_bps, give_up_s, stall_after=None):
    """Sends a webhook at `rate_bps` (1 KiB each second), or stops sending after
    `stall_after` bytes, until Envoy answers or closes the connection. Returns (seconds until
    cut off or None if never, bytes sent, what Envoy answered)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    t0 = time.monotonic()
    sent = 0
    try:
        sock.sendall(webhook_head(port, f"72d3162e-cc78-11e3-81ab-{i:012d}"))
        while time.monotonic() - t0 < give_up_s:
            if sent < WEBHOOK_BODY and (stall_after is None or sent < stall_after):
                chunk = min(rate_bps, WEBHOOK_BODY - sent)
                try:
                    sock.sendall(b"x" * chunk)
                except OSError as e:
                    return time.monotonic() - t0, sent, repr(e).encode()
                sent += chunk
            readable, _, _ = select.select([sock], [], [], 1.0)
            if readable:
                answer = sock.recv(4096)
                return time.monotonic() - t0, sent, answer
        return None, sent, b""
    finally:
        sock.close()


def slow_headers_client(port, i, give_up_s):
    """Sends a webhook's request line, then one more header line each second, never ending
    the head. Returns (seconds until cut off or None if never, bytes sent, what Envoy
    answered)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    t0 = time.monotonic()
    sent = 0
    try:
        line = f"POST /webhooks/github HTTP/1.1\r\nHost: localhost:{port}\r\n".encode()
        while time.monotonic() - t0 < give_up_s:
            try:
                sock.sendall(line)
            except OSError as e:
                return time.monotonic() - t0, sent, repr(e).encode()
            sent += len(line)
            line = f"X-Pad-{sent}: {i}\r\n".encode()
            readable, _, _ = select.select([sock], [], [], 1.0)
            if readable:
                return time.monotonic() - t0, sent, sock.recv(4096)
        return None, sent, b""
    finally:
        sock.close()


class Sampler:
    """Reads one Envoy gauge every `period` s on a thread of its own."""

    def __init__(self, stack, name, period=0.25):
        self.stack, self.name, self.period = stack, name, period
        self.values = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stopping.is_set():
            try:
                self.values.append(gauge(self.stack, self.name))
            except OSError:
                pass
            self.stopping.wait(self.period)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stopping.set()
        self.thread.join()
        return self.values


def ping(stack):
    return stack.request("GET", "/api/v2/ping", timeout=15)


def test_slow_webhook_senders_are_cut_off_and_control_traffic_stays_served(stack_factory):
    # The shipped timeouts, shortened: the test fails when envoy/envoy.yaml drops one.
    shipped = find_aura_hcm(render_envoy.render(os.path.join(ROOT, "envoy/envoy.yaml")))
    missing = [k for k in ("request_timeout", "stream_idle_timeout", "request_headers_timeout")
               if k not in shipped]
    assert not missing, f"envoy/envoy.yaml's HCM lacks {missing}"
    s = stack_factory(env={**PROD, "WEBHOOK_SECRET_GITHUB": "github-current-secret"},
                      hcm={"request_timeout": f"{TEST_REQUEST_TIMEOUT_S}s",
                           "stream_idle_timeout": f"{TEST_STREAM_IDLE_TIMEOUT_S}s",
                           "request_headers_timeout": f"{TEST_REQUEST_HEADERS_TIMEOUT_S}s"})
    assert ping(s).status == 200
    baseline = gauge(s, "server.memory_allocated")
    memory = Sampler(s, "server.memory_allocated").start()
    control = Load(lambda: ping(s), rate=20).start()
    give_up = TEST_REQUEST_TIMEOUT_S + 10
    with ThreadPoolExecutor(max_workers=SLOW_CLIENTS + STALLED_CLIENTS +
                            SLOW_HEADER_CLIENTS) as pool:
        slow = [pool.submit(slow_client, s.listen_port, i, 1024, give_up)
                for i in range(SLOW_CLIENTS)]
        stalled = [pool.submit(slow_client, s.listen_port, SLOW_CLIENTS + i, 1024, give_up,
                               stall_after=1024) for i in range(STALLED_CLIENTS)]
        slow_heads = [pool.submit(slow_headers_client, s.listen_port, i, give_up)
                      for i in range(SLOW_HEADER_CLIENTS)]
        slow = [f.result() for f in slow]
        stalled = [f.result() for f in stalled]
        slow_heads = [f.result() for f in slow_heads]
    time.sleep(1)
    controls = control.stop(timeout=20)
    # Memory comes back near where it was once the slow clients are gone.
    wait_until(lambda: gauge(s, "server.memory_allocated") < baseline + 8 * MIB, 15,
               "Envoy's memory to come back")
    peak = max(memory.stop())

    for name, clients, cut_at in (("slow", slow, TEST_REQUEST_TIMEOUT_S),
                                  ("stalled", stalled, TEST_STREAM_IDLE_TIMEOUT_S),
                                  ("slow headers", slow_heads, TEST_REQUEST_HEADERS_TIMEOUT_S)):
        never = [c for c in clients if c[0] is None]
        assert not never, f"{len(never)} {name} clients never cut off, e.g. {never[:2]}"
        # Cut off by Envoy's timeout (408), not before it and not long after (a busy machine).
        early_or_late = [c for c in clients if not cut_at - 0.5 <= c[0] <= cut_at + 3]
        assert not early_or_late, f"{name}: cut off at {sorted(c[0] for c in early_or_late)[:5]}"
        not_408 = [c for c in clients if not c[2].startswith(b"HTTP/1.1 408")]
        assert not not_408, f"{name}: {not_408[:2]}"
    stats = s.stats("http.ingress.downstream_rq_")
    assert stats.get("http.ingress.downstream_rq_timeout") == SLOW_CLIENTS, stats
    assert stats.get("http.ingress.downstream_rq_idle_timeout") == STALLED_CLIENTS, stats
    assert stats.get("http.ingress.downstream_rq_header_timeout") == SLOW_HEADER_CLIENTS, stats
    # The held bodies never reached the upstream.
    assert not [r for r in s.upstream_requests() if "webhooks" in r["path"]]

    errors = [c for c in controls if not hasattr(c[2], "status")]
    assert not errors, f"{len(errors)} control requests not answered: {brief(errors)[:5]}"
    assert all(c[2].status == 200 for c in controls), brief(controls)
    lat = [c[1] * 1000 for c in controls]
    p50, p99 = percentile(lat, 50), percentile(lat, 99)
    record("slow_clients", control_requests=len(controls), control_p50_ms=round(p50, 1),
           control_p99_ms=round(p99, 1), control_max_ms=round(max(lat), 1),
           memory_baseline_mib=round(baseline / MIB, 2), memory_peak_mib=round(peak / MIB, 2),
           slow_cut_s=[round(min(c[0] for c in slow), 2), round(max(c[0] for c in slow), 2)],
           stalled_cut_s=[round(min(c[0] for c in stalled), 2),
                          round(max(c[0] for c in stalled), 2)],
           slow_headers_cut_s=[round(min(c[0] for c in slow_heads), 2),
                               round(max(c[0] for c in slow_heads), 2)])
    assert p99 < (200 if SOAK else 1000), f"control p99 {p99:.0f} ms"
    # Bounded: 240 clients with their partial requests never cost more than 64 MiB.
    assert peak - baseline < 64 * MIB, (baseline, peak)


# The overload manager (envoy/envoy.yaml) with a heap limit small enough for a test to reach:
# clients that send all of a webhook's body but its last byte, then nothing, make Envoy hold
# about 1 MiB each (the filter holds a webhook body until it is whole).
TEST_HEAP_LIMIT = 96 * MIB
# 200 clients at 40 a second: about 200 MiB held without the overload manager, twice the limit.
HOLDING_CLIENTS = 200
HOLDING_RATE = 40
HELD_IDLE_TIMEOUT_S = 6
OVERLOADED = "overload.envoy.overload_actions.stop_accepting_requests.active"


def holding_client(port, i, give_up_s):
    """Sends a webhook but its last byte, then waits for Envoy's answer. Returns (seconds from
    the last byte sent until the answer or None, what Envoy answered)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=give_up_s)
    try:
        sock.sendall(webhook_head(port, f"9a1b2c3d-cc78-11e3-81ab-{i:012d}"))
        sock.sendall(b"x" * (WEBHOOK_BODY - 1))
        t0 = time.monotonic()
        readable, _, _ = select.select([sock], [], [], give_up_s)
        if not readable:
            return None, b""
        return time.monotonic() - t0, sock.recv(4096)
    except OSError as e:
        return None, repr(e).encode()
    finally:
        sock.close()


def test_over_the_heap_limit_envoy_refuses_new_requests_until_its_memory_comes_back(
        stack_factory):
    def smaller_heap(cfg):
        # envoy/envoy.yaml's overload manager as shipped, but for the limit (KeyError or
        # StopIteration: the template lost it).
        monitors = cfg["overload_manager"]["resource_monitors"]
        heap = next(m for m in monitors if m["name"] == "envoy.resource_monitors.fixed_heap")
        heap["typed_config"]["max_heap_size_bytes"] = TEST_HEAP_LIMIT

    s = stack_factory(env={**PROD, "WEBHOOK_SECRET_GITHUB": "github-current-secret"},
                      hcm={"stream_idle_timeout": f"{HELD_IDLE_TIMEOUT_S}s",
                           "request_timeout": f"{HELD_IDLE_TIMEOUT_S * 3}s"},
                      edit=smaller_heap)
    assert ping(s).status == 200
    assert gauge(s, OVERLOADED) == 0
    baseline = gauge(s, "server.memory_allocated")
    memory = Sampler(s, "server.memory_allocated", period=0.1).start()
    overloaded = Sampler(s, OVERLOADED, period=0.1).start()
    n = itertools.count()  # a delivery id each (the load may start one client more)
    clients = Load(lambda: holding_client(s.listen_port, next(n), HELD_IDLE_TIMEOUT_S + 15),
                   rate=HOLDING_RATE).start()
    time.sleep(HOLDING_CLIENTS / HOLDING_RATE - 0.5 / HOLDING_RATE)
    held = [r[2] for r in clients.stop(timeout=HELD_IDLE_TIMEOUT_S + 30)]
    peak = max(memory.stop())
    was_overloaded = max(overloaded.stop())

    # Each client's held stream was cut off by the idle timeout (408), or the request was
    # refused at its headers while Envoy was over the limit (503).
    errors = [h for h in held if not isinstance(h, tuple) or h[0] is None]
    assert not errors, f"{len(errors)} holding clients not answered: {errors[:3]}"
    cut = [h for h in held if h[1].startswith(b"HTTP/1.1 408")]
    refused = [h for h in held if h[1].startswith(b"HTTP/1.1 503")
               and h[1].endswith(b"envoy overloaded")]
    assert len(cut) + len(refused) == len(held), [h for h in held
                                                  if h not in cut and h not in refused][:3]
    assert was_overloaded == 1 and refused, (was_overloaded, len(refused))
    # Bounded: near the limit (what arrives within a refresh of the monitor comes on top), far
    # below the ~200 MiB the clients would hold otherwise.
    assert peak < TEST_HEAP_LIMIT + 48 * MIB, (baseline, peak)
    # And back: the overload ends, Envoy serves, its memory returns near where it was.
    wait_until(lambda: gauge(s, OVERLOADED) == 0, 15, "the overload to end")
    assert ping(s).status == 200
    wait_until(lambda: gauge(s, "server.memory_allocated") < baseline + 8 * MIB, 15,
               "Envoy's memory to come back")
    after = gauge(s, "server.memory_allocated")
    stats = s.stats("http.ingress.downstream_rq_")
    assert stats.get("http.ingress.downstream_rq_overload_close", 0) >= len(refused), stats
    record("overload", heap_limit_mib=TEST_HEAP_LIMIT // MIB, clients=HOLDING_CLIENTS,
           held_then_cut=len(cut), refused_overloaded=len(refused),
           memory_baseline_mib=round(baseline / MIB, 2), memory_peak_mib=round(peak / MIB, 2),
           memory_after_mib=round(after / MIB, 2))


# --- 3. hot restart ---------------------------------------------------------------------------
def test_a_hot_restart_at_20_requests_a_second_answers_every_request(stack_factory):
    s = stack_factory(hot_restart=True, env=PROD)
    assert ping(s).status == 200
    load = Load(lambda: ping(s), rate=20).start()
    time.sleep(2)
    old = s.hot_restart()
    # The old Envoy drains and exits by itself (--parent-shutdown-time-s).
    wait_until(lambda: not old.alive(), s.PARENT_SHUTDOWN_S + 10, "the old Envoy to exit")
    time.sleep(2)
    results = load.stop(timeout=20)
    errors = [r for r in results if not hasattr(r[2], "status")]
    assert not errors, f"{len(errors)} of {len(results)} requests failed: {brief(errors)[:5]}"
    bad = [r for r in results if r[2].status != 200]
    assert not bad, f"{len(bad)} of {len(results)} requests not 200: {brief(bad)[:5]}, {bad[0]}"
    # Every answer went through the filter (its security headers), before and after.
    assert all(r[2].header("x-content-type-options") == "nosniff" for r in results)
    assert old.proc.returncode == 0, f"the old Envoy exited with {old.proc.returncode}"
    # The new Envoy served part of the load (its counters are its own).
    assert gauge(s, "server.hot_restart_epoch") == 1
    assert s.stats("http.ingress.downstream_rq_2xx").get("http.ingress.downstream_rq_2xx", 0) > 0
    lat = [r[1] * 1000 for r in results]
    record("hot_restart", requests=len(results), p50_ms=round(percentile(lat, 50), 1),
           p99_ms=round(percentile(lat, 99), 1), max_ms=round(max(lat), 1))
