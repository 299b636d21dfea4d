"""Webhook signature verification through real Envoy. Deliveries are signed with
scripts/sign-webhook (an independent implementation of every scheme) and the demo upstream
records what reaches it, so each test proves both the answer and what the application saw."""
import base64
import hashlib
import json
import socket
import threading
import time
import uuid

import pytest

from harness import event_lines
from test_sign_webhook import sw

SOURCES = ["square", "toast", "clover", "stripe", "twilio", "github", "shopify", "slack",
           "standard"]
STANDARD_SECRET = "whsec_" + base64.b64encode(b"aura-guard-standard-test-key-32b").decode()
SECRETS = {s: f"{s}-current-secret" for s in SOURCES}
SECRETS["standard"] = STANDARD_SECRET
PREVIOUS = {s: f"{s}-previous-secret" for s in SOURCES}
PREVIOUS["standard"] = "whsec_" + base64.b64encode(b"aura-guard-previous-test-key-32b").decode()
PUBLIC_URL = {"square": "https://api.example.com/webhooks/square",
              "twilio": "https://api.example.com/webhooks/twilio"}


def env_for(sources=SOURCES, environment="production", previous=False):
    env = {"ENVIRONMENT": environment}
    for s in sources:
        env[f"WEBHOOK_SECRET_{s.upper()}"] = SECRETS[s]
        if previous:
            env[f"WEBHOOK_SECRET_{s.upper()}_PREVIOUS"] = PREVIOUS[s]
        if s in PUBLIC_URL:
            env[f"WEBHOOK_URL_{s.upper()}"] = PUBLIC_URL[s]
    return env


PROD = env_for()


def body_for(source, size=None):
    """A fresh body in the source's own shape (Toast signs its envelope timestamp; Twilio
    posts a form)."""
    nonce = uuid.uuid4().hex
    if source == "twilio":
        return f"AccountSid=AC{nonce}&Body=Hello+%F0%9F%91%8B&From=%2B15551234567".encode()
    if source == "toast":
        return json.dumps({"timestamp": "2026-11-29T03:50:00.000Z", "guid": nonce,
                           "eventType": "orders_updated"}).encode()
    if size is not None:
        return b"a" * size
    return json.dumps({"id": f"evt_{nonce}", "type": "test.event", "amount": 1299}).encode()


def signed(stack, source, body, secret=None, scheme=None, now=None, path=None, url=None):
    """(path, headers) for a delivery to `stack`, signed like the provider would."""
    now = int(time.time()) if now is None else now
    target, headers = sw.prepare(
        source, scheme, secret or SECRETS[source], body, now,
        url=url or PUBLIC_URL.get(source),
        send=f"http://127.0.0.1:{stack.listen_port}{path or '/webhooks/' + source}")
    return target.split(str(stack.listen_port), 1)[1], dict(headers)


def deliver(stack, source, body, **kw):
    extra = kw.pop("headers", {})
    path, headers = signed(stack, source, body, **kw)
    headers.update(extra)
    return stack.request("POST", path, headers=headers, body=body)


def assert_counters(stack, want):
    """The filter's counters `wasmcustom.aura_guard.<name>` named in `want` have these values."""
    stats = stack.stats()
    assert {k: stats.get(f"wasmcustom.aura_guard.{k}") for k in want} == want, stats


def sha(body):
    return hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize("source", SOURCES)
