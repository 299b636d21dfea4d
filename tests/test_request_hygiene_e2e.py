"""Request hygiene through real Envoy: what a hostile client sends to steer the upstream or its
own rate-limit identity (docs/request-hygiene.md, docs/ratelimit.md "Who is limited").

1. URL and method override headers (X-Original-URL, X-HTTP-Method-Override, ...) never reach
   the upstream, in any spelling, unless the operator empties `headers.strip_request_headers`.
2. X-Forwarded-For is believed only from a TCP peer in `ratelimit.trusted_proxies`, and only
   hop by hop through trusted proxies. The harness connects from 127.0.0.1, so a proxy list
   without it makes the test client an untrusted peer; with it, the client plays the proxy."""
import http.client
import uuid

# Helpers of the rate-limit e2e tests: same stack, same requests, same 429 checks.
from test_ratelimit_e2e import assert_429, login_route, post, rl_config, start

# Each override header with what a hostile client would put in it: /api/v2/ping passes every
# check of the filter, the override points the upstream at what the filter would refuse.
OVERRIDES = {
    "X-Original-URL": "/debug/token",
    "X-Rewrite-URL": "/debug/token",
    "X-HTTP-Method-Override": "DELETE",
    "X-HTTP-Method": "DELETE",
    "X-Method-Override": "DELETE",
    "X-Original-Method": "DELETE",
}
# CGI-style servers (PHP, Rack, WSGI) read X_Original_URL as HTTP_X_ORIGINAL_URL, the same
# variable as X-Original-URL; Envoy forwards underscores by default.
UNDERSCORED = {
    "X_Original_URL": "/debug/token",
    "x_http_method_override": "DELETE",
    "X-Method_Override": "PUT",
}


def comparable(name):
    return name.lower().replace("_", "-")


def overrides_seen_upstream(stack):
    """Names of override headers (in the comparable form) the upstream received, per request."""
    wanted = {comparable(n) for n in OVERRIDES}
    return [sorted(comparable(h) for h in q["headers"] if comparable(h) in wanted)
            for q in stack.upstream_requests()]


