"""The auth rate-limit path on a Redis Cluster: real Envoy + the built filter + the real
envoyproxy/ratelimit service with REDIS_TYPE=cluster over a local 3-master Redis Cluster
(`redis-server --cluster-enabled yes`, joined by `redis-cli --cluster create`;
scripts/run_ratelimit.py). The filter does not know which Redis the service runs on: what it
relies on (atomic counters, read with hits_addend 0, one call per check) must hold there too
(docs/ratelimit.md; docs/scaling.md, "Redis beyond one node"). So must the fleet-wide webhook
replay check, whose counters of one delivery share a hash tag (docs/webhooks.md)."""
import os

from harness import start_ratelimit_service
from test_ratelimit_e2e import (BEHIND_PROXY, assert_429, clear_of_boundaries, login_route,
                                params, post, rl_config, rls_calls_done, windows)
from test_webhook_e2e import PROD, body_for, signed

MASTERS = 3


def user_window(r):
    return int(params(r.header("ratelimit-policy"))["login-user"]["w"])


def test_on_a_redis_cluster_the_login_limit_and_backoff_hold_and_keys_spread_over_the_nodes(
        stack_factory, log_dir):
    rl = rl_config([login_route()], **BEHIND_PROXY)
    svc = start_ratelimit_service(os.path.join(log_dir, "rls"), rl, redis_cluster=MASTERS)
    try:
        assert len(svc.redis_ports) == MASTERS
        stack = stack_factory(plugin_config={"ratelimit": rl}, ratelimit_port=svc.grpc_port)
        # The windows in force grow to 16 x 300 s; none of them (nor the day of the failure
        # counters) may turn over while the test counts.
        clear_of_boundaries(15, windows(300))

        # The limit, and the backoff it escalates through: five failures of one user (from one
        # address) pass, each doubling the window from the second on (x1, x1, x2, x4, x8), and
        # the sixth is refused for the x16 window (docs/ratelimit.md, "Backoff").
        seen = []
        for i in range(5):
            r = post(stack, "/auth/login", "username=victim&password=wrong",
                     {"x-forwarded-for": "192.0.2.1"})
            assert r.status == 401, r
            seen.append(user_window(r))
            rls_calls_done(stack, 2 * (i + 1))  # its check, then its failure (fire and forget)
        assert seen == [300, 300, 600, 1200, 2400], seen
        refused = post(stack, "/auth/login", "username=victim&password=wrong",
                       {"x-forwarded-for": "192.0.2.1"})
        assert_429(refused)
        assert user_window(refused) == 4800, refused
        rls_calls_done(stack, 11)

        # A successful login clears the backoff: the next failure is back to the plain window.
        for i in range(3):
            r = post(stack, "/auth/login", "username=demo&password=wrong",
                     {"x-forwarded-for": "192.0.2.2"})
            assert r.status == 401, r
            rls_calls_done(stack, 11 + 2 * (i + 1))
        ok = post(stack, "/auth/login", "username=demo&password=demo-password",
                  {"x-forwarded-for": "192.0.2.2"})
        assert ok.status == 200 and user_window(ok) == 1200, ok
        rls_calls_done(stack, 19)  # its check, then the cleared counter (fire and forget)
        after = post(stack, "/auth/login", "username=demo&password=wrong",
                     {"x-forwarded-for": "192.0.2.2"})
        policy = params(after.header("ratelimit-policy"))
        assert policy["login-user"]["w"] == "300" and policy["login-ip"]["w"] == "300", after
        stats = stack.stats()
        assert stats.get("wasmcustom.aura_guard.ratelimit.cleared.login") == 1, stats
        # Both of victim's limits were hit by the sixth try (one address): counted as ip.
        assert stats.get("wasmcustom.aura_guard.ratelimit.over_limit.login.ip") == 1, stats

        # The counters really live in the cluster, spread by hash slot over its masters.
        keys = {port: int(svc.redis_cli(port, "DBSIZE").strip()) for port in svc.redis_ports}
        assert len([n for n in keys.values() if n > 0]) > 1, keys
    finally:
        svc.stop()


def test_on_a_redis_cluster_a_delivery_accepted_by_one_envoy_is_refused_by_another(
        stack_factory, log_dir):
    # The fleet-wide replay check reads a key's `released` counters before it adds the
    # attempt, in one call; on a Cluster that ordering holds because every counter of one key
    # carries the same hash tag, so they are on one node.
    svc = start_ratelimit_service(os.path.join(log_dir, "rls"), None, redis_cluster=MASTERS)
    try:
        plugin = {"webhook": {"replay": {"mode": "ratelimit"}}, "ratelimit": {"timeout_ms": 2000}}
        a, b = (stack_factory(env=PROD, plugin_config=plugin, ratelimit_port=svc.grpc_port,
                              name=name) for name in ("a", "b"))
        bodies = [body_for("github") for _ in range(4)]
        for body in bodies:
            path, headers = signed(a, "github", body)
            assert a.request("POST", path, headers=headers, body=body).status == 200
            r = b.request("POST", path, headers=headers, body=body)
            assert (r.status, r.json()) == (401, {"detail": "Webhook delivery already processed"})
        assert len(a.upstream_requests()) == len(bodies) and b.upstream_requests() == []
        # Each delivery's counters are on a single node: group the keys by their hash tag.
        nodes_of = {}
        for port in svc.redis_ports:
            for key in svc.redis_cli(port, "--scan", "--pattern", "*webhook_replay*").split():
                tag = key[key.index("{") + 1:key.index("}")]
                nodes_of.setdefault(tag, set()).add(port)
        assert len(nodes_of) == len(bodies), nodes_of
        assert all(len(ports) == 1 for ports in nodes_of.values()), nodes_of
    finally:
        svc.stop()
