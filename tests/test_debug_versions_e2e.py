"""Debug-endpoint protection and API-version security through real Envoy, including the path
tricks corpus shared with the core's unit tests."""
import json
import os
import socket

import pytest

from harness import ROOT

CORPUS = json.load(open(os.path.join(
    ROOT, "crates/aura-guard-core/tests/data/path_variants.json")))
PROD = {"ENVIRONMENT": "production", "DISABLED_API_VERSIONS": "v0"}


def raw_request(port, path_bytes):
    """Sends the request line byte for byte (no client-side validation or encoding)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET " + path_bytes + b" HTTP/1.1\r\nHost: localhost\r\n"
                  b"Connection: close\r\n\r\n")
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
    assert {c["target"] for c in CORPUS} == {"debug", "disabled_version"}


def test_no_path_variant_reaches_the_upstream_in_production(stack_factory):
    s = stack_factory(env=PROD)
    answers = {}
    for case in CORPUS:
        status, head, body = raw_request(s.listen_port, case["path"].encode("utf-8"))
        answers[case["path"]] = status
        # 400: refused as ambiguous (by the filter or Envoy's codec); 404: debug hidden;
        # 410: disabled version. Anything else means the request may have been served.
        assert status in (400, 404, 410), (case, status, head, body[:200])
    assert s.upstream_requests() == [], "a path variant reached the upstream"
    # The filter (not only Envoy's codec) decided most of them.
    assert sum(1 for v in answers.values() if v in (404, 410)) >= 30, answers
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
