"""Debug-endpoint protection and API-version security through real Envoy, including the path
tricks corpus shared with the core's unit tests (its webhook and login spellings run here too,
against a stack with a webhook source and one with the login rate limit: docs/paths.md)."""
import json
import os
import socket
import time

import pytest

from harness import ROOT, event_lines
from test_sign_webhook import sw

CORPUS = json.load(open(os.path.join(
    ROOT, "crates/aura-guard-core/tests/data/path_variants.json")))
PROD = {"ENVIRONMENT": "production", "DISABLED_API_VERSIONS": "v0"}
STRIPE_SECRET = "stripe-e2e-secret"


def corpus(*targets):
    return [c for c in CORPUS if c["target"] in targets]


def raw_request(port, path_bytes, method=b"GET", headers=(), body=b""):
    """Sends the request line byte for byte (no client-side validation or encoding)."""
    extra = b"".join(k.encode() + b": " + v.encode() + b"\r\n" for k, v in headers)
    if body:
        extra += b"Content-Length: " + str(len(body)).encode() + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(method + b" " + path_bytes + b" HTTP/1.1\r\nHost: localhost\r\n" + extra +
                  b"Connection: close\r\n\r\n" + body)
        data = b""
        # Read until the body is complete (Content-Length), not until close: Envoy delays
        # closing by its delayed_close_timeout.
        while True:
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        length = int(v.strip())
                if len(body) >= length:
                    break
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, head.decode("latin-1"), body


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 50
    assert {c["target"] for c in CORPUS} == {"debug", "disabled_version", "webhook", "login"}


# The HTTP connection manager's path options: as envoy/envoy.yaml ships them, and all off (a
# deployment without Envoy's own path hygiene: the filter alone must hold, docs/paths.md).
HCM_PATH_OPTIONS = {
    "envoy.yaml": {},
    "no_envoy_path_hygiene": {"normalize_path": False, "merge_slashes": False,
                              "path_with_escaped_slashes_action": "KEEP_UNCHANGED"},
}


@pytest.mark.parametrize("hcm", list(HCM_PATH_OPTIONS))
def test_no_path_variant_reaches_the_upstream_in_production(stack_factory, hcm):
    s = stack_factory(env=PROD, hcm=HCM_PATH_OPTIONS[hcm])
    answers = {}
    for case in corpus("debug", "disabled_version"):
        status, head, body = raw_request(s.listen_port, case["path"].encode("utf-8"))
        answers[case["path"]] = status
        # 400: refused as ambiguous (by the filter or Envoy's codec); 404: debug hidden;
        # 410: disabled version. Anything else means the request may have been served.
        assert status in (400, 404, 410), (case, status, head, body[:200])
    assert s.upstream_requests() == [], "a path variant reached the upstream"
    # The filter (not only Envoy's codec) decided most of them.
    assert sum(1 for v in answers.values() if v in (404, 410)) >= 30, answers
    # The options were in force: Envoy resolves `..` before the filter only when it normalises
    # (docs/paths.md: 404 with normalize_path, the filter's 400 without).
    assert answers["/foo/../debug/token"] == (404 if hcm == "envoy.yaml" else 400), answers
    # Sanity: an ordinary request does reach the upstream.
    assert s.request("GET", "/api/v2/ping").status == 200
    assert len(s.upstream_requests()) == 1


def test_blocked_debug_in_production_is_the_upstream_404_shape_with_stat(stack_factory):
    s = stack_factory(env=PROD)
    r = s.request("GET", "/debug/token")
    assert r.status == 404
    assert r.body == b'{"detail":"Not found"}'
    assert r.header("content-type") == "application/json"
    # A local reply from the filter carries the security headers and request id too.
    assert r.header("strict-transport-security")
    assert r.header("content-security-policy")
    assert r.header("x-request-id")
    stats = s.stats()
    assert stats.get("wasmcustom.aura_guard.debug.blocked") == 1, stats
    assert stats.get("wasmcustom.aura_guard.events.debug_endpoint_blocked") == 1, stats
    # The security event is one JSON line, joined to the answer by its request id.
    events = event_lines(s)
    assert len(events) == 1, events
    ev = events[0]
    assert ev["request_id"] == r.header("x-request-id")
    assert (ev["event_type"], ev["severity"], ev["method"]) == (
        "debug_endpoint_blocked", "medium", "GET")
    assert ev["metadata"]["path"] == "/debug/token", ev
    assert ev["metadata"]["environment"] == "production", ev