def test_valid_delivery_reaches_the_upstream_exactly_and_invalid_never(stack_factory, source):
    s = stack_factory(env=PROD)
    body = body_for(source)
    r = deliver(s, source, body)
    assert r.status == 200, r
    seen = s.upstream_requests()
    assert len(seen) == 1
    assert seen[0]["body_sha256"] == sha(body)
    assert seen[0]["body_len"] == len(body)

    # Same signature headers over a tampered body.
    path, headers = signed(s, source, body)
    tampered = body.replace(b"1299", b"9999") if source not in ("twilio", "toast") else \
        body.replace(b"Hello", b"Hellp").replace(b"orders_updated", b"orders_deleted")
    assert tampered != body
    r = s.request("POST", path, headers=headers, body=tampered)
    assert r.status == 401, r
    assert r.json() == {"detail": "Invalid webhook signature"}
    assert r.header("x-request-id")
    assert r.header("strict-transport-security")
    assert len(s.upstream_requests()) == 1, "the invalid delivery reached the upstream"

    stats = s.stats()
    assert stats.get(f"wasmcustom.aura_guard.webhook.{source}.verified") == 1, stats
    assert stats.get(f"wasmcustom.aura_guard.webhook.{source}.invalid_signature") == 1, stats
    assert stats.get("wasmcustom.aura_guard.events.webhook_validation_failure") == 1, stats
    log = s.envoy_log()
    assert f"Webhook validation failed for {source}: Invalid webhook signature" in log
    # The security event carries the request headers (as the original's metadata did), with
    # every credential header's value replaced: the signature never reaches the log, while
    # non-secret headers such as a delivery id or the content type may.
    credentials = {name: value for name, value in headers.items()
                   if any(m in name.lower() for m in ("signature", "hmac", "token", "auth"))}
    assert credentials, f"no signature header found for {source}: {sorted(headers)}"
    event = event_lines(s)[0]
    for name, value in credentials.items():
        assert value not in log, f"{name} leaked into the log"
        assert event["metadata"]["headers"][name.lower()] == "[REDACTED]", event


def test_missing_signature_and_wrong_secret(stack_factory):
    s = stack_factory(env=PROD)
    body = body_for("github")
    r = s.request("POST", "/webhooks/github", headers={"content-type": "application/json"},
                  body=body)
    assert (r.status, r.json()) == (401, {"detail": "Missing webhook signature"})
    r = deliver(s, "github", body, secret="not-the-secret")
    assert (r.status, r.json()) == (401, {"detail": "Invalid webhook signature"})
    assert s.upstream_requests() == []
    assert_counters(s, {
        "webhook.github.missing_signature": 1,
        "events.webhook_validation_failure": 2,
    })


def test_refused_delivery_logs_one_json_event_with_the_request_id_and_no_secret(stack_factory):
    s = stack_factory(env=PROD)
    body = json.dumps({"user": "a", "password": "e2e-body-password-secret"}).encode()
    path, headers = signed(s, "github", body, secret="not-the-secret",
                           path="/webhooks/github?token=e2e-query-token-secret")
    signature = headers["X-Hub-Signature-256"]
    headers["authorization"] = "Bearer e2e-header-token-secret"
    r = s.request("POST", path, headers=headers, body=body)
    assert (r.status, r.json()) == (401, {"detail": "Invalid webhook signature"})
    rid = r.header("x-request-id")
    assert rid
    events = event_lines(s)
    assert len(events) == 1, events
    ev = events[0]
    assert ev["request_id"] == rid
    assert (ev["event_type"], ev["severity"]) == ("webhook_validation_failure", "medium")
    assert ev["client_ip"] == "127.0.0.1" and ev["route"] == "/webhooks/github"
    assert ev["metadata"]["reason"] == "invalid_signature"
    assert ev["metadata"]["headers"]["authorization"] == "[REDACTED]"
    log = s.envoy_log()
    for secret in ("e2e-body-password-secret", "e2e-query-token-secret",
                   "e2e-header-token-secret", signature.split("=", 1)[1], SECRETS["github"]):
        assert secret not in log
    # The old free-text line is gone.
    assert "aura-guard security event" not in log


def test_every_spelling_of_the_route_is_verified(stack_factory):
    s = stack_factory(env=PROD)
    body = body_for("stripe")
    for path in ["/webhooks/stripe/", "/Webhooks/Stripe", "/webhooks//stripe",
                 "/webhooks/%73tripe", "/webhooks/stripe?x=1"]:
        r = s.request("POST", path, headers={"content-type": "application/json"}, body=body)
        assert r.status in (400, 401), (path, r)
    assert s.upstream_requests() == []


