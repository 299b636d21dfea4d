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
        # The collector appends to the file, then commits to the DB, then answers.
        return len(recs) >= n and (not collector.database_url.startswith("sqlite") or
                                   len(collector.db_rows()) >= len(collector.lines()))
    wait_until(enough, timeout, f"{n} audit records")
    return collector.lines()


MARKER = "audit-marker"


def without_marker(s, collector):
    """The stored lines, once a marker is: sends a request that IS recorded (a refund with
    request id `audit-marker`) after the requests under test and waits for its record. A
    worker enqueues a request's records at the end of its stream, before its answer leaves,
    so whatever the earlier requests enqueued is ahead of the marker on the shipper's queue,
    which ships in order: once the marker is stored, so is anything they left. Returns every
    stored line but the marker's."""
    r = s.request("POST", "/api/v1/payments/refund?n=marker",
                  headers={"content-type": "application/json", "x-request-id": MARKER},
                  body=json.dumps({"amount": 1}))
    assert r.status == 200, r

    def stored():
        recs = collector.lines()
        # In the file first, then in the database (as wait_records).
        return any(rec["request_id"] == MARKER for rec in recs) and (
            not collector.database_url.startswith("sqlite") or
            len(collector.db_rows()) >= len(recs))
    wait_until(stored, 15, "the marker's audit record")
    return [rec for rec in collector.lines() if rec["request_id"] != MARKER]


def shipper_ticks(s, n):
    """Waits until the shipper of `s` has ticked `n` more times: the positive signal that it
    ran (and would have shipped what it had) over that span."""
    name = "wasmcustom.aura_guard.audit.ticks"
    first = s.stats(name).get(name, 0)
    wait_until(lambda: s.stats(name).get(name, 0) >= first + n, 15, f"{n} shipper ticks")


def assert_no_secrets(collector, s, secrets=()):
    blobs = {"files": collector.files_text(),
             "db": json.dumps(collector.db_rows()),
             "envoy log": s.envoy_log()}
    for proc in os.listdir(collector.dir):
        if proc.endswith(".log"):
            with open(os.path.join(collector.dir, proc), errors="replace") as f:
                blobs["collector log " + proc] = f.read()
    for where, text in blobs.items():
        for secret in SECRETS + [TEST_COLLECTOR_TOKEN] + list(secrets):
            assert secret not in text, f"{secret!r} found in {where}"


# Payment and identity secrets of every kind (docs/audit.md §9.2), under keys spelt the ways
# clients spell them, nested and in arrays, with card numbers written with dots, double spaces
# and mixed separators. Each value is distinctive so the stores can be searched for it.
PAYMENT_SECRETS = {
    "cardCvc": "cvc-e2e-a1", "card-cvv2": "cvv2-e2e-a2", "CARD_CID": "cid-e2e-a3",
    "card.csc": "csc-e2e-a4", "securityCode": "seccode-e2e-a5", "cvn": "cvn-e2e-a6",
    "pinBlock": "pinblock-e2e-a7", "IBAN": "DE89370400440532013000",
    "accountNumber": "acct-e2e-b1", "routing-number": "routing-e2e-b2",
    "sort_code": "sortcode-e2e-b3", "BSB": "bsb-e2e-b4", "ssn": "ssn-e2e-b5",
    "taxId": "taxid-e2e-b6", "itin": "itin-e2e-b7", "national_id": "natid-e2e-b8",
    "otp": "otp-e2e-c1", "totpCode": "totp-e2e-c2", "mfa-code": "mfa-e2e-c3",
    "2fa": "twofa-e2e-c4", "passphrase": "passphrase-e2e-c5",
    "private_key": "privkey-e2e-c6", "clientSecret": "clientsecret-e2e-c7",
}
# Card numbers (Luhn-valid test numbers) as written in the request, and their digits.
CARDS = {"4111.1111.1111.1111": "4111111111111111", "5500  0000  0000  0004": "5500000000000004",
         "3782-822463 10005": "378282246310005", "5105.1051.0510.5100": "5105105105105100",
         "4000.0566.5566.5556": "4000056655665556", "3566 0020 2036 0505": "3566002020360505",
         "6011-0009-9013-9424": "6011000990139424", "4242424242424242": "4242424242424242"}
