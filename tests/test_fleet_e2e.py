"""A fleet end to end: three real Envoys with the built filter sharing one real rate-limit
service (envoyproxy/ratelimit + Redis) and one real aura-collector (harness.Fleet, what
`ENVOYS=3 make run` starts). What a fleet shares must hold across its Envoys: the auth limits
(docs/ratelimit.md), the webhook replay memory (docs/webhooks.md) and the audit trail, one
stream per Envoy (docs/audit.md); and one Envoy killed must not take the others with it."""
import signal
import uuid

import pytest

from harness import free_port, wait_until
# The rate-limit tests' helpers: the config, the form POST, the 429 check, the window guard.
from test_ratelimit_e2e import (BEHIND_PROXY, assert_429, clear_of_boundaries, post,
                                rl_config, windows)
# The audit tests' settings and fixtures: production with the collector token, quick batches,
# the real collector, the steady load, the fault stand-in in front of the collector.
from test_audit_e2e import AUDIT_ENV, FAST, collector  # noqa: F401 (a fixture)
from test_audit_faults_e2e import (FaultProxy, Load, assert_once, refund, request_ids, stats,
                                   wait_stored)

OVER_LIMIT = "wasmcustom.aura_guard.ratelimit.over_limit.login."
# The default login limit (docs/ratelimit.md, "Default configuration"): 5 per 300 s.
LOGIN_LIMIT, LOGIN_WINDOW = 5, 300


def streams_of(lines):
    """{stream: [records]} of stored lines."""
    out = {}
    for rec in lines:
        out.setdefault(rec["stream"], []).append(rec)
    return out


def verify_lines(out, kinds):
    return [ln for ln in out.splitlines() if ln.split(" ")[0] in kinds]


PROBLEMS = ("MISSING", "HASH_BREAK", "FORK", "BAD_LINE", "GAP", "UNDELIVERED")


# --- 1. The auth limits are the fleet's, not each Envoy's -----------------------------------

def test_login_limits_per_ip_and_per_user_hold_across_three_envoys(fleet_factory):
    # The harness's clients reach Envoy from 127.0.0.1, listed as a trusted proxy: without an
    # X-Forwarded-For entry the client is 127.0.0.1, with one it is that entry. So the per-IP
    # limit is tried from 127.0.0.1 with a fresh username each time (only the IP can trip),
    # the per-user limit with one username from a fresh address each time (only the user can).
    fleet = fleet_factory(ratelimit_config=rl_config(**BEHIND_PROXY), collector=False)
    clear_of_boundaries(10, windows(LOGIN_WINDOW))

    def login(i, user, xff=None):
        return post(fleet[i % len(fleet)], "/auth/login", f"username={user}&password=wrong",
                    {"x-forwarded-for": xff} if xff else None)

    # Per IP: five failing tries spread over the three Envoys pass, the sixth is refused on
    # every one of them.
    tries = [login(i, uuid.uuid4().hex) for i in range(LOGIN_LIMIT)]
    assert [r.status for r in tries] == [401] * LOGIN_LIMIT, tries
    for i in range(len(fleet)):
        assert_429(login(i, uuid.uuid4().hex))
        assert fleet[i].stats(OVER_LIMIT + "ip").get(OVER_LIMIT + "ip") == 1, fleet[i].stats()
    # Per user: one username from a new address on every try, spread the same way.
    tries = [login(i, "fleet-victim", f"192.0.2.{i + 1}") for i in range(LOGIN_LIMIT)]
    assert [r.status for r in tries] == [401] * LOGIN_LIMIT, tries
    for i in range(len(fleet)):
        assert_429(login(i, "fleet-victim", f"192.0.2.{100 + i}"))
        assert fleet[i].stats(OVER_LIMIT + "user").get(OVER_LIMIT + "user") == 1, fleet[i].stats()
    # The refusals are the subjects' own: anyone else still gets through on every Envoy.
    for i in range(len(fleet)):
        assert login(i, f"other-{i}", f"198.51.100.{i + 1}").status == 401
    # Only the allowed tries reached an upstream: 5 per subject plus the 3 others.
    reached = sum(len([q for q in s.upstream_requests() if q["path"] == "/auth/login"])
                  for s in fleet)
    assert reached == 2 * LOGIN_LIMIT + len(fleet), reached


# --- 2. The audit trail: every Envoy's records, one verifiable stream each -------------------

def test_audited_requests_from_every_envoy_reach_the_collector_each_stream_verifying(
        fleet_factory):
    fleet = fleet_factory(env=dict(AUDIT_ENV), audit_config=FAST, ratelimit_config=rl_config())
    sent = {}
    for k in range(5):
        for i, s in enumerate(fleet):
            rid = f"envoy{i + 1}-{k}"
            assert refund(s, rid).status == 200
            sent[rid] = f"aura-guard-envoy{i + 1}-"
    collector = fleet.collector
    lines = wait_stored(collector, list(sent))
    assert_once(lines, list(sent))
    # Each record is in the stream of the Envoy that answered its request, named after it.
    for rec in lines:
        assert rec["stream"].startswith(sent[rec["request_id"]]), rec
    streams = streams_of(lines)
    assert len(streams) == len(fleet), sorted(streams)
    for stream, recs in streams.items():
        assert sorted(r["seq"] for r in recs) == list(range(1, len(recs) + 1)), stream
    # Each stream's chain verifies, in the database and in the files.
    for args in (("verify",), ("verify", "--files", collector.log_dir)):
        v = collector.run(*args)
        assert v.returncode == 0, v.stdout + v.stderr
        ok = verify_lines(v.stdout, ("OK",))
        assert sorted(ln.split(" ")[1] for ln in ok) == sorted(f"stream={s}" for s in streams), \
            v.stdout
        assert verify_lines(v.stdout, PROBLEMS) == [], v.stdout