def test_one_mebibyte_standard_webhooks_body_passes(stack_factory):
    s = stack_factory(env=PROD)
    body = body_for("standard", size=1048576)
    r = deliver(s, "standard", body)
    assert r.status == 200, r
    seen = s.upstream_requests()
    assert [x["body_sha256"] for x in seen] == [sha(body)]


def test_body_over_the_limit_gets_413(stack_factory):
    s = stack_factory(env=PROD)
    # One byte over the default 1 MiB: refused on the declared length, before buffering.
    body = body_for("standard", size=1048577)
    r = deliver(s, "standard", body)
    assert r.status == 413, r
    assert r.json() == {"detail": "Webhook body too large"}
    # Chunked, no declared length: refused while streaming.
    path, headers = signed(s, "standard", body)
    r = chunked_request(s.listen_port, path, headers, body)
    assert r[0] == 413, r
    assert s.upstream_requests() == []
    stats = s.stats()
    assert stats.get("wasmcustom.aura_guard.webhook.standard.body_too_large") == 2, stats


def test_configured_webhook_limit_applies_to_webhook_routes_only(stack_factory):
    s = stack_factory(env=PROD, plugin_config={"webhook": {"max_body_bytes": 1024}})
    ok = body_for("github", size=1024)
    assert deliver(s, "github", ok).status == 200
    big = body_for("github", size=1025)
    r = deliver(s, "github", big)
    assert (r.status, r.json()) == (413, {"detail": "Webhook body too large"})
    # Not a webhook route: not held, so no body limit from the filter.
    assert s.request("POST", "/api/v2/upload", body=b"x" * 4096).status == 200
    assert len(s.upstream_requests()) == 2


def head_only(port, path, headers, declared, timeout):
    """Sends only a request head declaring `declared` body bytes and waits for an answer without
    sending any of the body. Returns (status, JSON body), or None when nothing came back within
    `timeout` seconds."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
        c.sendall(request_head(path, headers, declared))
        return read_response(c)


def request_head(path, headers, declared):
    head = f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {declared}\r\n"
    return (head + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()


def read_raw_response(c):
    """(status, body) of the HTTP/1.1 response on `c`; None when the connection closed before
    one, or on the socket's timeout."""
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            more = c.recv(65536)
            if not more:
                return None
            data += more
        head, _, rest = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        while len(rest) < length:
            more = c.recv(65536)
            if not more:
                break
            rest += more
    except socket.timeout:
        return None
    return int(head.split(b" ")[1]), rest


def read_response(c):
    """read_raw_response with the body parsed as JSON when it is (Envoy's own answers, e.g.
    its 408, are plain text)."""
    got = read_raw_response(c)
    if got is None:
        return None
    try:
        return got[0], json.loads(got[1])
    except ValueError:
        return got


def test_what_the_headers_refuse_is_answered_before_the_body_is_sent(stack_factory):
    """A delivery its headers already refuse (no signature, a malformed one, a stale timestamp,
    an unconfigured source) is answered while the client still holds back its declared 1 MiB:
    the filter never waits for, or buffers, a body that cannot change the answer. Before this,
    Envoy held such a request until the whole body had arrived (here: never)."""
    s = stack_factory(env=env_for(sources=["github", "stripe"]))
    stale = int(time.time()) - 3600
    cases = [
        ("/webhooks/github", {}, "Missing webhook signature", "github.missing_signature"),
        ("/webhooks/stripe", {"Stripe-Signature": "garbage"}, "Invalid webhook signature",
         "stripe.invalid_signature"),
        ("/webhooks/stripe", {"Stripe-Signature": f"t={stale},v1={'0' * 64}"},
         "Webhook timestamp too old", "stripe.timestamp_too_old"),
        ("/webhooks/toast", {"Toast-Signature": "abc="}, "Webhook source not configured",
         "toast.source_not_configured"),
    ]
    for path, headers, detail, _ in cases:
        headers = {"content-type": "application/json", **headers}
        # Generous: on a busy machine an answer takes milliseconds; a request held for its
        # body gets none at all.
        got = head_only(s.listen_port, path, headers, declared=1048576, timeout=30)
        assert got == (401, {"detail": detail}), (path, headers)
    assert s.upstream_requests() == []
    want = {f"webhook.{c[3]}": 1 for c in cases}
    want["events.webhook_validation_failure"] = len(cases)
    assert_counters(s, want)