# Ordinary values that must stay readable (short fragments inside words, non-Luhn numbers).
KEPT = {"business_name": "Classname Bistro", "shipping_address": "1 Spinning Way",
        "destination": "Lyon", "setting": "express", "opinion": "fine", "footprint": "small"}


def payment_body():
    s = PAYMENT_SECRETS
    return {
        "amount": 2500, "currency": "EUR", "reason": "duplicate charge",
        "card": {k: s[k] for k in ("cardCvc", "card-cvv2", "CARD_CID", "card.csc", "securityCode",
                                   "cvn", "pinBlock")}
        | {"number": "4111.1111.1111.1111", "expiry": "12/29", "brand": "visa", "PIN": 48213},
        "payer": {k: s[k] for k in ("IBAN", "accountNumber", "routing-number", "sort_code", "BSB",
                                    "ssn", "taxId", "itin", "national_id")} | KEPT,
        "auth": [{k: s[k]} for k in ("otp", "totpCode", "mfa-code", "2fa", "passphrase",
                                     "private_key", "clientSecret")] + [{"mfa_enabled": True}],
        "notes": ["card 5500  0000  0000  0004 was charged twice", "call +1 555 123 4567",
                  "refund of 2024-01-15", {"memo": "backup card 3782-822463 10005"}],
        "order_id": "4111111111111112",
        "amounts": [4242424242424242, 12, 25.5],
    }


def payment_body_sanitised():
    r = "[REDACTED]"
    body = payment_body()
    for section in ("card", "payer"):
        body[section] = {k: (r if k in PAYMENT_SECRETS else v) for k, v in body[section].items()}
    body["card"].update(number=r, PIN=r)
    body["auth"] = [{k: (r if k in PAYMENT_SECRETS else v) for k, v in d.items()}
                    for d in body["auth"]]
    body["notes"] = [r, "call +1 555 123 4567", "refund of 2024-01-15", {"memo": r}]
    body["amounts"] = [r, 12, 25.5]
    return body


def payment_secret_values():
    return list(PAYMENT_SECRETS.values()) + list(CARDS) + list(CARDS.values())


def pay(s, rid, content_type, query="", request_id=None):
    headers = {"user-agent": "e2e/1.0 (card 3566 0020 2036 0505)",
               "x-request-id": request_id or rid}
    if content_type is not None:
        headers["content-type"] = content_type
    return s.request("POST", f"/api/v1/payments/refund/5105.1051.0510.5100?n={rid}{query}",
                     headers=headers, body=json.dumps(payment_body()))


def stored_records(collector, n):
    """The records in the files, and each one's line as stored in SQLite, by path."""
    recs = wait_records(collector, n)
    assert len(recs) == n, recs
    rows = collector.db_rows()
    assert len(rows) == n and {r["id"] for r in rows} == {r["id"] for r in recs}
    for row in rows:
        line = json.loads(row["line"])
        assert line == next(r for r in recs if r["id"] == row["id"])
        assert row["path"] == line["path"] and row["request_id"] == line["request_id"]
    return recs


