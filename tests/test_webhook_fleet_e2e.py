"""Fleet-wide webhook replay (`webhook.replay.mode: "ratelimit"`, docs/webhooks.md) through
three real Envoys sharing one real envoyproxy/ratelimit and Redis: what one Envoy accepted,
every other refuses, even when the copies arrive at the same moment; a delivery the upstream
failed passes again on another Envoy; without the service, production refuses with 503."""
import signal
import subprocess
import threading

from test_faults_e2e import hang
from test_webhook_e2e import PROD, body_for, sha, signed, t_and_v1

# A generous service timeout: the copies arrive in bursts on a shared 2-core machine, and a
# check that times out is (correctly) answered 503, which is not what these tests pin.
FLEET = {"webhook": {"replay": {"mode": "ratelimit"}}, "ratelimit": {"timeout_ms": 2000}}
REPLAY = (401, {"detail": "Webhook delivery already processed"})


def fleet(stack_factory, ratelimit_factory, n=3, env=PROD, plugin_config=FLEET):
    svc = ratelimit_factory()
    return svc, [stack_factory(env=env, plugin_config=plugin_config,
                               ratelimit_port=svc.grpc_port, name=f"envoy{i}")
                 for i in range(n)]


def upstream_shas(envoys):
    return sorted(x["body_sha256"] for e in envoys for x in e.upstream_requests())


def test_a_delivery_accepted_by_one_envoy_is_refused_by_the_others(stack_factory,
                                                                   ratelimit_factory):
    _, envoys = fleet(stack_factory, ratelimit_factory)
    a, b, c = envoys
    delivered = []
    # Stripe signs a timestamp, GitHub and Shopify do not, Standard Webhooks signs its id.
    for source in ["stripe", "github", "shopify", "standard"]:
        body = body_for(source)
        path, headers = signed(a, source, body)
        assert a.request("POST", path, headers=headers, body=body).status == 200, source
        delivered.append(body)
        for other in (b, c, a):
            r = other.request("POST", path, headers=headers, body=body)
            assert (r.status, r.json()) == REPLAY, (source, other.listen_port)
    # The Stripe MAC resent to another Envoy under the seed's generic headers: the same
    # signed string, so the same delivery.
    body = body_for("stripe")
    path, headers = signed(a, "stripe", body)
    assert a.request("POST", path, headers=headers, body=body).status == 200
    delivered.append(body)
    t, v1 = t_and_v1(headers, "Stripe-Signature")
    r = b.request("POST", path, headers={"X-Webhook-Timestamp": t, "X-Webhook-Signature": v1,
                                         "content-type": "application/json"}, body=body)
    assert (r.status, r.json()) == REPLAY
    assert upstream_shas(envoys) == sorted(sha(x) for x in delivered)
    stats = b.stats()
    assert stats.get("wasmcustom.aura_guard.webhook.stripe.replay") == 2, stats