@pytest.mark.parametrize("enabled,whitelist,reaches", [
    ("true", "token", True),
    ("true", " token , other ", True),
    ("true", "/debug/token", True),
    ("false", "token", False),
    ("true", "", False),
    ("true", "other", False),
    ("TRUE", "debug_token", True),
])
def test_whitelist_and_enable_switch_work_only_together(stack_factory, enabled, whitelist,
                                                        reaches):
    s = stack_factory(env={"ENVIRONMENT": "production", "DEBUG_ENDPOINTS_ENABLED": enabled,
                           "DEBUG_ENDPOINTS_WHITELIST": whitelist})
    r = s.request("GET", "/debug/token")
    assert (r.status == 200) == reaches, r
    assert (len(s.upstream_requests()) == 1) == reaches


def test_development_lets_debug_through(stack_factory):
    s = stack_factory(env={"ENVIRONMENT": "development"})
    r = s.request("GET", "/debug/token")
    assert r.status == 200
    assert r.json()["path"] == "/debug/token"


def test_staging_hides_debug_too(stack_factory):
    s = stack_factory(env={"ENVIRONMENT": "staging"})
    assert s.request("GET", "/debug/token").status == 404
    assert s.upstream_requests() == []


def test_deprecated_version_gets_all_its_headers(stack_factory):
    cfg = {"versions": {"sunset": {"v1": {
        "deprecated_at": 1688169599, "sunset_at": 1893455999,
        "link": "https://docs.example.com/migrate"}}}}
    s = stack_factory(env={"ENVIRONMENT": "production"}, plugin_config=cfg)
    r = s.request("GET", "/api/v1/orders")
    assert r.status == 200
    assert r.header("x-api-deprecation-warning") == (
        "API v1 is deprecated and will be removed in future releases. "
        "Please upgrade to the latest version.")
    assert r.header("deprecation") == "@1688169599"
    assert r.header("sunset") == "Mon, 31 Dec 2029 23:59:59 GMT"
    assert r.header("link") == '<https://docs.example.com/migrate>; rel="deprecation"; type="text/html"'
    stats = s.stats()
    assert stats.get("wasmcustom.aura_guard.versions.deprecated.v1") == 1, stats
    # A current version gets none of them.
    r = s.request("GET", "/api/v2/orders")
    assert r.header("x-api-deprecation-warning") is None
    assert r.header("deprecation") is None


def test_disabled_version_gets_exactly_the_410_body(stack_factory):
    s = stack_factory(env=PROD)
    r = s.request("GET", "/api/v0/orders")
    assert r.status == 410
    body = r.json()
    assert set(body) == {"error", "message", "timestamp"}
    assert body["error"] == "API version no longer supported"
    assert body["message"] == ("API v0 has been discontinued. "
                               "Please upgrade to the latest version.")
    # Naive ISO like Python's datetime.utcnow().isoformat() (no zone).
    assert len(body["timestamp"]) == 19 and body["timestamp"][10] == "T"
    assert s.upstream_requests() == []
    stats = s.stats()
    assert stats.get("wasmcustom.aura_guard.versions.disabled.v0") == 1, stats
    assert stats.get("wasmcustom.aura_guard.events.disabled_api_version_access") == 1


def test_version_header_is_checked_when_configured(stack_factory):
    s = stack_factory(env=PROD, plugin_config={"versions": {"header": "api-version"}})
    r = s.request("GET", "/orders", headers={"api-version": "v0"})
    assert r.status == 410
    assert s.upstream_requests() == []


# --- Spellings of protected routes: format suffixes, `;params`, look-alikes (docs/paths.md) ---

def test_format_suffix_and_look_alike_spellings_of_debug_are_hidden(stack_factory):
    s = stack_factory(env=PROD)
    for path in [b"/debug.json", b"/debug/token.json", b"/DEBUG.xml;x=1", b"/debug;x.json",
                 b"/debug/to%E2%84%AAen", b"/debug/token.json/"]:
        status, head, body = raw_request(s.listen_port, path)
        assert (status, body) == (404, b'{"detail":"Not found"}'), (path, head, body)
    # Compatibility forms of ASCII (superscript, circled, no-break space) are refused.
    for path in ["/ᵈᵉᵇᵘᵍ/token".encode(), b"/%E2%93%93ebug/token", b"/debug%C2%A0/token"]:
        status, head, body = raw_request(s.listen_port, path)
        assert status == 400, (path, head, body)
        if b"Ambiguous request path" in body:
            assert json.loads(body) == {"detail": "Ambiguous request path: Unicode look-alike "
                                                  "of an ASCII character in path"}
    assert s.upstream_requests() == []