def test_payment_and_identity_secrets_of_every_kind_never_reach_the_collector(stack_factory,
                                                                             collector):
    # A CVC, PIN, OTP, IBAN, tax id, passphrase or private key under any spelling of its key, and
    # card numbers with any separators, in the body, the path, the query, the user agent and the
    # request id: none of them is stored, in the files or the database, or logged.
    s = audit_stack(stack_factory, collector)
    query = ("&cardCvc=cvcq-e2e-d1&otp-code=otpq-e2e-d2&card=4000.0566.5566.5556"
             "&shipping=express&PIN=pinq-e2e-d3")
    assert pay(s, "json", "application/json", query).status == 200
    assert pay(s, "rid", "application/json", request_id="6011-0009-9013-9424").status == 200
    assert s.upstream_requests()[0]["body_sha256"] == \
        hashlib.sha256(json.dumps(payment_body()).encode()).hexdigest()
    recs = stored_records(collector, 2)
    by_n = {r["path"].split("?n=")[1].split("&")[0]: r for r in recs}
    rec = by_n["json"]
    assert rec["type"] == "payment_refund" and rec["status"] == 200
    assert rec["request_body"] == payment_body_sanitised()
    assert rec["metadata"] == {}
    assert rec["path"] == ("/api/v1/payments/refund/[REDACTED]?n=json&cardCvc=[REDACTED]"
                           "&otp-code=[REDACTED]&card=[REDACTED]&shipping=express&PIN=[REDACTED]")
    assert rec["user_agent"] == "e2e/1.0 (card [REDACTED])"
    assert rec["request_id"] == "json"
    assert by_n["rid"]["request_id"] == "[REDACTED]"
    assert_no_secrets(collector, s, payment_secret_values() + ["cvcq-e2e-d1", "otpq-e2e-d2",
                                                               "pinq-e2e-d3"])
    assert collector.run("verify").returncode == 0


def test_a_json_body_without_content_type_or_as_text_plain_is_recorded_sanitised(stack_factory,
                                                                                 collector):
    # FastAPI parses a body without a Content-Type as JSON: the record must hold it, sanitised,
    # not null. text/plain (no CORS preflight) is sniffed the same way. Plain text and forms
    # are not recorded.
    s = audit_stack(stack_factory, collector)
    assert pay(s, "none", None).status == 200
    assert pay(s, "empty", "").status == 200
    assert pay(s, "text", "text/plain;charset=UTF-8").status == 200
    # The upstream got the body unchanged, without a content type.
    up = s.upstream_requests()[0]
    assert up["body_sha256"] == hashlib.sha256(json.dumps(payment_body()).encode()).hexdigest()
    assert "content-type" not in {k.lower() for k in up["headers"]}
    for rid, ct, body in (("plain", "text/plain", "cvc=plain-e2e-e1"),
                          ("form", "application/x-www-form-urlencoded", "cvc=form-e2e-e2")):
        assert s.request("POST", f"/api/v1/payments/refund?n={rid}",
                         headers={"content-type": ct, "x-request-id": rid},
                         body=body).status == 200
    recs = {r["request_id"]: r for r in stored_records(collector, 5)}
    for rid in ("none", "empty", "text"):
        assert recs[rid]["request_body"] == payment_body_sanitised(), rid
        assert recs[rid]["metadata"] == {}, rid
    assert recs["plain"]["request_body"] is None
    assert recs["plain"]["metadata"] == {"request_body_omitted": "not_json"}
    assert recs["form"]["request_body"] is None and recs["form"]["metadata"] == {}
    assert_no_secrets(collector, s, payment_secret_values() + ["plain-e2e-e1", "form-e2e-e2"])


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
    assert len(without_marker(s, collector)) == 1
    assert len(collector.db_rows()) == 1 + 1  # and the marker's
    s.wait_stat("wasmcustom.aura_guard.audit.records_shipped", 1 + 1)
    stats = s.stats("wasmcustom.aura_guard.audit")
    assert stats.get("wasmcustom.aura_guard.audit.enqueued") == 1 + 1, stats
    assert stats.get("wasmcustom.aura_guard.audit.dropped", 0) == 0, stats
    assert collector.run("verify").returncode == 0
    assert collector.run("verify", "--files", collector.log_dir).returncode == 0
    assert_no_secrets(collector, s)