def send_with_duplicates(stack, method, path, header_list):
    """One request with the headers exactly as listed, repeated names included."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.listen_port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("host", "localhost")
        for k, v in header_list:
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_url_and_method_override_headers_do_not_reach_the_upstream(stack_factory):
    stack = stack_factory(env={"ENVIRONMENT": "production"})
    # Every override on a request the filter lets through, in both HTTP/1 spellings.
    r = stack.request("GET", "/api/v2/ping", headers={**OVERRIDES, **UNDERSCORED})
    assert r.status == 200, r
    # A POST turned into a DELETE (method-override middlewares only honour POST).
    r = stack.request("POST", "/api/v2/orders/1", headers={"X-HTTP-Method-Override": "DELETE"},
                      body="{}")
    assert r.status == 200, r
    # Repeated headers: every value goes, not just the first.
    status = send_with_duplicates(stack, "GET", "/api/v2/ping", [
        ("X-Original-URL", "/debug/token"), ("x-original-url", "/admin"),
        ("X-HTTP-Method-Override", "DELETE"), ("X-HTTP-Method-Override", "PUT")])
    assert status == 200
    seen = overrides_seen_upstream(stack)
    assert seen == [[], [], []], seen
    got = stack.upstream_requests()
    # The request itself is untouched: path, method and the other headers arrive.
    assert [(q["method"], q["path"]) for q in got] == [
        ("GET", "/api/v2/ping"), ("POST", "/api/v2/orders/1"), ("GET", "/api/v2/ping")]
    assert all("x-request-id" in q["headers"] for q in got)
    stats = stack.stats()
    assert stats.get("wasmcustom.aura_guard.headers.stripped.x-original-url") == 2, stats
    assert stats.get("wasmcustom.aura_guard.headers.stripped.x-http-method-override") == 3, stats
    assert stats.get("wasmcustom.aura_guard.headers.stripped.x-method-override") == 1, stats


def test_with_an_empty_strip_list_override_headers_reach_the_upstream(stack_factory):
    stack = stack_factory(plugin_config={"headers": {"strip_request_headers": []}})
    r = stack.request("GET", "/api/v2/ping", headers={**OVERRIDES, **UNDERSCORED})
    assert r.status == 200, r
    [seen] = overrides_seen_upstream(stack)
    assert seen == sorted(comparable(n) for n in list(OVERRIDES) + list(UNDERSCORED)), seen
    assert not any(k.startswith("wasmcustom.aura_guard.headers.stripped")
                   for k in stack.stats()), stack.stats()


def _spoofed_logins(stack, xffs):
    """One failed login per X-Forwarded-For value, each with a fresh username, so only the
    per-IP limit is in play."""
    return [post(stack, "/auth/login", f"username={uuid.uuid4().hex}&password=x",
                 {"x-forwarded-for": xff}) for xff in xffs]


def test_forwarded_for_from_a_peer_outside_trusted_proxies_does_not_change_the_ip(
        stack_factory, ratelimit_factory):
    # trusted_hops: 1, but the proxies are 10/8: the test client (127.0.0.1) talks to Envoy
    # directly, like a client bypassing the load balancer.
    rl = rl_config([login_route(requests=5)], trusted_hops=1, trusted_proxies=["10.0.0.0/8"])
    stack, _ = start(stack_factory, ratelimit_factory, rl)
    rs = _spoofed_logins(stack, [f"198.51.100.{i}" for i in range(1, 6)])
    assert [r.status for r in rs] == [401] * 5, rs
    # A sixth identity, a trusted-looking one, and a list of them: still the same peer.
    for xff in ["198.51.100.6", "10.0.0.1", "203.0.113.1, 10.0.0.2"]:
        assert_429(_spoofed_logins(stack, [xff])[0])
    assert stack.stats().get("wasmcustom.aura_guard.ratelimit.over_limit.login.ip") == 3


def test_forwarded_for_from_a_trusted_proxy_peer_is_used(stack_factory, ratelimit_factory):
    rl = rl_config([login_route(requests=5)], trusted_hops=1,
                   trusted_proxies=["10.0.0.0/8", "127.0.0.1/32"])
    stack, _ = start(stack_factory, ratelimit_factory, rl)
    # The proxy (the test client) forwards client 192.0.2.10 five times, then a sixth.
    assert [r.status for r in _spoofed_logins(stack, ["192.0.2.10"] * 5)] == [401] * 5
    assert_429(_spoofed_logins(stack, ["192.0.2.10"])[0])
    # Whatever that client prepended itself, the proxy's entry decides.
    assert_429(_spoofed_logins(stack, ["6.6.6.6, 192.0.2.10"])[0])
    # Another client behind the same proxy has its own quota.
    assert [r.status for r in _spoofed_logins(stack, ["192.0.2.11"] * 5)] == [401] * 5


def test_every_hop_must_be_a_trusted_proxy_not_just_the_peer(stack_factory, ratelimit_factory):
    # Two proxies in front of Envoy: an outer one in 10/8 and the inner one (the test client).
    rl = rl_config([login_route(requests=5)], trusted_hops=2,
                   trusted_proxies=["10.0.0.0/8", "127.0.0.1/32"])
    stack, _ = start(stack_factory, ratelimit_factory, rl)
    # A client reaching the inner proxy directly forges the outer proxy's position: the inner
    # proxy appended the client's real address 203.0.113.7, which is no proxy, so the walk
    # stops there and the forged entries never count (counting two hops blindly took them).
    forged = [f"198.51.100.{i}, 203.0.113.7" for i in range(1, 6)]
    assert [r.status for r in _spoofed_logins(stack, forged)] == [401] * 5
    assert_429(_spoofed_logins(stack, ["198.51.100.6, 203.0.113.7"])[0])
    # Through both proxies, the outer proxy's entry is the client.
    through = [f"6.6.6.{i}, 192.0.2.20, 10.0.0.2" for i in range(1, 6)]
    assert [r.status for r in _spoofed_logins(stack, through)] == [401] * 5
    assert_429(_spoofed_logins(stack, ["192.0.2.20, 10.0.0.3"])[0])


def test_trusted_hops_without_trusted_proxies_is_refused(tmp_path):
    from test_ratelimit_e2e import _validate
    code, out = _validate(tmp_path, {"ratelimit": {"trusted_hops": 1}}, {"JWT_SECRET_KEY": "k"})
    assert code != 0 and "invalid configuration: ratelimit.trusted_proxies" in out, out[-3000:]
    code, out = _validate(tmp_path, {"ratelimit": {"trusted_hops": 1,
                                                   "trusted_proxies": ["10.0.0.1/8"]}},
                          {"JWT_SECRET_KEY": "k"})
    assert code != 0 and "ratelimit.trusted_proxies[0]" in out, out[-3000:]