# --- 3. One Envoy killed mid-run -------------------------------------------------------------

def test_an_envoy_killed_mid_run_leaves_the_others_serving_and_its_loss_reported_by_verify(
        fleet_factory, collector):  # noqa: F811 (the fixture)
    # docs/audit.md §9.5: records an Envoy's shipper still held when it died are lost; no gap
    # record can say so, but each batch announced how far its chain reached, and `verify` on
    # the database reports the records announced and never stored as UNDELIVERED once the
    # shipper was silent for --grace-s (PENDING before). To have records held at the kill,
    # envoy3 ships through a stand-in that stores each batch but holds its answer past the
    # shipper's timeout, so envoy3's shipper retries the front of its buffer while the rest
    # piles up (as in test_audit_faults_e2e.py). envoy1 and envoy2 ship straight to the
    # collector.
    proxy = FaultProxy(free_port(), collector, lambda body, n: None)
    try:
        fleet = fleet_factory(env=dict(AUDIT_ENV), audit_config=FAST,
                              ratelimit_config=rl_config(), collector=collector,
                              start_kw={"collector_ports": [None, None, proxy.server.server_port]})
        e1, e2, e3 = fleet
        loads = [Load(s, prefix=f"envoy{i + 1}", rate=10) for i, s in enumerate(fleet)]
        for load in loads:
            load.start()
        wait_until(lambda: all(len([r for r in request_ids(collector.lines())
                                    if r.startswith(f"envoy{i + 1}-")]) >= 5
                               for i in range(len(fleet))), 30, "every Envoy's load stored")
        with proxy.lock:
            proxy.hold_s = FAST["timeout_ms"] / 1000 + 1

        def e3_stored():
            return [r for r in collector.lines() if r["stream"].startswith("aura-guard-envoy3-")]
        wait_until(lambda: stats(e3).get("buffered", 0) >= 2 * FAST["batch_size"], 30,
                   "records buffered in envoy3 behind the slow collector")
        wait_until(lambda: proxy.chained > max(r["seq"] for r in e3_stored())
                   + FAST["batch_size"], 30, "an announcement past envoy3's stored records")
        e3_ok = loads[2].stop()
        e3.envoy.stop(sig=signal.SIGKILL)
        with proxy.lock:
            proxy.hold_s = 0
        # Gone for good: its listener is closed.
        with pytest.raises(OSError):
            e3.request("GET", "/api/v2/ping", timeout=2)

        # The others keep serving while it dies (their loads ran throughout, every request
        # answered), and what they share still works: the login limit across the two of them.
        clear_of_boundaries(10, windows(LOGIN_WINDOW))
        tries = [post(fleet[i % 2], "/auth/login", f"username={uuid.uuid4().hex}&password=x")
                 for i in range(LOGIN_LIMIT)]
        assert [r.status for r in tries] == [401] * LOGIN_LIMIT, tries
        assert_429(post(e1, "/auth/login", "username=late&password=x"))
        assert_429(post(e2, "/auth/login", "username=late&password=x"))
        survivors_ok = [rid for load in loads[:2] for rid in load.stop()]
        # Every request the survivors answered is stored once, their markers too.
        markers = []
        for i, s in enumerate((e1, e2)):
            markers.append(f"marker-{i + 1}")
            assert refund(s, markers[-1]).status == 200
        lines = wait_stored(collector, survivors_ok + markers)
        assert_once(lines, survivors_ok + markers)

        # envoy3: what was stored before the kill is its stream's start, unbroken; what it
        # still held is lost, and the part its batches had announced is named by verify.
        e3_recs = [r for r in lines if r["stream"].startswith("aura-guard-envoy3-")]
        e3_stream = e3_recs[0]["stream"]
        last_stored = max(r["seq"] for r in e3_recs)
        assert sorted(r["seq"] for r in e3_recs) == list(range(1, last_stored + 1))
        announced = proxy.chained
        lost = [rid for rid in e3_ok if rid not in request_ids(e3_recs)]
        assert announced > last_stored
        # Each record announced and never stored was a request envoy3 answered 200.
        assert len(lost) >= announced - last_stored, (len(lost), announced, last_stored)
        v = collector.run("verify", "--grace-s", "0")
        assert v.returncode == 1, v.stdout
        undelivered = verify_lines(v.stdout, ("UNDELIVERED",))
        assert len(undelivered) == 1 and undelivered[0].startswith(
            f"UNDELIVERED stream={e3_stream} seq={last_stored + 1}..{announced}: "
            "chained by the shipper"), v.stdout
        assert verify_lines(v.stdout, PROBLEMS[:-1]) == [], v.stdout
        survivors = verify_lines(v.stdout, ("OK",))
        assert len(survivors) == 2 and all("aura-guard-envoy1-" in ln or "aura-guard-envoy2-" in ln
                                           for ln in survivors), v.stdout
        # Within the grace period (default 300 s) the same records may still be on their way.
        v = collector.run("verify")
        assert v.returncode == 0, v.stdout
        assert f"PENDING stream={e3_stream} seq={last_stored + 1}..{announced}" in v.stdout
        # The files hold what was stored, each chain unbroken (they carry no announcements).
        v = collector.run("verify", "--files", collector.log_dir)
        assert v.returncode == 0 and len(verify_lines(v.stdout, ("OK",))) == 3, v.stdout
    finally:
        proxy.close()


# --- 4. Webhook replay across the fleet -------------------------------------------------------
# A delivery accepted by one Envoy is refused by the others (webhook.replay.mode "ratelimit",
# which every Fleet renders, render_envoy.FLEET_REPLAY_MODE): tests/test_webhook_fleet_e2e.py.