def test_records_survive_a_collector_outage_of_60_s_exactly_once(stack_factory, collector):
    s = audit_stack(stack_factory, collector)
    collector.stop()
    sent = 0
    t_end = time.time() + 60
    while time.time() < t_end:
        t0 = time.time()
        r = refund(s, sent)
        # Shipping never delays the request it records.
        assert r.status == 200 and time.time() - t0 < 1.0, r
        sent += 1
        time.sleep(0.25)
    assert collector.lines() == []
    stats = s.stats("wasmcustom.aura_guard.audit")
    assert stats.get("wasmcustom.aura_guard.audit.batches_failed", 0) >= 5, stats
    collector.start()
    # Steady traffic goes on while the backlog drains.
    for _ in range(8):
        assert refund(s, sent).status == 200
        sent += 1
        time.sleep(0.25)
    recs = wait_records(collector, sent, timeout=30)
    ids = [r["id"] for r in recs]
    assert len(ids) == sent and len(set(ids)) == sent, (len(ids), len(set(ids)), sent)
    assert sorted(r["request_id"] for r in recs) == sorted(f"refund-{i}" for i in range(sent))
    assert [r["seq"] for r in recs] == list(range(1, sent + 1))
    assert len(collector.db_rows()) == sent
    s.wait_stat("wasmcustom.aura_guard.audit.records_shipped", sent)
    stats = s.stats("wasmcustom.aura_guard.audit")
    assert stats.get("wasmcustom.aura_guard.audit.dropped", 0) == 0, stats
    v = collector.run("verify")
    assert v.returncode == 0, v.stdout + v.stderr
    assert_no_secrets(collector, s)


def test_overflow_drops_are_counted_and_the_gap_is_visible_to_verify(stack_factory, collector):
    cfg = dict(FAST, max_buffer_records=5, batch_size=5)
    s = audit_stack(stack_factory, collector, audit_config=cfg)
    collector.stop()
    for i in range(20):
        assert refund(s, i).status == 200
    wait_until(lambda: s.stats("wasmcustom.aura_guard.audit").get(
        "wasmcustom.aura_guard.audit.dropped", 0) >= 15, 5, "drops counted")
    assert s.stats("wasmcustom.aura_guard.audit")["wasmcustom.aura_guard.audit.dropped"] == 15
    collector.start()
    recs = wait_records(collector, 1, timeout=15, kind="gap")
    gaps = [r for r in recs if r["kind"] == "gap"]
    assert len(gaps) == 1, recs
    assert gaps[0]["type"] == "records_dropped" and gaps[0]["severity"] == "high"
    assert gaps[0]["metadata"] == {"dropped": 15, "reason": "queue_full"}
    ops = [r for r in recs if r["kind"] == "operation"]
    assert [r["request_id"] for r in ops] == [f"refund-{i}" for i in range(5)]
    # Dropped records consumed no seq: the chain itself is whole; the gap states the loss.
    assert [r["seq"] for r in recs] == list(range(1, len(recs) + 1))
    for args in (("verify",), ("verify", "--files", collector.log_dir)):
        v = collector.run(*args)
        assert v.returncode == 1, v.stdout + v.stderr
        assert "GAP stream=" in v.stdout and "dropped 15 records (reason: queue_full)" in v.stdout
    assert_no_secrets(collector, s)


def test_a_record_removed_from_a_file_is_detected(stack_factory, collector):
    s = audit_stack(stack_factory, collector)
    for i in range(3):
        assert refund(s, i).status == 200
    wait_records(collector, 3)
    assert collector.run("verify", "--files", collector.log_dir).returncode == 0
    [name] = [n for n in os.listdir(collector.log_dir) if n.endswith(".jsonl")]
    path = os.path.join(collector.log_dir, name)
    with open(path) as f:
        lines = f.readlines()
    with open(path, "w") as f:
        f.writelines([lines[0], lines[2]])
    v = collector.run("verify", "--files", collector.log_dir)
    assert v.returncode == 1, v.stdout + v.stderr
    assert "MISSING stream=" in v.stdout and "seq=2..2" in v.stdout, v.stdout