def test_simultaneous_copies_on_every_envoy_pass_exactly_once(stack_factory,
                                                             ratelimit_factory):
    _, envoys = fleet(stack_factory, ratelimit_factory)
    bodies = [body_for("standard") for _ in range(4)]
    prepared = [signed(envoys[0], "standard", body) for body in bodies]
    results, lock = [], threading.Lock()

    def send(i):
        k = i % len(bodies)
        path, headers = prepared[k]
        r = envoys[i % 3].request("POST", path, headers={**headers, "connection": "close"},
                                  body=bodies[k])
        with lock:
            results.append((k, r.status))

    # Each delivery 6 times at once, two copies on each Envoy.
    threads = [threading.Thread(target=send, args=(i,)) for i in range(6 * len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(len(bodies)):
        assert sorted(st for j, st in results if j == k) == [200] + [401] * 5, (k, results)
    assert upstream_shas(envoys) == sorted(sha(x) for x in bodies)


def test_a_delivery_the_upstream_failed_passes_once_more_on_another_envoy(stack_factory,
                                                                       ratelimit_factory):
    _, (a, b, c) = fleet(stack_factory, ratelimit_factory)
    body = body_for("shopify")
    path, headers = signed(a, "shopify", body)
    r = a.request("POST", path, headers={**headers, "X-Demo-Status": "503"}, body=body)
    assert r.status == 503
    a.wait_stat("wasmcustom.aura_guard.webhook.shopify.replay_released", 1)
    assert b.request("POST", path, headers=headers, body=body).status == 200, "retry refused"
    r = c.request("POST", path, headers=headers, body=body)
    assert (r.status, r.json()) == REPLAY
    c.wait_stat("wasmcustom.aura_guard.webhook.shopify.replay_released", 1)
    r = a.request("POST", path, headers=headers, body=body)
    assert (r.status, r.json()) == REPLAY
    assert len(a.upstream_requests()) == 1 and len(b.upstream_requests()) == 1
    assert c.upstream_requests() == []


def test_redis_holds_only_digests_of_replay_keys_in_hash_tags(stack_factory,
                                                              ratelimit_factory):
    svc, (a,) = fleet(stack_factory, ratelimit_factory, n=1)
    body = body_for("github")
    path, headers = signed(a, "github", body)
    headers["X-GitHub-Delivery"] = "delivery-id-not-for-redis"
    assert a.request("POST", path, headers=headers, body=body).status == 200
    keys = subprocess.run(["redis-cli", "-p", str(svc.redis_port), "--scan"], check=True,
                          capture_output=True, text=True).stdout.split()
    replay = [k for k in keys if "webhook_replay" in k]
    # released and attempt of the current anchor (and the previous anchor's, read as 0).
    assert 2 <= len(replay) <= 4, keys
    for k in replay:
        assert k.startswith("aura-guard_webhook_replay_"), k
        assert "{" in k and "}" in k, k
    assert not any("delivery-id" in k or body.decode()[:20] in k for k in keys), keys


def test_without_the_service_production_and_closed_refuse_with_503_and_development_passes(
        stack_factory, ratelimit_factory):
    svc = ratelimit_factory()
    prod = stack_factory(env=PROD, plugin_config=FLEET, ratelimit_port=svc.grpc_port,
                         name="prod")
    development = {**PROD, "ENVIRONMENT": "development"}
    dev = stack_factory(env=development, plugin_config=FLEET, ratelimit_port=svc.grpc_port,
                        name="dev")
    # `failure_mode: closed` refuses outside production too.
    dev_closed = stack_factory(env=development, ratelimit_port=svc.grpc_port, name="devclosed",
                               plugin_config={**FLEET, "webhook": {"replay": {
                                   "mode": "ratelimit", "failure_mode": "closed"}}})
    svc.kill("service_cmd")
    body = body_for("stripe")
    path, headers = signed(prod, "stripe", body)
    r = prod.request("POST", path, headers=headers, body=body)
    assert (r.status, r.json()) == (503, {"detail": "Webhook replay check unavailable"})
    assert r.header("x-request-id") and r.header("x-content-type-options") == "nosniff"
    assert prod.upstream_requests() == []
    assert prod.stats().get(
        "wasmcustom.aura_guard.webhook.stripe.replay_service_error") == 1
    assert "fleet-wide webhook replay check failed" in prod.envoy_log()
    r = dev.request("POST", path, headers=headers, body=body)
    assert r.status == 200
    assert dev.stats().get("wasmcustom.aura_guard.webhook.stripe.replay_unchecked") == 1
    r = dev_closed.request("POST", path, headers=headers, body=body)
    assert (r.status, r.json()) == (503, {"detail": "Webhook replay check unavailable"})
    assert dev_closed.upstream_requests() == []
    assert dev_closed.stats().get(
        "wasmcustom.aura_guard.webhook.stripe.replay_service_error") == 1


def test_a_hung_service_gets_each_deliverys_failure_mode_while_it_hangs_and_is_used_after(
        stack_factory, ratelimit_factory):
    # The service accepts the call and never answers (SIGSTOP): the call timeout, not the hang,
    # decides. Production's default refuses with 503; `failure_mode: open` lets it through
    # unchecked. Every answer comes while the service is still stopped.
    svc = ratelimit_factory()
    hung = {"webhook": {"replay": {"mode": "ratelimit"}}, "ratelimit": {"timeout_ms": 300}}
    closed = stack_factory(env=PROD, plugin_config=hung, ratelimit_port=svc.grpc_port,
                           name="closed")
    opened = stack_factory(env=PROD, ratelimit_port=svc.grpc_port, name="open", plugin_config={
        **hung, "webhook": {"replay": {"mode": "ratelimit", "failure_mode": "open"}}})
    hang(svc, "service_cmd")
    try:
        for stack, want in ((closed, 503), (opened, 200)):
            body = body_for("stripe")
            path, headers = signed(stack, "stripe", body)
            r = stack.request("POST", path, headers=headers, body=body, timeout=10)
            assert r.status == want, (want, r)
        assert closed.upstream_requests() == []
        assert closed.stats().get(
            "wasmcustom.aura_guard.webhook.stripe.replay_service_error") == 1
        assert opened.stats().get("wasmcustom.aura_guard.webhook.stripe.replay_unchecked") == 1
        assert len(opened.upstream_requests()) == 1
    finally:
        svc.send_signal("service_cmd", signal.SIGCONT)
    # The service answers again: a new delivery is checked and passes, its copy is refused.
    body = body_for("stripe")
    path, headers = signed(closed, "stripe", body)
    assert closed.request("POST", path, headers=headers, body=body).status == 200
    r = closed.request("POST", path, headers=headers, body=body)
    assert (r.status, r.json()) == REPLAY
