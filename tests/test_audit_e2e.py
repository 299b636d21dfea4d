"""The audit pipeline end to end: real Envoy (filter workers + the singleton shipper VM) and the
real aura-collector with JSONL files and SQLite (PostgreSQL in one test). docs/audit.md."""
import hashlib
import json
import os
import subprocess
import threading
import time

import pytest

from harness import ROOT, TEST_COLLECTOR_TOKEN, Collector, wait_until

# Values that must never be stored or logged anywhere.
SECRETS = ["tok_live_4f9a8b7c6d5e", "hunter2-correct-horse", "sk_test_51HxQ9secretvalue",
           "Bearer eyJhbGciOiJIUzI1NiJ9.e2e-jwt-secret", "4111 1111 1111 1111"]
AUDIT_ENV = {"ENVIRONMENT": "production", "AUDIT_COLLECTOR_TOKEN": TEST_COLLECTOR_TOKEN}
FAST = {"batch_size": 20, "flush_interval_ms": 200, "tick_ms": 50,
        "initial_backoff_ms": 100, "max_backoff_ms": 1000, "timeout_ms": 2000}


@pytest.fixture
def collector(log_dir):
    c = Collector(os.path.join(log_dir, "collector"))
    c.start()
    yield c
    c.stop()


def audit_stack(stack_factory, collector, audit_config=None, **kw):
    env = dict(AUDIT_ENV)
    env.update(kw.pop("env", {}))
    return stack_factory(env=env, collector_port=collector.port,
                         audit_config=audit_config or FAST, **kw)


def refund_body(i=0):
    return json.dumps({"amount": 10 + i, "currency": "EUR", "reason": "damaged",
                       "card_token": SECRETS[0], "password": SECRETS[1],
                       "nested": [{"api_key": SECRETS[2]}], "memo": "card " + SECRETS[4]})


def refund(s, i=0):
    body = refund_body(i)
    return s.request("POST", f"/api/v1/payments/refund?n={i}&access_token=qs-{SECRETS[0]}",
                     headers={"content-type": "application/json", "user-agent": "e2e/1.0",
                              "authorization": SECRETS[3], "x-request-id": f"refund-{i}"},
                     body=body)


def wait_records(collector, n, timeout=15, kind=None):
    def enough():
        recs = [r for r in collector.lines() if kind is None or r["kind"] == kind]
        return len(recs) >= n
    wait_until(enough, timeout, f"{n} audit records")
    return collector.lines()


def assert_no_secrets(collector, s):
    blobs = {"files": collector.files_text(),
             "db": json.dumps(collector.db_rows()),
             "envoy log": s.envoy_log()}
    for proc in os.listdir(collector.dir):
        if proc.endswith(".log"):
            with open(os.path.join(collector.dir, proc), errors="replace") as f:
                blobs["collector log " + proc] = f.read()
    for where, text in blobs.items():
        for secret in SECRETS + [TEST_COLLECTOR_TOKEN]:
            assert secret not in text, f"{secret!r} found in {where}"


def test_refund_is_recorded_sanitised_in_file_and_sqlite(stack_factory, collector):
    s = audit_stack(stack_factory, collector)
    r = refund(s)
    assert r.status == 200, r
    # The upstream got the body unchanged: only the record is sanitised.
    assert s.upstream_requests()[-1]["body_sha256"] == \
        hashlib.sha256(refund_body().encode()).hexdigest()
    recs = wait_records(collector, 1, timeout=5)
    assert len(recs) == 1, recs
    rec = recs[0]
    assert rec["kind"] == "operation" and rec["type"] == "payment_refund"
    assert rec["method"] == "POST"
    assert rec["path"] == "/api/v1/payments/refund?n=0&access_token=[REDACTED]"
    assert rec["status"] == 200 and rec["outcome"] == "completed"
    assert rec["client_ip"] == "127.0.0.1"
    assert rec["user_agent"] == "e2e/1.0"
    assert rec["request_id"] == "refund-0"
    assert rec["user_id"] is None
    assert isinstance(rec["duration_ms"], int) and rec["duration_ms"] >= 0
    assert rec["request_body"] == {
        "amount": 10, "currency": "EUR", "reason": "damaged", "card_token": "[REDACTED]",
        "password": "[REDACTED]", "nested": [{"api_key": "[REDACTED]"}], "memo": "[REDACTED]"}
    assert rec["seq"] == 1 and rec["prev_hash"] == "0" * 64
    rows = collector.db_rows()
    assert len(rows) == 1
    assert rows[0]["id"] == rec["id"] and rows[0]["type"] == "payment_refund"
    assert json.loads(rows[0]["line"])["request_body"]["card_token"] == "[REDACTED]"
    # A non-sensitive request produces nothing.
    assert s.request("POST", "/api/v1/orders", headers={"content-type": "application/json"},
                     body='{"password": "x"}').status == 200
    assert s.request("GET", "/api/v1/payments/refund").status == 200
    time.sleep(1.5)
    assert len(collector.lines()) == 1
    assert len(collector.db_rows()) == 1
    stats = s.stats("wasmcustom.aura_guard.audit")
    assert stats.get("wasmcustom.aura_guard.audit.records_shipped") == 1, stats
    assert stats.get("wasmcustom.aura_guard.audit.dropped", 0) == 0, stats
    assert collector.run("verify").returncode == 0
    assert collector.run("verify", "--files", collector.log_dir).returncode == 0
    assert_no_secrets(collector, s)