def test_security_event_and_blocked_request_flow_through_the_same_path(stack_factory,
                                                                      collector):
    # A body over max_body_bytes on an audited operation is refused by the filter (413): the
    # operation record says blocked with the status the client got.
    s = audit_stack(stack_factory, collector, plugin_config={"max_body_bytes": 64})
    r = s.request("POST", "/api/v1/payments/refund", headers={"content-type": "application/json"},
                  body=json.dumps({"password": SECRETS[1], "pad": "x" * 100}))
    assert r.status == 413, r
    [rec] = wait_records(collector, 1)
    assert rec["type"] == "payment_refund" and rec["outcome"] == "blocked"
    assert rec["status"] == 413 and rec["request_body"] is None
    assert_no_secrets(collector, s)


def test_audit_is_off_in_development_unless_enabled(stack_factory, collector):
    s = audit_stack(stack_factory, collector, env={"ENVIRONMENT": "development"})
    assert refund(s).status == 200
    # No marker can be recorded here; the positive signal is the shipper's own clock: two
    # flush intervals of ticks (FAST) after the request, anything enqueued would be shipped.
    shipper_ticks(s, 2 * FAST["flush_interval_ms"] // FAST["tick_ms"] + 1)
    stats = s.stats("wasmcustom.aura_guard.audit")
    assert stats.get("wasmcustom.aura_guard.audit.enqueued", 0) == 0, stats
    assert stats.get("wasmcustom.aura_guard.audit.records_shipped", 0) == 0, stats
    assert collector.lines() == []
    s2 = audit_stack(stack_factory, collector,
                     env={"ENVIRONMENT": "development", "AUDIT_LOG_ENABLED": "true"})
    assert refund(s2).status == 200
    wait_records(collector, 1)


def test_postgresql_store_end_to_end(stack_factory, log_dir):
    import tempfile
    pg_dir = tempfile.mkdtemp(prefix="aura-pg-")
    os.chmod(pg_dir, 0o755)
    script = os.path.join(ROOT, "scripts/pg-temp.sh")
    url = subprocess.run(["bash", script, "start", pg_dir], capture_output=True, text=True,
                         check=True, timeout=120).stdout.strip().splitlines()[-1]
    c = None
    try:
        c = Collector(os.path.join(log_dir, "collector-pg"), database_url=url).start()
        s = audit_stack(stack_factory, c)
        for i in range(3):
            assert refund(s, i).status == 200
        wait_records(c, 3)

        def rows():
            q = c.run("query", "--type", "payment_refund", "--limit", "0")
            assert q.returncode == 0, q.stderr
            return [json.loads(line) for line in q.stdout.splitlines() if line.strip()]
        wait_until(lambda: len(rows()) == 3, 10, "3 rows in PostgreSQL")
        got = rows()
        assert sorted(r["request_id"] for r in got) == ["refund-0", "refund-1", "refund-2"]
        assert all(r["request_body"]["card_token"] == "[REDACTED]" for r in got)
        v = c.run("verify")
        assert v.returncode == 0, v.stdout + v.stderr
        dump = json.dumps(got)
        for secret in SECRETS:
            assert secret not in dump
        for secret in SECRETS + [TEST_COLLECTOR_TOKEN]:
            assert secret not in s.envoy_log()
    finally:
        if c is not None:
            c.stop()
        subprocess.run(["bash", script, "stop", pg_dir], capture_output=True, timeout=60)
        subprocess.run(["rm", "-rf", pg_dir])


def start_envoy_expecting_failure(log_dir, name, env, **kw):
    from harness import Stack, clean_env, envoy_bin
    s = Stack(os.path.join(log_dir, name), **kw)
    cfg = s.render(os.path.join(s.log_dir, "envoy.yaml"))
    p = subprocess.Popen([envoy_bin(), "-c", cfg, "--disable-hot-restart",
                          "--base-id", str(os.getpid() % 10000 + 200)],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=clean_env(env))
    try:
        out, _ = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        raise AssertionError("envoy started with a bad audit configuration:\n" + out[-3000:])
    assert p.returncode != 0
    return out


@pytest.mark.parametrize("audit_config,token,message", [
    ({"batch_size": 0}, TEST_COLLECTOR_TOKEN, "audit_shipper.batch_size: must be greater than 0"),
    ({"max_buffer": 5}, TEST_COLLECTOR_TOKEN, "audit_shipper.max_buffer: unknown field"),
    ({}, "short-tok", "AUDIT_COLLECTOR_TOKEN: must be at least 16 characters"),
])
def test_bad_shipper_configuration_stops_envoy_naming_the_field(log_dir, audit_config, token,
                                                                message):
    # Development: the filter itself configures, so the shipper's error is the one that stops.
    out = start_envoy_expecting_failure(log_dir, "bad", {"AUDIT_COLLECTOR_TOKEN": token,
                                                         "ENVIRONMENT": "development"},
                                        audit_config=audit_config)
    assert message in out, out[-3000:]
    assert token not in out


def test_without_a_token_records_are_dropped_and_counted_not_blocking(stack_factory, collector):
    s = stack_factory(env={"ENVIRONMENT": "production"}, collector_port=collector.port,
                      audit_config=FAST)
    assert refund(s).status == 200
    wait_until(lambda: s.stats("wasmcustom.aura_guard.audit").get(
        "wasmcustom.aura_guard.audit.dropped", 0) == 1, 5, "drop counted")
    assert "AUDIT_COLLECTOR_TOKEN is not set" in s.envoy_log()
    assert collector.lines() == []


def hs256(sub, secret):
    import base64
    import hmac

    def b64(b):
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    head = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps({"sub": sub}).encode())
    sig = hmac.new(secret.encode(), head.encode(), hashlib.sha256).digest()
    return head + "." + b64(sig)


