"""Auth rate limiting end to end: real Envoy + the built filter + the real envoyproxy/ratelimit
service + real Redis, all on free ports and stopped at teardown (docs/ratelimit.md).

The service YAML is rendered from each test's `ratelimit` config by the filter's own code, so
tests may use short windows (e.g. 5 s: 5 x 16 = 80 s divides the hour). Tests raise the call
timeout from the 20 ms default so a busy machine does not turn a check into a failure mode."""
import json
import string
import time
import uuid
from urllib.parse import urlencode

import pytest

from harness import TEST_JWT_SECRET, event_lines, wait_until
# The demo upstream's signer and body reader (scripts/, on sys.path through harness).
from demo_upstream import credentials, sign_jwt as jwt
# The audit tests' collector (real aura-collector) and their helpers.
from test_audit_e2e import collector  # noqa: F401 (a fixture)

TOO_MANY = {"detail": "Too many requests. Please try again later."}
UNAVAILABLE = {"detail": "Service temporarily unavailable. Please try again later."}
FORM = {"content-type": "application/x-www-form-urlencoded"}


def route(name, path, requests, window_s, **extra):
    r = {"name": name, "path": path, "requests": requests, "window_s": window_s}
    r.update(extra)
    return r


def login_route(requests=5, window_s=300, **extra):
    return route("login", "/auth/login", requests, window_s,
                 identity={"body_fields": ["username", "email"]}, **extra)


def rl_config(routes=None, **extra):
    cfg = {"timeout_ms": 2000}
    if routes is not None:
        cfg["routes"] = routes
    cfg.update(extra)
    return cfg


# The harness's clients reach Envoy from 127.0.0.1: listed as a trusted proxy, the
# X-Forwarded-For entry it appended names the client.
BEHIND_PROXY = {"trusted_hops": 1, "trusted_proxies": ["127.0.0.1/32"]}


def start(stack_factory, ratelimit_factory, rl, env=None, name=None):
    svc = ratelimit_factory(rl)
    stack = stack_factory(plugin_config={"ratelimit": rl}, env=env or {},
                          ratelimit_port=svc.grpc_port, name=name or "stack")
    return stack, svc


def post(stack, path, body, headers=None, timeout=10):
    h = dict(FORM)
    h.update(headers or {})
    return stack.request("POST", path, headers=h, body=body, timeout=timeout)


def params(header_value):
    """`"login-ip";q=5;w=300, "login-user";...` -> {"login-ip": {"q": "5", "w": "300"}, ...}"""
    out = {}
    for item in header_value.split(","):
        name, *ps = item.strip().split(";")
        out[name.strip('"')] = dict(p.split("=", 1) for p in ps)
    return out


# The backoff levels (docs/ratelimit.md, "Levels") and the unit of the failures / cleared
# counters (DAY: they reset together at 00:00 UTC).
LEVELS = (1, 2, 4, 8, 16)
DAY = 86400


def windows(*window_s):
    """Every epoch-aligned window whose boundary changes what routes with these `window_s`
    answer: each backoff level's bucket and the day of the failure counters."""
    return {w * m for w in window_s for m in LEVELS} | {DAY}


def clear_of_boundaries(need_s, spans):
    """Waits until the next `need_s` seconds hold no boundary of any span in `spans` (each
    epoch-aligned, like the filter's buckets and the service's units), so a test that counts
    requests within one bucket, or failures within one day, cannot straddle a reset. The wait
    is bounded: at most one pass to the next boundary per span, or the test fails."""
    now = time.time()
    time.sleep(boundary_free_start(now, need_s, spans) - now)