def test_every_spelling_of_a_disabled_version_is_refused(stack_factory):
    s = stack_factory(env=PROD)
    # Equal numbers (leading zeros, `.0` components, encoded dot, format suffix): the 410.
    for path in [b"/api/v0.0/x", b"/api/v0%2e0/x", b"/api/v00.000/x", b"/api/v0.json",
                 b"/ap%C4%B1/v0/x"]:
        status, head, body = raw_request(s.listen_port, path)
        assert status == 410, (path, head, body)
        assert json.loads(body)["message"].startswith("API v0 has been discontinued"), body
    # Signs, `_`, exponents, other digits: what a lenient number parser reads as 0 is refused.
    for path in [b"/api/v%2B0/x", b"/api/v+0/x", b"/api/v0_0/x", b"/api/v0e0/x",
                 b"/api/v%D9%A0/x"]:
        status, head, body = raw_request(s.listen_port, path)
        assert status == 400, (path, head, body)
        assert json.loads(body)["detail"].startswith("Ambiguous API version"), body
    assert s.upstream_requests() == []
    stats = s.stats()
    assert stats.get("wasmcustom.aura_guard.versions.disabled.v0") == 5, stats
    assert stats.get("wasmcustom.aura_guard.versions.ambiguous") == 5, stats


def test_ordinary_paths_with_dots_versions_and_non_ascii_still_reach_the_upstream(
        stack_factory):
    s = stack_factory(env=PROD)
    paths = ["/api/v2/caf%C3%A9", "/api/v2/stra%C3%9Fe", "/api/v2/%E6%9D%B1%E4%BA%AC",
             "/api/v2/orders.json", "/static/app.min.js", "/api/v1beta/x", "/api/v2.1/x",
             "/api/vendors/x", "/api/v1/x", "/debugger.json", "/webhooks/stripe-docs.json"]
    for path in paths:
        status, head, body = raw_request(s.listen_port, path.encode())
        assert status == 200, (path, head, body)
    assert [r["path"] for r in s.upstream_requests()] == paths


def test_every_spelling_of_a_webhook_route_is_verified_or_refused(stack_factory):
    s = stack_factory(env={"ENVIRONMENT": "production", "WEBHOOK_SECRET_STRIPE": STRIPE_SECRET})
    body = b'{"id":"evt_1","type":"test.event"}'
    answers = {}
    for case in corpus("webhook"):
        status, head, rbody = raw_request(s.listen_port, case["path"].encode("utf-8"), b"POST",
                                          [("Content-Type", "application/json")], body)
        answers[case["path"]] = status
        # 401: verified as the stripe route (no signature); 400: refused as ambiguous.
        assert status in (400, 401), (case, status, head, rbody[:200])
    assert s.upstream_requests() == [], "an unsigned delivery reached the upstream"
    assert sum(1 for v in answers.values() if v == 401) >= 15, answers
    # A suffixed spelling is the route itself: a correctly signed delivery passes.
    headers = sw.sign("stripe", STRIPE_SECRET, body, int(time.time()), None, None)
    status, head, _ = raw_request(s.listen_port, b"/webhooks/stripe.json", b"POST",
                                  headers + [("Content-Type", "application/json")], body)
    assert status == 200, head
    assert [r["path"] for r in s.upstream_requests()] == ["/webhooks/stripe.json"]
    assert s.stats().get("wasmcustom.aura_guard.webhook.stripe.verified") == 1


def test_every_spelling_of_the_login_route_is_rate_limited(stack_factory, ratelimit_factory):
    rl = {"timeout_ms": 2000, "routes": [{
        "name": "login", "path": "/auth/login", "requests": 2, "window_s": 300,
        "identity": {"body_fields": ["username", "email"]}}]}
    svc = ratelimit_factory(rl)
    s = stack_factory(plugin_config={"ratelimit": rl}, env={"ENVIRONMENT": "production"},
                      ratelimit_port=svc.grpc_port)
    form = [("Content-Type", "application/x-www-form-urlencoded")]
    body = b"username=victim&password=guess"
    for _ in range(2):
        status, head, _ = raw_request(s.listen_port, b"/auth/login", b"POST", form, body)
        assert status == 401, head
    answers = {}
    for case in corpus("login"):
        status, head, rbody = raw_request(s.listen_port, case["path"].encode("utf-8"), b"POST",
                                          form, body)
        answers[case["path"]] = status
        # 429: counted as the login route, over its limit; 400: refused as ambiguous.
        assert status in (400, 429), (case, status, head, rbody[:200])
    assert len(s.upstream_requests()) == 2, [r["path"] for r in s.upstream_requests()]
    assert sum(1 for v in answers.values() if v == 429) >= 12, answers