def test_debug_endpoint_block_and_verified_user_are_recorded(stack_factory, collector):
    jwt_secret = "e2e-jwt-signing-secret-0123456789"
    s = audit_stack(stack_factory, collector, env={"JWT_SECRET_KEY": jwt_secret})
    # A security event from another capability: the debug stage blocks in production.
    r = s.request("GET", "/debug/token?token=" + SECRETS[0], headers={"x-request-id": "dbg-1"})
    assert r.status == 404, r
    # A refund with a valid bearer JWT: user_id is its verified sub; a forged one gives null.
    good, bad = hs256("user-42", jwt_secret), hs256("admin", "not-the-secret")
    for rid, token in (("jwt-good", good), ("jwt-bad", bad)):
        assert s.request("POST", "/api/v1/payments/refund",
                         headers={"content-type": "application/json", "x-request-id": rid,
                                  "authorization": "Bearer " + token},
                         body='{"amount": 1}').status == 200
    recs = wait_records(collector, 3)
    by_rid = {r["request_id"]: r for r in recs}
    ev = by_rid["dbg-1"]
    assert ev["kind"] == "security_event" and ev["type"] == "debug_endpoint_blocked"
    assert ev["severity"] == "medium" and ev["outcome"] == "blocked" and ev["status"] == 404
    assert ev["path"] == "/debug/token?token=[REDACTED]"
    assert ev["description"] and ev["metadata"]["endpoint"] == "token"
    assert by_rid["jwt-good"]["user_id"] == "user-42"
    assert by_rid["jwt-bad"]["user_id"] is None
    for secret in (jwt_secret, good, bad):
        assert secret not in collector.files_text() and secret not in s.envoy_log()
    assert_no_secrets(collector, s)