def boundary_free_start(now, need_s, spans):
    """The earliest time from `now` whose next `need_s` seconds hold no boundary of `spans`."""
    assert need_s < min(spans), (need_s, spans)
    start = now
    for _ in range(len(spans) + 1):
        late = [w for w in spans if start % w + need_s > w]
        if not late:
            return start
        # Just after the first boundary that would fall inside.
        start = min((start // w + 1) * w for w in late) + 0.05
    raise AssertionError(f"no {need_s} s free of boundaries of {sorted(spans)}")


def test_the_boundary_guard_moves_past_a_boundary_that_would_fall_inside():
    day = 20_000 * DAY  # an epoch day, for round numbers
    assert boundary_free_start(day + 100, 30, windows(300)) == day + 100
    # 280 + 30 crosses the 300 s boundary (and not the day's): start just after it.
    assert boundary_free_start(day + 280, 30, windows(300)) == day + 300.05
    # Just before midnight: every bucket and the day turn over together.
    assert boundary_free_start(day - 10, 60, {DAY}) == day + 0.05
    # 57600 (3600 x 16) does not divide the day: both of their boundaries are avoided.
    start = boundary_free_start(day + 57600 - 20, 30, windows(300, 3600))
    assert start == day + 57600.05, start


def rls_calls_done(stack, n, timeout=10):
    """Waits until Envoy holds the answers of `n` calls to the rate-limit service (the
    cluster's `upstream_rq_completed`). The response phase's calls (failure recorded, cleared)
    are fire and forget: the client has its answer before they reach the service, which
    updates Redis before it answers; so this, not a pause, says the counters moved."""
    name = "cluster.ratelimit.upstream_rq_completed"
    wait_until(lambda: stack.stats(name).get(name, 0) >= n, timeout, f"{n} rate-limit calls")
    assert stack.stats(name)[name] == n, stack.stats(name)


def assert_429(r):
    assert r.status == 429, r
    assert r.json() == TOO_MANY
    assert r.header("content-type") == "application/json"
    assert int(r.header("retry-after")) > 0
    assert r.header("ratelimit-policy") and r.header("ratelimit"), r


def test_seed_ten_logins_first_five_pass_then_429(stack_factory, ratelimit_factory):
    # The original's login limit (5 per 300 s on /auth/login, per IP and per user;
    # docs/original-behaviour.md#rate-limiting and #manual-checks).
    stack, _ = start(stack_factory, ratelimit_factory, rl_config())
    clear_of_boundaries(30, windows(300))
    rs = [post(stack, "/auth/login", "username=test&password=wrong") for _ in range(10)]
    for r in rs[:5]:
        assert r.status == 401, r
        assert r.json() == {"detail": "Incorrect username or password"}
        policy = params(r.header("ratelimit-policy"))
        assert policy["login-ip"]["q"] == "5" and policy["login-user"]["q"] == "5", r
        assert "login-ip" in params(r.header("ratelimit")), r
    for r in rs[5:]:
        assert_429(r)
        assert r.body == b'{"detail":"Too many requests. Please try again later."}'
        assert r.header("x-request-id") and r.header("x-frame-options") == "DENY"
    # Only the five allowed attempts reached the upstream.
    assert len([q for q in stack.upstream_requests() if q["path"] == "/auth/login"]) == 5
    stats = stack.stats()
    assert stats.get("wasmcustom.aura_guard.ratelimit.over_limit.login.ip") == 5, stats
    assert stats.get("wasmcustom.aura_guard.events.auth_rate_limit_exceeded") == 5, stats
    assert stats.get("wasmcustom.aura_guard.events.repeated_auth_failures", 0) >= 1, stats
    # One JSON event line per 429, each joined to its answer by the request id.
    events = event_lines(stack)
    refused = [e for e in events if e["event_type"] == "auth_rate_limit_exceeded"]
    assert [e["request_id"] for e in refused] == [r.header("x-request-id") for r in rs[5:]]
    for e, r in zip(refused, rs[5:]):
        assert e["method"] == "POST" and e["metadata"]["endpoint"] == "login", e
        assert e["metadata"]["limit_type"] == "ip", e
        assert e["metadata"]["retry_after"] == int(r.header("retry-after")), (e, r)
    # Repeated failures: each line names its count, the larger of the IP's and the user's,
    # is high from the fifth and belongs to one of the refused logins' answers. (How many
    # lines depends on how soon each failure is recorded: the recording is fire and forget.)
    failing = [e for e in events if e["event_type"] == "repeated_auth_failures"]
    assert failing, "no repeated_auth_failures line"
    for e in failing:
        n = max(e["metadata"]["ip_failures"] or 0, e["metadata"]["user_failures"] or 0)
        assert n >= 3 and e["description"] == f"Multiple failed login attempts ({n} failures)", e
        assert e["severity"] == ("high" if n >= 5 else "medium"), e
        assert e["request_id"] in {r.header("x-request-id") for r in rs[:5]}, e


def test_two_clients_behind_a_trusted_proxy_are_limited_independently(stack_factory,
                                                                       ratelimit_factory):
    stack, _ = start(stack_factory, ratelimit_factory,
                     rl_config([login_route(requests=3)], **BEHIND_PROXY))
    clear_of_boundaries(30, windows(300))

    def attempt(ip):
        # A fresh username each time: only the IP limit is in play.
        return post(stack, "/auth/login", f"username={uuid.uuid4().hex}&password=x",
                    {"x-forwarded-for": ip})

    assert [attempt("10.0.0.1").status for _ in range(3)] == [401] * 3
    assert_429(attempt("10.0.0.1"))
    # The other client behind the same proxy still has its own quota.
    assert [attempt("10.0.0.2").status for _ in range(3)] == [401] * 3
    assert_429(attempt("10.0.0.2"))
    # Seen from the filter, the client entry is the one the proxy appended.
    assert_429(attempt("203.0.113.9, 10.0.0.1"))


def test_spoofed_forwarded_for_from_an_untrusted_client_changes_nothing(stack_factory,
                                                                        ratelimit_factory):
    stack, _ = start(stack_factory, ratelimit_factory,
                     rl_config([login_route(requests=3)], trusted_hops=0))
    clear_of_boundaries(30, windows(300))
    rs = [post(stack, "/auth/login", f"username={uuid.uuid4().hex}&password=x",
               {"x-forwarded-for": f"198.51.100.{i}"}) for i in range(6)]
    assert [r.status for r in rs[:3]] == [401] * 3
    for r in rs[3:]:
        assert_429(r)
    assert stack.stats().get("wasmcustom.aura_guard.ratelimit.over_limit.login.ip") == 3


def test_one_username_attacked_from_several_ips_is_limited_per_user(stack_factory,
                                                                    ratelimit_factory):
    stack, _ = start(stack_factory, ratelimit_factory,
                     rl_config([login_route(requests=3)], **BEHIND_PROXY))
    clear_of_boundaries(30, windows(300))
    rs = [post(stack, "/auth/login", "username=Victim&password=guess",
               {"x-forwarded-for": f"192.0.2.{i}"}) for i in range(1, 7)]
    assert [r.status for r in rs[:3]] == [401] * 3
    for r in rs[3:]:
        assert_429(r)
    # Same user spelled differently, JSON body: the same counter.
    r = stack.request("POST", "/auth/login", {"content-type": "application/json",
                                              "x-forwarded-for": "192.0.2.99"},
                      json.dumps({"username": " victim ", "password": "x"}))
    assert_429(r)
    stats = stack.stats()
    assert stats.get("wasmcustom.aura_guard.ratelimit.over_limit.login.user") == 4, stats
    # A different user from yet another IP is unaffected.
    assert post(stack, "/auth/login", "username=other&password=x",
                {"x-forwarded-for": "192.0.2.200"}).status == 401


def test_register_reset_and_refresh_have_their_own_limits(stack_factory, ratelimit_factory):
    rl = rl_config([
        login_route(requests=5),
        route("register", "/auth/register", 2, 3600, identity={"body_fields": ["username", "email"]}),
        route("password_reset", "/auth/password-reset", 3, 3600,
              identity={"body_fields": ["email", "username"]}),
        route("refresh", "/auth/refresh", 4, 600,
              identity={"jwt_body_fields": ["refresh_token"], "bearer_jwt": True}),
    ])
    stack, _ = start(stack_factory, ratelimit_factory, rl)
    clear_of_boundaries(30, windows(300, 3600, 600))

    def run(path, n, body):
        return [post(stack, path, body) for _ in range(n)]

    reg = run("/auth/register", 3, "username=newbie&email=n@example.com")
    assert [r.status for r in reg[:2]] == [200, 200]
    assert params(reg[0].header("ratelimit-policy"))["register-ip"] == {"q": "2", "w": "3600"}
    assert_429(reg[2])
    reset = run("/auth/password-reset", 4, "email=n@example.com")
    assert [r.status for r in reset[:3]] == [200] * 3
    assert params(reset[0].header("ratelimit-policy"))["password_reset-ip"]["q"] == "3"
    assert_429(reset[3])
    refresh = run("/auth/refresh", 5, "refresh_token=none")
    assert [r.status for r in refresh[:4]] == [200] * 4
    assert params(refresh[0].header("ratelimit-policy"))["refresh-ip"] == {"q": "4", "w": "600"}
    assert_429(refresh[4])
    # Login was never charged by the others.
    r = post(stack, "/auth/login", "username=demo&password=demo-password")
    assert r.status == 200
    assert params(r.header("ratelimit"))["login-ip"]["r"] == "4"


def test_refresh_user_comes_from_a_verified_jwt_and_a_forged_one_is_anonymous(stack_factory,
                                                                               ratelimit_factory):
    rl = rl_config([route("refresh", "/auth/refresh", 2, 600,
                          identity={"jwt_body_fields": ["refresh_token"], "bearer_jwt": True})],
                   **BEHIND_PROXY)
    stack, _ = start(stack_factory, ratelimit_factory, rl)
    clear_of_boundaries(30, windows(600))
    good = jwt("alice", TEST_JWT_SECRET)
    forged = jwt("alice", "not-the-secret")

    def refresh(token, ip, bearer=False):
        if bearer:
            return post(stack, "/auth/refresh", "", {"authorization": f"Bearer {token}",
                                                     "x-forwarded-for": ip})
        return post(stack, "/auth/refresh", f"refresh_token={token}", {"x-forwarded-for": ip})

    r1 = refresh(good, "192.0.2.1")
    assert r1.status == 200 and "refresh-user" in params(r1.header("ratelimit-policy")), r1
    assert refresh(good, "192.0.2.2", bearer=True).status == 200
    # alice is exhausted, whichever IP and whichever carrier.
    assert_429(refresh(good, "192.0.2.3"))
    assert_429(refresh(good, "192.0.2.4", bearer=True))
    # A forged token for alice is anonymous: limited per IP only, never charged to alice.
    for i in range(5, 9):
        r = refresh(forged, f"192.0.2.{i}")
        assert r.status == 200, r
        assert "refresh-user" not in params(r.header("ratelimit-policy")), r
    assert stack.stats().get("wasmcustom.aura_guard.ratelimit.over_limit.refresh.user") == 2


def test_backoff_grows_with_failures_and_a_successful_login_clears_it(stack_factory,
                                                                      ratelimit_factory):
    stack, _ = start(stack_factory, ratelimit_factory,
                     rl_config([login_route(requests=12, window_s=5)]))
    # The levels follow the failure counters (one day); 12 per bucket is never reached (9
    # attempts in all), so the 5..80 s buckets may turn over.
    clear_of_boundaries(60, {DAY})
    seen = []
    for i in range(7):
        r = post(stack, "/auth/login", "username=demo&password=wrong")
        assert r.status == 401, r
        seen.append(int(params(r.header("ratelimit-policy"))["login-user"]["w"]))
        rls_calls_done(stack, 2 * (i + 1))  # its check, then its failure (fire and forget)
    # x1 at 0 and 1 failures, then x2, x4, x8, x16 (cap).
    assert seen == [5, 5, 10, 20, 40, 80, 80], seen
    assert stack.stats().get("wasmcustom.aura_guard.events.repeated_auth_failures", 0) >= 4
    ok = post(stack, "/auth/login", "username=demo&password=demo-password")
    assert ok.status == 200, ok
    assert int(params(ok.header("ratelimit-policy"))["login-user"]["w"]) == 80
    rls_calls_done(stack, 16)  # its check, then the cleared counter (fire and forget)
    after = post(stack, "/auth/login", "username=demo&password=wrong")
    policy = params(after.header("ratelimit-policy"))
    assert policy["login-user"]["w"] == "5" and policy["login-ip"]["w"] == "5", after
    assert stack.stats().get("wasmcustom.aura_guard.ratelimit.cleared.login") == 1


def _failure_mode_check(stack_factory, ratelimit_factory, kill):
    rl = rl_config([login_route(requests=5)], timeout_ms=300)
    svc = ratelimit_factory(rl)
    prod = stack_factory(plugin_config={"ratelimit": rl}, env={"ENVIRONMENT": "production"},
                         ratelimit_port=svc.grpc_port, name="prod")
    dev = stack_factory(plugin_config={"ratelimit": rl}, env={"ENVIRONMENT": "development"},
                        ratelimit_port=svc.grpc_port, name="dev")
    # Healthy first: both go through the service.
    assert post(prod, "/auth/login", "username=a&password=b").status == 401
    assert post(dev, "/auth/login", "username=a&password=b").status == 401
    svc.kill(kill)
    for _ in range(2):
        # Bounded client timeout: a hung request fails the test.
        r = post(prod, "/auth/login", "username=a&password=b", timeout=10)
        assert r.status == 503, r
        assert r.json() == UNAVAILABLE
        assert r.header("content-type") == "application/json"
        # Not an auth route: untouched by the rate limiter.
        assert prod.request("GET", "/api/v2/ping", timeout=10).status == 200
        r = post(dev, "/auth/login", "username=a&password=b", timeout=10)
        assert r.status == 401, r
        assert r.header("ratelimit") is None
    assert prod.stats().get("wasmcustom.aura_guard.ratelimit.service_failure.login.closed") == 2
    assert dev.stats().get("wasmcustom.aura_guard.ratelimit.service_failure.login.open") == 2
    assert prod.stats().get("wasmcustom.aura_guard.events.rate_limit_service_failure") == 2


def test_service_killed_fails_closed_in_production_and_open_elsewhere(stack_factory,
                                                                      ratelimit_factory):
    _failure_mode_check(stack_factory, ratelimit_factory, "service_cmd")


def test_redis_killed_fails_closed_in_production_and_open_elsewhere(stack_factory,
                                                                    ratelimit_factory):
    _failure_mode_check(stack_factory, ratelimit_factory, "redis-server")


def test_a_window_ends_and_the_client_may_try_again(stack_factory, ratelimit_factory):
    rl = rl_config([route("register", "/auth/register", 2, 5,
                          identity={"body_fields": ["username"]})])
    stack, _ = start(stack_factory, ratelimit_factory, rl)
    blocked = None
    for _ in range(6):
        r = post(stack, "/auth/register", f"username={uuid.uuid4().hex}")
        if r.status == 429:
            blocked = r
            break
        assert r.status == 200, r
    assert blocked is not None
    assert_429(blocked)
    retry_after = int(blocked.header("retry-after"))
    assert 1 <= retry_after <= 5
    time.sleep(retry_after + 0.5)
    r = post(stack, "/auth/register", f"username={uuid.uuid4().hex}")
    assert r.status == 200, r


def _validate(tmp_path, plugin_config, env):
    import subprocess

    from harness import ROOT, Stack, clean_env, envoy_bin
    s = Stack(str(tmp_path), plugin_config=plugin_config)
    cfg = s.render(str(tmp_path / "envoy.yaml"))
    r = subprocess.run([envoy_bin(), "--mode", "validate", "-c", cfg], cwd=ROOT,
                       capture_output=True, text=True, env=clean_env(env), timeout=120)
    return r.returncode, r.stdout + r.stderr


def test_invalid_ratelimit_config_or_missing_jwt_secret_in_production_is_refused(tmp_path):
    code, out = _validate(tmp_path, {"ratelimit": {"routes": [
        {"name": "login", "path": "/auth/login", "requests": 5, "window_s": 7000}]}},
        {"JWT_SECRET_KEY": "k"})
    assert code != 0 and "invalid configuration: ratelimit.routes[0].window_s" in out, out[-3000:]
    code, out = _validate(tmp_path, {}, {"ENVIRONMENT": "production"})
    assert code != 0, out[-3000:]
    assert "invalid configuration: jwt.secret_env" in out, out[-3000:]
    # (Production refuses a JWT secret under 32 bytes: the test's own secret is long enough.)
    code, out = _validate(tmp_path, {}, {"ENVIRONMENT": "production",
                                         "JWT_SECRET_KEY": TEST_JWT_SECRET})
    assert code == 0, out[-3000:]


# --- The user is the one the upstream reads, whatever the encoding (docs/ratelimit.md,
# "Reading the body"). Each test would fail on a filter that reads such a body or token as
# anonymous: the attacker rotating client IPs would then only meet the per-IP limit.

PROD = {"ENVIRONMENT": "production"}


def login_bodies(user, password):
    """(what, content-type, body): one login for `user` in each encoding FastAPI/Starlette
    reads as `user` (tests/data/identity_vectors.json pins the same against real FastAPI)."""
    creds = {"username": user, "password": password}
    j = json.dumps(creds)
    u, p = json.dumps(user), json.dumps(password)
    boundary = "----aura guard; e2e"
    parts = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
                    for k, v in creds.items())
    multipart = (parts + f"--{boundary}--\r\n").encode()
    webkit = "----WebKitFormBoundary7MA4YWxkTrZu0gW"
    return [
        ("JSON with a UTF-8 BOM", "application/json", b"\xef\xbb\xbf" + j.encode()),
        ("JSON in UTF-16 with a BOM", "application/json", j.encode("utf-16")),
        ("JSON in UTF-16LE", "application/json", j.encode("utf-16-le")),
        ("JSON in UTF-16BE", "application/json", j.encode("utf-16-be")),
        ("JSON in UTF-32 with a BOM", "application/json", j.encode("utf-32")),
        ("JSON in UTF-32BE", "application/json", j.encode("utf-32-be")),
        ("JSON with NaN, Infinity and a huge number", "application/json",
         ('{"n": NaN, "username": %s, "i": [-Infinity, 1e400], "password": %s}' % (u, p)).encode()),
        ("JSON with a lone surrogate", "application/json",
         ('{"username": %s, "password": %s, "x": "\\ud800"}' % (u, p)).encode()),
        ("JSON with a duplicate key, the last one the user", "application/json",
         ('{"username": "decoy", "password": %s, "username": %s}' % (p, u)).encode()),
        ("JSON with a mixed-case type and a charset", "Application/JSON; charset=UTF-8",
         j.encode()),
        ("JSON as application/vnd.api+json", "application/vnd.api+json", j.encode()),
        ("a form with a mixed-case type and a charset",
         "Application/X-WWW-Form-Urlencoded; charset=UTF-8", urlencode(creds).encode()),
        ("multipart with a quoted boundary", f'multipart/form-data; boundary="{boundary}"',
         multipart),
        ("multipart with a plain boundary", f"multipart/form-data; boundary={webkit}",
         multipart.replace(boundary.encode(), webkit.encode())),
    ]


def test_each_body_encoding_fastapi_reads_counts_against_the_user_across_ips(
        stack_factory, ratelimit_factory):
    stack, _ = start(stack_factory, ratelimit_factory,
                     rl_config([login_route(requests=5)], **BEHIND_PROXY), env=PROD)
    clear_of_boundaries(60, windows(300))
    missed = []
    for n in range(len(login_bodies("x", "y"))):
        user = f"victim-{n}"
        what, ctype, body = login_bodies(user, "wrong")[n]
        # The demo upstream reads it as FastAPI would: this is a login for `user`.
        assert credentials(ctype, body) == (user, "wrong"), what
        rs = [stack.request("POST", "/auth/login", {"content-type": ctype,
                                                    "x-forwarded-for": f"198.51.{n}.{i}"}, body)
              for i in range(1, 7)]
        statuses = [r.status for r in rs]
        users = ["login-user" in params(r.header("ratelimit-policy") or "") for r in rs[:5]]
        if statuses != [401] * 5 + [429] or not all(users):
            missed.append((what, statuses, users))
        else:
            assert_429(rs[5])
    assert not missed, missed
    n = len(login_bodies("x", "y"))
    assert stack.stats().get("wasmcustom.aura_guard.ratelimit.over_limit.login.user") == n


def test_the_sixth_guess_in_another_encoding_is_refused_even_when_it_is_right(
        stack_factory, ratelimit_factory):
    stack, _ = start(stack_factory, ratelimit_factory,
                     rl_config([login_route(requests=5)], **BEHIND_PROXY), env=PROD)
    clear_of_boundaries(30, windows(300))
    guesses = login_bodies("demo", "wrong")
    for i, k in enumerate((0, 2, 6, 8, 12)):
        _, ctype, body = guesses[k]
        r = stack.request("POST", "/auth/login",
                          {"content-type": ctype, "x-forwarded-for": f"203.0.113.{i}"}, body)
        assert r.status == 401, r
    what, ctype, body = login_bodies("demo", "demo-password")[4]
    # The upstream would log this one in (UTF-32 JSON, right password) ...
    assert credentials(ctype, body) == ("demo", "demo-password"), what
    r = stack.request("POST", "/auth/login",
                      {"content-type": ctype, "x-forwarded-for": "203.0.113.99"}, body)
    # ... but the account is locked: it never gets there.
    assert_429(r)
    assert len([q for q in stack.upstream_requests() if q["path"] == "/auth/login"]) == 5


def pyjwt_spellings(token):
    """The same token with its signature spelled in the ways PyJWT (up to 2.13, pinned in
    tests/requirements.txt) still accepts: padding, unused trailing bits set, the standard
    alphabet, bytes outside the alphabet, data after the padding."""
    head, sig = token.rsplit(".", 1)
    b64 = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    top = b64.index(sig[-1]) & ~3
    sigs = [sig + "=", sig + "==", sig + "====", sig + "=AAAA", sig + " =",
            f"{sig[:10]}!{sig[10:20]}~{sig[20:]}", sig.replace("-", "+").replace("_", "/")]
    sigs += [sig[:-1] + b64[top | low] for low in range(4)]
    out = []
    for s in sigs:
        if s != sig and f"{head}.{s}" not in out:
            out.append(f"{head}.{s}")
    return out


@pytest.mark.filterwarnings("ignore:The HMAC key is")  # the harness's short test secret
def test_refresh_tokens_pyjwt_accepts_in_any_spelling_count_against_their_user(
        stack_factory, ratelimit_factory):
    import jwt as pyjwt

    rl = rl_config([route("refresh", "/auth/refresh", 3, 600,
                          identity={"jwt_body_fields": ["refresh_token"], "bearer_jwt": True})],
                   **BEHIND_PROXY)
    stack, _ = start(stack_factory, ratelimit_factory, rl, env=PROD)
    clear_of_boundaries(30, windows(600))
    token = pyjwt.encode({"sub": "alice", "exp": int(time.time()) + 3600}, TEST_JWT_SECRET,
                         algorithm="HS256")
    spellings = pyjwt_spellings(token)
    assert len(spellings) >= 9
    for t in spellings:
        assert pyjwt.decode(t, TEST_JWT_SECRET, algorithms=["HS256"])["sub"] == "alice", t

    def refresh(t, i):
        h = {"x-forwarded-for": f"192.0.2.{i}"}
        if i % 2:
            h["authorization"] = f"Bearer {t}"
            return stack.request("POST", "/auth/refresh", h, "")
        h["content-type"] = "application/json"
        return stack.request("POST", "/auth/refresh", h, json.dumps({"refresh_token": t}))

    rs = [refresh(t, i) for i, t in enumerate(spellings)]
    for r in rs[:3]:
        assert r.status == 200 and "refresh-user" in params(r.header("ratelimit-policy")), r
    for r in rs[3:]:
        assert_429(r)
    stats = stack.stats()
    assert stats.get("wasmcustom.aura_guard.ratelimit.over_limit.refresh.user") == len(rs) - 3


def test_an_unreadable_login_body_gets_400_in_production_and_is_audited(
        stack_factory, ratelimit_factory, collector):
    from test_audit_e2e import AUDIT_ENV, FAST, wait_records

    rl = rl_config([login_route(requests=5)], **BEHIND_PROXY)
    svc = ratelimit_factory(rl)
    prod = stack_factory(plugin_config={"ratelimit": rl}, env=AUDIT_ENV,
                         ratelimit_port=svc.grpc_port, collector_port=collector.port,
                         audit_config=FAST, name="prod")
    dev = stack_factory(plugin_config={"ratelimit": rl}, env={"ENVIRONMENT": "development"},
                        ratelimit_port=svc.grpc_port, name="dev")
    unreadable = [
        ("invalid JSON", "application/json", b'{"username": "victim", "password": "x"'),
        ("invalid JSON", "application/json; charset=utf-8", b"username=victim&password=x"),
        ("multipart/form-data without a boundary", "multipart/form-data",
         b'--b\r\nContent-Disposition: form-data; name="username"\r\n\r\nvictim\r\n--b--\r\n'),
        ("malformed multipart/form-data", "multipart/form-data; boundary=b",
         b'--b\nContent-Disposition: form-data; name="username"\n\nvictim\n--b--\n'),
        ("unsupported multipart/form-data charset", "multipart/form-data; boundary=b; charset=utf-7",
         b'--b\r\nContent-Disposition: form-data; name="username"\r\n\r\nvictim\r\n--b--\r\n'),
    ]
    for i, (problem, ctype, body) in enumerate(unreadable):
        r = prod.request("POST", "/auth/login",
                         {"content-type": ctype, "x-forwarded-for": f"192.0.2.{i}",
                          "x-request-id": f"unreadable-{i}"}, body)
        assert r.status == 400, r
        assert r.json() == {"detail": f"Unreadable request body: {problem}"}
        assert r.header("content-type") == "application/json"
        assert r.header("x-request-id") == f"unreadable-{i}"
    assert prod.upstream_requests() == []
    stats = prod.stats()
    n = len(unreadable)
    assert stats.get("wasmcustom.aura_guard.ratelimit.unreadable_body.login") == n, stats
    assert stats.get("wasmcustom.aura_guard.events.unreadable_auth_body") == n, stats
    recs = wait_records(collector, n)
    events = {r["request_id"]: r for r in recs if r["kind"] == "security_event"}
    for i, (problem, ctype, _) in enumerate(unreadable):
        ev = events[f"unreadable-{i}"]
        assert ev["type"] == "unreadable_auth_body" and ev["status"] == 400, ev
        assert ev["metadata"]["reason"] == problem
        assert ev["metadata"]["content_type"] == ctype.split(";")[0]
    # Outside production the same body goes on, limited per IP as anonymous.
    r = dev.request("POST", "/auth/login", {"content-type": "application/json"},
                    unreadable[0][2])
    assert r.status == 401 and "login-user" not in params(r.header("ratelimit-policy")), r
