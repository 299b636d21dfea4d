"""Envoy without `allow_on_headers_stop_iteration` (what Istio's WasmPlugin and Envoy
Gateway's EnvoyExtensionPolicy give): a request the filter must read the body of is answered
503 with a log line naming the flag, and never reaches the upstream, instead of hanging until
a timeout (docs/robustness.md#the-body-hold). With the flag, nothing is refused, however
slowly the body comes."""
import socket
import time

from harness import find_aura_hcm
from test_ratelimit_e2e import FORM, rl_config
from test_webhook_e2e import env_for, body_for, read_response, request_head, signed

REFUSED = (503, {"detail": "Request body unavailable to aura-guard "
                           "(Envoy: allow_on_headers_stop_iteration)"})


def flag_off(cfg):
    for hf in find_aura_hcm(cfg)["http_filters"]:
        if hf["name"] == "aura-guard":
            hf["typed_config"]["config"]["allow_on_headers_stop_iteration"] = False


def test_without_the_flag_body_routes_get_503_naming_it_and_nothing_goes_upstream(
        stack_factory, ratelimit_factory):
    svc = ratelimit_factory(rl_config())
    s = stack_factory(env=env_for(sources=["github"]), edit=flag_off,
                      plugin_config={"ratelimit": rl_config()}, ratelimit_port=svc.grpc_port)
    body = body_for("github")
    path, headers = signed(s, "github", body)
    # Generous timeout: the point is that an answer comes (without the watch: none, ever).
    r = s.request("POST", path, headers=headers, body=body, timeout=30)
    assert (r.status, r.json()) == REFUSED
    assert r.header("x-request-id") and r.header("x-frame-options") == "DENY"
    # Per-user login limits read the body too.
    r = s.request("POST", "/auth/login", headers=FORM, body="username=a&password=b", timeout=30)
    assert (r.status, r.json()) == REFUSED
    assert s.upstream_requests() == []
    # Requests the filter does not hold are served as usual.
    r = s.request("GET", "/api/v2/ping")
    assert r.status == 200 and r.header("x-content-type-options") == "nosniff"
    assert s.stats().get("wasmcustom.aura_guard.body_hold_unavailable") == 2
    log = s.envoy_log()
    assert "allow_on_headers_stop_iteration: true" in log
    assert log.count("did not hand a held request's body") == 2


def test_with_the_flag_a_slow_first_body_is_waited_for_not_refused(stack_factory):
    # The first held request of the worker: nothing has proven the flag yet.
    s = stack_factory(env=env_for(sources=["github"]))
    body = body_for("github")
    path, headers = signed(s, "github", body)
    with socket.create_connection(("127.0.0.1", s.listen_port), timeout=30) as c:
        c.sendall(request_head(path, headers, len(body)))
        time.sleep(1.5)
        c.sendall(body[:10])
        time.sleep(1)
        c.sendall(body[10:])
        got = read_response(c)
    assert got is not None and got[0] == 200, got
    assert len(s.upstream_requests()) == 1
    assert "wasmcustom.aura_guard.body_hold_unavailable" not in s.stats()


def test_without_the_flag_a_client_that_sends_no_body_is_not_answered_by_the_watch(
        stack_factory):
    """The watch answers only once Envoy received body bytes it withheld; a client that sent
    only headers is left to Envoy's own timeouts, like any slow client."""
    s = stack_factory(env=env_for(sources=["github"]), edit=flag_off)
    body = body_for("github")
    path, headers = signed(s, "github", body)
    with socket.create_connection(("127.0.0.1", s.listen_port), timeout=1.5) as c:
        c.sendall(request_head(path, headers, len(body)))
        assert read_response(c) is None
        c.settimeout(30)
        c.sendall(body)
        assert read_response(c) == REFUSED
    assert s.upstream_requests() == []
