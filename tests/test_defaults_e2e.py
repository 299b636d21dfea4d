"""Secure defaults through real Envoy: a deployment that names no environment (neither
`ENVIRONMENT` nor the plugin configuration's `environment`) runs as production, and Envoy's log
says so naming `ENVIRONMENT` (README, "Configuration"). Before, it ran as development: debug
endpoints open, webhooks from unconfigured sources passed unverified, the rate limiter failed
open and nothing was audited."""
import os

import pytest

from harness import Stack

NOT_FOUND = {"detail": "Not found"}
UNAVAILABLE = {"detail": "Service temporarily unavailable. Please try again later."}
WARNING = "aura-guard: ENVIRONMENT is not set"
FORM = {"content-type": "application/x-www-form-urlencoded"}


def upstream_paths(s):
    return [q["path"] for q in s.upstream_requests()]


def test_no_environment_anywhere_runs_as_production_and_warns_naming_ENVIRONMENT(stack_factory):
    # No ENVIRONMENT variable, default plugin configuration; the rate-limit cluster's port has
    # no service behind it.
    s = stack_factory(env={"ENVIRONMENT": None})
    # Debug endpoints are hidden (development forwarded them), whatever the spelling.
    for path in ("/debug/token", "/DEBUG/Token/", "/debug/vars?x=1"):
        r = s.request("GET", path)
        assert r.status == 404 and r.json() == NOT_FOUND, (path, r)
    # An unsigned webhook for a source without a secret is refused (development let it pass).
    r = s.request("POST", "/webhooks/stripe", headers={"content-type": "application/json"},
                  body='{"type": "charge.refunded"}')
    assert r.status == 401 and r.json() == {"detail": "Webhook source not configured"}, r
    # The rate limiter fails closed: the service is unreachable, so the login never reaches
    # the application (development let it through, unlimited).
    r = s.request("POST", "/auth/login", headers=FORM, body="username=test&password=wrong")
    assert r.status == 503 and r.json() == UNAVAILABLE, r
    # The production headers.
    r = s.request("GET", "/api/v2/ping")
    assert r.status == 200, r
    assert r.header("content-security-policy") and r.header("strict-transport-security"), r
    assert [p for p in upstream_paths(s) if p != "/api/v2/ping"] == [], upstream_paths(s)
    log = s.envoy_log()
    assert "aura-guard: configured for environment production" in log, log[-3000:]
    warning = [line for line in log.splitlines() if WARNING in line]
    assert warning and "production" in warning[0] and "[warning]" in warning[0], log[-3000:]


@pytest.mark.parametrize("named", ["variable", "plugin configuration"])
def test_a_named_development_environment_is_honoured_without_the_warning(stack_factory, named):
    if named == "variable":
        s = stack_factory(env={"ENVIRONMENT": "development"})
    else:
        s = stack_factory(env={"ENVIRONMENT": None},
                          plugin_config={"environment": "development"})
    r = s.request("GET", "/debug/token")
    assert r.status == 200 and "/debug/token" in upstream_paths(s), r
    log = s.envoy_log()
    assert "aura-guard: configured for environment development" in log, log[-3000:]
    assert WARNING not in log, log[-3000:]


def test_production_refuses_a_demo_or_short_jwt_secret_naming_the_setting(log_dir):
    # A deployment that kept a demo secret (what `make run` used to fall back to, the
    # placeholder deploy/README.md used to show) never starts; neither does one with a secret
    # under 32 bytes (31 here).
    for i, secret in enumerate(("demo-jwt-secret", "change-me-to-a-long-random-secret",
                                "short-jwt-secret-0123456789abcd")):
        s = Stack(os.path.join(log_dir, f"secret{i}"),
                  env={"ENVIRONMENT": None, "JWT_SECRET_KEY": secret})
        try:
            with pytest.raises(RuntimeError, match="envoy: process exited"):
                s.start()
            log = s.envoy_log()
        finally:
            s.stop()
        assert "invalid configuration: jwt.secret_env" in log, log[-3000:]
        assert secret not in log, "the secret must never be logged"
