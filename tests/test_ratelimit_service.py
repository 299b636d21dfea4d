"""Smoke test of envoy/ratelimit/config.yaml against the REAL envoyproxy/ratelimit service and
Redis, through the service's HTTP /json endpoint (same ShouldRateLimit as gRPC, protojson body).

It pins the descriptor layout documented in docs/ratelimit.md and produced by
crates/aura-guard-core/src/ratelimit/planner.rs. Needs `scripts/setup-ratelimit.sh` first;
nothing is skipped: a missing binary fails with that instruction.
"""
from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from run_ratelimit import SERVICE_BIN, RateLimitService, SetupError  # noqa: E402

DOMAIN = "aura-guard"
U32_MAX = 4294967295
ROUTES = {"login": (5, 300), "register": (3, 3600), "password_reset": (3, 3600), "refresh": (10, 600)}
LEVELS = [1, 2, 4, 8, 16]


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    if not SERVICE_BIN.is_file():
        pytest.fail(f"{SERVICE_BIN} is missing: run scripts/setup-ratelimit.sh first", pytrace=False)
    s = RateLimitService(tmp_path_factory.mktemp("ratelimit"))
    try:
        s.start()
    except SetupError as e:
        pytest.fail(f"could not start Redis + ratelimit: {e}\n{s.log_tail()}", pytrace=False)
    yield s
    s.stop()


def should_rate_limit(svc, descriptors):
    """POST a RateLimitRequest; returns (http_status, decoded protojson response)."""
    body = json.dumps({"domain": DOMAIN, "descriptors": descriptors}).encode()
    req = urllib.request.Request(svc.http_url + "/json", data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def attempt(route, kind, who, level, bucket, hits=1):
    return {
        "entries": [
            {"key": "route", "value": route},
            {"key": kind, "value": who},
            {"key": "level", "value": str(level)},
            {"key": "bucket", "value": str(bucket)},
        ],
        "hitsAddend": hits,
    }


def counter(route, kind, who, name, hits=0):
    return {
        "entries": [{"key": "route", "value": route}, {"key": kind, "value": who}, {"key": "counter", "value": name}],
        "hitsAddend": hits,
    }


def one(svc, descriptor):
    status, resp = should_rate_limit(svc, [descriptor])
    assert status in (200, 429), (status, resp)
    return resp["statuses"][0]


def in_one_hour(fn):
    """Runs fn, retrying once if an hour boundary (the login unit) passed meanwhile."""
    for _ in range(2):
        start = int(time.time()) // 3600
        fn(start)
        if int(time.time()) // 3600 == start:
            return
    raise AssertionError("hour boundary crossed twice")


def test_sixth_login_in_one_bucket_is_over_limit(svc):
    def run(hour):
        bucket = hour * 12 + 1  # any value: a separate counter per bucket value
        who = f"198.51.100.{hour % 200 + 1}"
        remaining = []
        for _ in range(5):
            st = one(svc, attempt("login", "ip", who, 1, bucket))
            assert st.get("code") == "OK", st
            remaining.append(st.get("limitRemaining", 0))
        assert remaining == [4, 3, 2, 1, 0]
        status, resp = should_rate_limit(svc, [attempt("login", "ip", who, 1, bucket)])
        assert status == 429 and resp["overallCode"] == "OVER_LIMIT", resp
        st = resp["statuses"][0]
        assert st["code"] == "OVER_LIMIT"
        assert st["currentLimit"] == {"requestsPerUnit": 5, "unit": "HOUR"}
        # The service reports the unit window's reset; the filter computes the bucket's own.
        assert st["durationUntilReset"].endswith("s")

    in_one_hour(run)


def test_hits_addend_zero_reads_without_counting(svc):
    def run(hour):
        who = f"reader-{hour}"
        bucket = hour * 12 + 2
        for _ in range(3):
            st = one(svc, attempt("login", "user", who, 1, bucket, hits=0))
            assert st["code"] == "OK" and st["limitRemaining"] == 5, st
        assert one(svc, attempt("login", "user", who, 1, bucket))["limitRemaining"] == 4
        assert one(svc, attempt("login", "user", who, 1, bucket, hits=0))["limitRemaining"] == 4

        # Failure / cleared counters: count = requestsPerUnit - limitRemaining.
        def count(name):
            st = one(svc, counter("login", "user", who, name))
            assert st["currentLimit"]["requestsPerUnit"] == U32_MAX, st
            return U32_MAX - st["limitRemaining"]

        assert count("failures") == 0
        one(svc, counter("login", "user", who, "failures", hits=1))
        one(svc, counter("login", "user", who, "failures", hits=1))
        assert count("failures") == 2
        # A success raises "cleared" to "failures": failures since success = 0.
        one(svc, counter("login", "user", who, "cleared", hits=2))
        assert count("failures") - count("cleared") == 0

    in_one_hour(run)


def test_a_different_bucket_is_fresh(svc):
    def run(hour):
        who = "2001:db8:42::/64"
        bucket = hour * 12 + 3
        for _ in range(6):
            one(svc, attempt("login", "ip", who, 1, bucket))
        assert one(svc, attempt("login", "ip", who, 1, bucket, hits=0))["code"] == "OVER_LIMIT"
        st = one(svc, attempt("login", "ip", who, 1, bucket + 1))
        assert st["code"] == "OK" and st["limitRemaining"] == 4, st

    in_one_hour(run)


def test_every_descriptor_the_filter_sends_is_configured(svc):
    expected_unit = {  # smallest unit whose seconds are a multiple of window * level
        300: ["HOUR", "HOUR", "HOUR", "DAY", "DAY"],
        600: ["HOUR", "HOUR", "DAY", "DAY", "DAY"],
        3600: ["HOUR", "DAY", "DAY", "DAY", "MONTH"],
    }
    for route, (requests, window) in ROUTES.items():
        for kind in ("ip", "user"):
            ds = [attempt(route, kind, "probe", m, 0, hits=0) for m in LEVELS]
            ds += [counter(route, kind, "probe", "failures"), counter(route, kind, "probe", "cleared")]
            status, resp = should_rate_limit(svc, ds)
            assert status == 200, resp
            limits = [s.get("currentLimit") for s in resp["statuses"]]
            assert limits[:5] == [{"requestsPerUnit": requests, "unit": u} for u in expected_unit[window]], (route, kind)
            assert limits[5:] == [{"requestsPerUnit": U32_MAX, "unit": "DAY"}] * 2, (route, kind)


def test_unconfigured_descriptor_has_no_limit(svc):
    # The filter treats a status without currentLimit as a config mismatch (failure mode).
    st = one(svc, attempt("nosuchroute", "ip", "1.2.3.4", 1, 0))
    assert st["code"] == "OK" and "currentLimit" not in st