def test_a_delivery_only_its_body_can_decide_is_held_until_the_body(stack_factory):
    """The control: a well-formed signature header is not refused early; the request waits for
    its body and is then verified."""
    s = stack_factory(env=PROD)
    body = body_for("github", size=1048576)
    path, headers = signed(s, "github", body)
    with socket.create_connection(("127.0.0.1", s.listen_port), timeout=2) as c:
        c.sendall(request_head(path, headers, len(body)))
        assert read_response(c) is None  # nothing before the body: it decides
        c.settimeout(30)
        c.sendall(body)
        assert read_response(c)[0] == 200
    assert [x["body_sha256"] for x in s.upstream_requests()] == [sha(body)]


def chunked_request(port, path, headers, body, chunk=65536):
    """HTTP/1.1 with Transfer-Encoding: chunked (no Content-Length). Returns (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as c:
        head = f"POST {path} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        c.sendall(head.encode())
        try:
            for i in range(0, len(body), chunk):
                part = body[i:i + chunk]
                c.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            c.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered early
        return read_raw_response(c)


def h2_request(port, path, headers, body, trailers=None, chunk=16384):
    """HTTP/2 over cleartext with prior knowledge; the body is followed by trailers.
    Returns (status, body)."""
    import h2.config
    import h2.connection
    import h2.events

    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    sid = conn.get_next_available_stream_id()
    hdrs = [(":method", "POST"), (":path", path), (":scheme", "http"),
            (":authority", "localhost")] + [(k.lower(), v) for k, v in headers.items()]
    conn.send_headers(sid, hdrs, end_stream=False)
    sock.sendall(conn.data_to_send())
    status, answer, done, offset = None, b"", False, 0

    def pump():
        nonlocal status, answer, done
        data = sock.recv(65536)
        if not data:
            done = True
            return
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                status = int(dict(ev.headers)[b":status"])
            elif isinstance(ev, h2.events.DataReceived):
                answer += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                done = True
        sock.sendall(conn.data_to_send())

    while offset < len(body) and not done:
        window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size, chunk)
        if window <= 0:
            pump()
            continue
        conn.send_data(sid, body[offset:offset + window])
        offset += window
        sock.sendall(conn.data_to_send())
    if not done:
        conn.send_headers(sid, trailers or [("x-trailer", "end")], end_stream=True)
        sock.sendall(conn.data_to_send())
    while not done:
        pump()
    sock.close()
    return status, answer


@pytest.mark.parametrize("source", ["standard", "twilio"])
def test_http2_with_trailers_is_verified_and_reaches_the_upstream_exactly(stack_factory,
                                                                         source):
    s = stack_factory(env=PROD)
    body = body_for(source) if source == "twilio" else body_for(source, size=200_000)
    path, headers = signed(s, source, body)
    status, answer = h2_request(s.listen_port, path, headers, body)
    assert status == 200, answer
    assert json.loads(answer)["upstream"] == "demo"
    assert [x["body_sha256"] for x in s.upstream_requests()] == [sha(body)]
    # A forged one over HTTP/2 never reaches it.
    path, headers = signed(s, source, body, secret="forged")
    status, answer = h2_request(s.listen_port, path, headers, body)
    assert status == 401
    assert json.loads(answer) == {"detail": "Invalid webhook signature"}
    assert len(s.upstream_requests()) == 1


def test_replay_is_refused_with_its_own_message(stack_factory):
    s = stack_factory(env=PROD)
    body = body_for("stripe")
    path, headers = signed(s, "stripe", body)
    assert s.request("POST", path, headers=headers, body=body).status == 200
    r = s.request("POST", path, headers=headers, body=body)
    assert (r.status, r.json()) == (401, {"detail": "Webhook delivery already processed"})
    # GitHub: a changed (unsigned) X-GitHub-Delivery does not make a replay new.
    gbody = body_for("github")
    gpath, gheaders = signed(s, "github", gbody)
    assert s.request("POST", gpath, headers={**gheaders, "X-GitHub-Delivery": "a"},
                     body=gbody).status == 200
    r = s.request("POST", gpath, headers={**gheaders, "X-GitHub-Delivery": "b"}, body=gbody)
    assert r.status == 401
    assert [x["body_sha256"] for x in s.upstream_requests()] == [sha(body), sha(gbody)]
    assert_counters(s, {"webhook.stripe.replay": 1, "webhook.github.replay": 1})


def test_upstream_failure_releases_the_replay_key_so_the_retry_passes(stack_factory):
    s = stack_factory(env=PROD)
    body = body_for("shopify")
    path, headers = signed(s, "shopify", body)
    r = s.request("POST", path, headers={**headers, "X-Demo-Status": "503"}, body=body)
    assert r.status == 503
    assert s.request("POST", path, headers=headers, body=body).status == 200, "retry refused"
    r = s.request("POST", path, headers=headers, body=body)
    assert (r.status, r.json()) == (401, {"detail": "Webhook delivery already processed"})
    assert len(s.upstream_requests()) == 2
    stats = s.stats()
    assert stats.get("wasmcustom.aura_guard.webhook.shopify.replay_released") == 1, stats


def test_replay_set_is_shared_by_all_workers(stack_factory):
    s = stack_factory(env=PROD, concurrency=2)
    bodies = [body_for("standard") for _ in range(6)]
    prepared = [signed(s, "standard", b) for b in bodies]
    results = []
    lock = threading.Lock()

    def send(i):
        path, headers = prepared[i % len(prepared)]
        r = s.request("POST", path, headers={**headers, "connection": "close"},
                      body=bodies[i % len(bodies)])
        with lock:
            results.append((i % len(prepared), r.status))

    # Each delivery is sent 6 times at once, each copy on its own connection.
    threads = [threading.Thread(target=send, args=(i,)) for i in range(36)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(len(prepared)):
        statuses = sorted(st for j, st in results if j == k)
        assert statuses == [200, 401, 401, 401, 401, 401], (k, statuses)
    seen = sorted(x["body_sha256"] for x in s.upstream_requests())
    assert seen == sorted(sha(b) for b in bodies)
    # Both workers took connections, so the refusals crossed workers.
    r = s.request("GET", "/__nothing__")  # noqa: F841 (keeps stats fresh)
    per_worker = {k: v for k, v in s.stats(prefix="listener.").items()
                  if ".worker_" in k and k.endswith("downstream_cx_total")}
    assert len([v for v in per_worker.values() if v > 0]) == 2, per_worker


def test_previous_secret_is_accepted_and_an_unknown_one_refused(stack_factory):
    s = stack_factory(env=env_for(previous=True))
    for source in SOURCES:
        body = body_for(source)
        assert deliver(s, source, body, secret=PREVIOUS[source]).status == 200, source
        other = body_for(source)
        unknown = "whsec_" + base64.b64encode(b"x" * 32).decode() \
            if source == "standard" else "unknown-secret"
        r = deliver(s, source, other, secret=unknown)
        assert r.status == 401, source
    assert len(s.upstream_requests()) == len(SOURCES)


def test_square_and_twilio_sign_the_configured_public_url(stack_factory):
    s = stack_factory(env=PROD)
    for source in ("square", "twilio"):
        body = body_for(source)
        # Signed over the URL Envoy was reached at (what :authority would give): refused.
        local = f"http://localhost:{s.listen_port}/webhooks/{source}"
        assert deliver(s, source, body, url=local).status == 401, source
        assert deliver(s, source, body).status == 200, source
    # Twilio JSON bodies: bodySHA256 in the query, the signature over the URL alone.
    body = json.dumps({"CallSid": uuid.uuid4().hex}).encode()
    path, headers = signed(s, "twilio", body)
    assert "bodySHA256=" in path
    assert s.request("POST", path, headers=headers, body=body).status == 200
    r = s.request("POST", path, headers=headers, body=body + b" ")
    assert r.status == 401
    assert len(s.upstream_requests()) == 3


def test_development_lets_an_unconfigured_source_pass_with_a_warning(stack_factory):
    s = stack_factory(env=env_for(sources=["github"], environment="development"))
    body = body_for("toast")
    r = s.request("POST", "/webhooks/toast", headers={"content-type": "application/json"},
                  body=body)
    assert r.status == 200
    assert [x["body_sha256"] for x in s.upstream_requests()] == [sha(body)]
    assert "webhook source toast has no secret: delivery passed UNVERIFIED" in s.envoy_log()
    # A configured source is still verified in development.
    r = deliver(s, "github", body_for("github"), secret="wrong")
    assert r.status == 401
    assert len(s.upstream_requests()) == 1


def test_production_refuses_an_unconfigured_source(stack_factory):
    s = stack_factory(env=env_for(sources=["github"]))
    for source in ("toast", "square"):
        r = deliver(s, source, body_for(source), secret="anything",
                    url="https://api.example.com/x")
        assert (r.status, r.json()) == (401, {"detail": "Webhook source not configured"})
    assert s.upstream_requests() == []
    stats = s.stats()
    assert stats.get("wasmcustom.aura_guard.webhook.toast.source_not_configured") == 1, stats


def test_seed_generic_scheme_window_and_missing_timestamp(stack_factory):
    s = stack_factory(env=PROD)
    # Exactly 300 s old passes; 301 s either way is refused.
    too_old = 0
    r, refused = at_window_edge(s, -300)
    too_old += refused
    assert r.status == 200, r
    r, refused = at_window_edge(s, -301)
    too_old += refused + 1
    assert (r.status, r.json()) == (401, {"detail": "Webhook timestamp too old"})
    r, refused = at_window_edge(s, +301)
    too_old += refused + 1
    assert r.status == 401
    # Missing timestamp: refused by default.
    body = body_for("stripe")
    path, headers = signed(s, "stripe", body, scheme="generic")
    del headers["X-Webhook-Timestamp"]
    headers["X-Webhook-Signature"] = body_only_signature(SECRETS["stripe"], body)
    r = s.request("POST", path, headers=headers, body=body)
    assert (r.status, r.json()) == (401, {"detail": "Invalid webhook timestamp"})
    r = deliver(s, "stripe", body_for("stripe"), scheme="generic",
                headers={"X-Webhook-Timestamp": "yesterday"})
    assert (r.status, r.json()) == (401, {"detail": "Invalid webhook timestamp"})
    stats = s.stats()
    assert stats.get("wasmcustom.aura_guard.webhook.stripe.missing_timestamp") == 1, stats
    assert stats.get("wasmcustom.aura_guard.webhook.stripe.timestamp_too_old") == too_old, stats


def at_window_edge(stack, offset, tries=5):
    """A generic-scheme delivery signed `offset` s from the second Envoy will read, and how
    many discarded tries were refused as too old (the stat counts them too).

    The filter reads its clock in whole seconds (the same system clock as ours) somewhere
    between our send and the answer. Signed at `now + offset` from the second we read before
    sending, the edge case is exact only if that second has not ticked by the answer: a tick
    makes -300 s into -301 s (refused) and +301 s into +300 s (accepted). So each try starts
    early in a second, and a try whose second ticked is discarded and repeated; `tries` all
    ticking means the machine is too busy to tell, which fails rather than guesses."""
    refused = 0
    for _ in range(tries):
        # At most one second's wait: start in the first half of a second.
        while time.time() % 1 > 0.5:
            time.sleep(0.01)
        now = int(time.time())
        r = deliver(stack, "stripe", body_for("stripe"), scheme="generic", now=now + offset)
        if int(time.time()) == now:
            return r, refused
        refused += r.status == 401
    raise AssertionError(f"the clock ticked during each of {tries} deliveries at {offset:+} s")


def body_only_signature(secret, body):
    import hmac
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_missing_timestamp_accepted_with_require_timestamp_false(stack_factory):
    s = stack_factory(env=PROD, plugin_config={"webhook": {"require_timestamp": False}})
    body = body_for("stripe")
    headers = {"content-type": "application/json",
               "X-Webhook-Signature": body_only_signature(SECRETS["stripe"], body)}
    assert s.request("POST", "/webhooks/stripe", headers=headers, body=body).status == 200
    # Only the replay window stops an immediate copy.
    r = s.request("POST", "/webhooks/stripe", headers=headers, body=body)
    assert r.status == 401
    assert len(s.upstream_requests()) == 1


def test_sign_webhook_send_is_accepted_end_to_end(stack_factory):
    import subprocess
    import sys
    from test_sign_webhook import TOOL
    s = stack_factory(env=PROD)
    url = f"http://127.0.0.1:{s.listen_port}/webhooks/slack"
    out = subprocess.run([sys.executable, TOOL, "--source", "slack", "--secret",
                          SECRETS["slack"], "--body", '{"type":"event_callback"}',
                          "--send", url], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out
    assert out.stdout.startswith("HTTP 200")
    out = subprocess.run([sys.executable, TOOL, "--source", "slack", "--secret", "wrong",
                          "--body", '{"type":"event_callback"}', "--send", url],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert "Invalid webhook signature" in out.stdout
    assert len(s.upstream_requests()) == 1


# --- Guarantees: one signed delivery is accepted once per source, whatever carries it -------
REPLAYED = {"detail": "Webhook delivery already processed"}


def t_and_v1(headers, name):
    """(t, v1 hex) of a Stripe-Signature / Clover-Signature header."""
    items = dict(p.split("=", 1) for p in headers[name].split(","))
    return items["t"], items["v1"]


def test_a_signed_delivery_resent_under_another_scheme_is_a_replay(stack_factory):
    """Stripe and Clover sign `{t}.{body}` with the same hex HMAC-SHA256 as the original's
    generic scheme, which both sources also accept: the captured MAC moved into the other
    header set must not pass a second time, in either direction."""
    s = stack_factory(env=PROD)
    accepted = []
    for source, header in (("stripe", "Stripe-Signature"), ("clover", "Clover-Signature")):
        # Provider headers first, then the same MAC in the generic headers.
        body = body_for(source)
        path, headers = signed(s, source, body)
        assert s.request("POST", path, headers=headers, body=body).status == 200
        accepted.append(sha(body))
        t, mac = t_and_v1(headers, header)
        generic = {"content-type": "application/json", "X-Webhook-Timestamp": t,
                   "X-Webhook-Signature": mac}
        r = s.request("POST", path, headers=generic, body=body)
        assert (r.status, r.json()) == (401, REPLAYED), source
        # Generic first, then the same MAC in the provider's header.
        body = body_for(source)
        path, headers = signed(s, source, body, scheme="generic")
        assert s.request("POST", path, headers=headers, body=body).status == 200
        accepted.append(sha(body))
        wrapped = {"content-type": "application/json",
                   header: f"t={headers['X-Webhook-Timestamp']},"
                           f"v1={headers['X-Webhook-Signature']}"}
        r = s.request("POST", path, headers=wrapped, body=body)
        assert (r.status, r.json()) == (401, REPLAYED), source
    assert [x["body_sha256"] for x in s.upstream_requests()] == accepted
    assert_counters(s, {"webhook.stripe.replay": 2, "webhook.clover.replay": 2})


def twilio_variants(body):
    """The same signed parameters, reordered, re-encoded, repeated, or with a name/value
    boundary moved (Twilio's signed string has no separators)."""
    params = dict(p.split("=", 1) for p in body.decode().split("&"))
    sid = params["AccountSid"]
    return [
        f"From=%2B15551234567&Body=Hello+%F0%9F%91%8B&AccountSid={sid}",
        f"AccountSid={sid}&Body=Hello%20%f0%9f%91%8b&From=%2b15551234567",
        f"%41ccountSid={sid}&Body=%48ello+%F0%9F%91%8B&From=%2B15551234567",
        f"AccountSid={sid}&AccountSid={sid}&Body=Hello+%F0%9F%91%8B&From=%2B15551234567",
        f"AccountSidA={sid[1:]}&Body=Hello+%F0%9F%91%8B&From=%2B15551234567&",
    ]


def test_twilio_params_reordered_or_reencoded_are_a_replay_and_take_no_room(stack_factory):
    """Twilio signs the decoded, sorted parameters, not the raw body: every re-encoding of a
    captured delivery is the same delivery. With room for two keys, a flood of variants
    neither passes nor pushes out another source's key."""
    s = stack_factory(env=PROD, plugin_config={"webhook": {"replay": {"max_entries": 2}}})
    other = body_for("stripe")
    opath, oheaders = signed(s, "stripe", other)
    assert s.request("POST", opath, headers=oheaders, body=other).status == 200
    body = body_for("twilio")
    assert body.startswith(b"AccountSid=AC")
    path, headers = signed(s, "twilio", body)
    assert s.request("POST", path, headers=headers, body=body).status == 200
    for variant in twilio_variants(body):
        r = s.request("POST", path, headers=headers, body=variant.encode())
        assert (r.status, r.json()) == (401, REPLAYED), variant
    # The stripe key is still there: its replay is refused, not let through.
    r = s.request("POST", opath, headers=oheaders, body=other)
    assert (r.status, r.json()) == (401, REPLAYED)
    assert [x["body_sha256"] for x in s.upstream_requests()] == [sha(other), sha(body)]
    stats = s.stats()
    assert stats.get("wasmcustom.aura_guard.webhook.twilio.replay") == 5, stats
    assert not stats.get("wasmcustom.aura_guard.webhook.twilio.replay_store_full"), stats


def test_a_full_replay_store_refuses_new_deliveries_with_503_and_evicts_nothing(stack_factory):
    s = stack_factory(env=PROD, plugin_config={"webhook": {"replay": {"max_entries": 2}}})
    first, second, third = (body_for("github") for _ in range(3))
    prepared = {b: signed(s, "github", b) for b in (first, second, third)}
    for b in (first, second):
        path, headers = prepared[b]
        assert s.request("POST", path, headers=headers, body=b).status == 200
    path, headers = prepared[third]
    r = s.request("POST", path, headers=headers, body=third)
    assert (r.status, r.json()) == (503, {"detail": "Webhook replay check unavailable"})
    assert r.header("x-request-id")
    # Both recorded deliveries are still refused as replays: nothing was evicted.
    for b in (first, second):
        path, headers = prepared[b]
        r = s.request("POST", path, headers=headers, body=b)
        assert (r.status, r.json()) == (401, REPLAYED)
    assert [x["body_sha256"] for x in s.upstream_requests()] == [sha(first), sha(second)]
    assert_counters(s, {"webhook.github.replay_store_full": 1, "webhook.github.replay": 2})
    assert "webhook replay store full" in s.envoy_log()


@pytest.mark.parametrize("source", ["github", "shopify", "slack", "standard"])
def test_builtin_provider_route_without_a_secret_is_refused_in_production(stack_factory,
                                                                           source):
    # Secrets for every other source: only this one is unconfigured.
    s = stack_factory(env=env_for(sources=[x for x in SOURCES if x != source]))
    body = body_for(source)
    for headers in ({"content-type": "application/json"},
                    signed(s, source, body, secret=SECRETS[source])[1]):
        r = s.request("POST", f"/webhooks/{source}", headers=headers, body=body)
        assert (r.status, r.json()) == (401, {"detail": "Webhook source not configured"})
    # Every spelling of the route is the route (or refused as an ambiguous path, docs/paths.md).
    refused = 2
    for path in (f"/Webhooks/{source}", f"/webhooks//{source}", f"/webhooks/{source}/",
                 f"/webhooks/{source}?x=1"):
        r = s.request("POST", path, headers={"content-type": "application/json"}, body=body)
        assert r.status in (400, 401), (path, r)
        refused += r.status == 401
    assert s.upstream_requests() == []
    stats = s.stats()
    assert stats.get(f"wasmcustom.aura_guard.webhook.{source}.source_not_configured") == \
        refused, stats
