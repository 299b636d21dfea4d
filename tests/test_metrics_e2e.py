"""Every metric the alert rules (deploy/prometheus/aura-guard.rules.yml) and the Grafana
dashboard (deploy/grafana/aura-guard.json) query is what a real Envoy's /stats/prometheus
shows, with the envoy/envoy.yaml stats_tags turning the filter's counters into labels
(docs/metrics.md): after a known sequence of requests, each metric has exactly the series
(label sets) and the counts the sequence implies, and every label the expressions match on.

Two stacks: A (production: webhooks, versions, header stripping, the real rate-limit service
and Redis, the real collector behind the audit shipper), and B (the body hold off and no audit
shipper: the configuration faults behind `body_hold_unavailable` and `audit.dropped`)."""
import json
import os
import re
import urllib.parse

import pytest
import yaml

from harness import ROOT, request, wait_until
from test_audit_e2e import collector  # noqa: F401 (a fixture)
from test_body_hold_e2e import flag_off
from test_ratelimit_e2e import (FORM, clear_of_boundaries, login_route, post, rl_config,
                                rls_calls_done, windows)
from test_webhook_e2e import body_for, env_for, signed

RULES = os.path.join(ROOT, "deploy", "prometheus", "aura-guard.rules.yml")
DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "aura-guard.json")

# --- metric names out of PromQL ---------------------------------------------------------------
# promtool has no expression-to-names command; every metric this project queries starts with
# one of these prefixes, and test_extraction_misses_no_identifier shows nothing else remains.
METRIC = re.compile(r"\b((?:aura_guard|envoy)_[a-z0-9_]+)\b(\s*\{([^}]*)\})?")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")
# What else a PromQL expression of ours may hold: functions, aggregations, keywords, and the
# label names of by/without clauses.
PROMQL_WORDS = {"sum", "rate", "increase", "by", "without", "and", "or", "unless", "offset",
                "vector", "label_values", "absent", "max", "min", "avg", "count", "topk",
                "on", "ignoring", "group_left", "group_right", "bool"}
# Labels Prometheus adds at scrape time, not Envoy.
SCRAPE_LABELS = {"instance", "job"}


def metrics_in(expr):
    """{metric name: label names its selectors match on}."""
    out = {}
    for m in METRIC.finditer(expr):
        labels = set(MATCHER.findall(m.group(3) or "")) - SCRAPE_LABELS
        out.setdefault(m.group(1), set()).update(labels)
    return out


def leftover_identifiers(expr):
    """Identifiers of `expr` that are neither PromQL words, label names, nor metrics found by
    metrics_in: empty when the extraction saw every metric."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)          # strings
    e = re.sub(r"\{[^}]*\}", "", e)                         # matchers
    e = re.sub(r"\[[^\]]*\]", "", e)                        # ranges
    e = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", e)
    e = re.sub(r"\boffset\s+\d+[smhdwy]", "", e)
    e = re.sub(r"\$\w+", "", e)                             # Grafana variables
    words = set(re.findall(r"[a-zA-Z_][a-zA-Z0-9_]*", e))
    return words - PROMQL_WORDS - SCRAPE_LABELS - set(metrics_in(expr))


def expressions():
    with open(RULES) as f:
        rules = yaml.safe_load(f)
    exprs = [("rules", r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]
    with open(DASHBOARD) as f:
        dash = json.load(f)
    for p in dash["panels"]:
        for t in p.get("targets", []):
            exprs.append(("dashboard", p["title"], t["expr"]))
    for v in dash["templating"]["list"]:
        if isinstance(v.get("query"), dict):
            exprs.append(("dashboard", v["name"], v["query"]["query"]))
    return exprs


def used_metrics():
    used = {}
    for _, _, e in expressions():
        for name, labels in metrics_in(e).items():
            used.setdefault(name, set()).update(labels)
    return used


def test_extraction_finds_every_metric_of_an_expression():
    e = ('(sum by (source) (increase(aura_guard_webhook{instance=~"$instance",outcome=~"a|b"}[5m]))'
         ' > 3 * sum(rate(aura_guard_audit_operations[1h] offset 5m))) or '
         'envoy_wasm_vm_reload{result="x"} and on (instance) aura_guard_body_hold_unavailable > 0')
    assert metrics_in(e) == {"aura_guard_webhook": {"outcome"}, "aura_guard_audit_operations": set(),
                             "envoy_wasm_vm_reload": {"result"},
                             "aura_guard_body_hold_unavailable": set()}
    assert leftover_identifiers(e) == set()
    # An identifier the extraction does not know is reported.
    assert leftover_identifiers("sum(rate(http_requests[5m]))") == {"http_requests"}


def test_extraction_misses_no_identifier():
    exprs = expressions()
    assert len(exprs) > 20
    for where, name, e in exprs:
        assert metrics_in(e), (where, name, e)
        assert leftover_identifiers(e) == set(), (where, name, e)


# --- /stats/prometheus ------------------------------------------------------------------------
LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def prometheus(stack):
    """{metric: {frozenset of (label, value): value}} of Envoy's /stats/prometheus."""
    r = request(stack.admin_port, "GET", "/stats/prometheus")
    assert r.status == 200
    text = r.body.decode() if isinstance(r.body, bytes) else r.body
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = LINE.match(line)
        assert m, line
        labels = frozenset(LABEL.findall(m.group(2) or ""))
        out.setdefault(m.group(1), {})[labels] = float(m.group(3))
    return out


def series(**labels):
    return frozenset(labels.items())


# Timer-driven (no exact count can follow from requests): present, with the values checked
# as stated in `check`.
TIMED = {"aura_guard_audit_ticks", "aura_guard_audit_buffered"}
# Counted only when the audit shipper's heartbeat has passed (its VM dead or stuck): no request
# sequence can cause it. Checked to be a stat the filter counts (its name in the source).
NOT_CAUSED = {"aura_guard_audit_shipper_stale": "aura_guard.audit.shipper_stale"}

GITHUB = ["github"]


def stack_a(stack_factory, ratelimit_factory, collector):
    from test_audit_e2e import FAST, TEST_COLLECTOR_TOKEN
    rl = rl_config([login_route(requests=3)])
    svc = ratelimit_factory(rl)
    env = dict(env_for(sources=GITHUB), AUDIT_COLLECTOR_TOKEN=TEST_COLLECTOR_TOKEN)
    s = stack_factory(name="a", env=env, ratelimit_port=svc.grpc_port,
                      collector_port=collector.port, audit_config=FAST,
                      plugin_config={"ratelimit": rl,
                                     "versions": {"disabled": ["v0"], "deprecated": ["v1"]}})
    return s, svc


def no_shipper(cfg):
    flag_off(cfg)
    cfg.pop("bootstrap_extensions", None)


def test_every_queried_metric_is_in_envoys_prometheus_output_with_exact_counts(
        stack_factory, ratelimit_factory, collector):  # noqa: F811
    used = used_metrics()
    # --- stack A ------------------------------------------------------------------------------
    a, svc = stack_a(stack_factory, ratelimit_factory, collector)
    d1 = body_for("github")
    path, headers = signed(a, "github", d1)
    assert a.request("POST", path, headers=headers, body=d1).status == 200
    assert a.request("POST", path, headers=headers, body=d1).status == 401        # replay
    d2 = body_for("github")
    p2, h2 = signed(a, "github", d2)
    assert a.request("POST", p2, headers=h2, body=d2).status == 200
    d3 = body_for("github")
    p3, h3 = signed(a, "github", d3, secret="not-the-secret-0123456789abcdef")
    assert a.request("POST", p3, headers=h3, body=d3).status == 401              # invalid_signature
    assert a.request("GET", "/api/v0/items").status == 410
    assert a.request("GET", "/api/v1/items").status == 200
    assert a.request("GET", "/api/v2/items", headers={"X-Original-URL": "/admin"}).status == 200
    assert a.request("DELETE", "/api/v1/auth/users/7").status < 500             # user_delete
    # Three failed logins (3 per 300 s), then the limit; each failure's record call landed
    # before the next attempt (2 service calls per failure, 1 for the refused attempt).
    clear_of_boundaries(30, windows(300))
    for i in range(3):
        assert post(a, "/auth/login", "username=eve&password=wrong").status == 401
        rls_calls_done(a, 2 * (i + 1))
    assert post(a, "/auth/login", "username=eve&password=wrong").status == 429
    rls_calls_done(a, 7)
    svc.stop()
    assert post(a, "/auth/login", "username=eve&password=wrong").status == 503  # fails closed
    got_a = prometheus(a)
    # Every audit record (one per security event, one per sensitive operation) is shipped.
    events = sum(got_a["aura_guard_events"].values())
    records = events + 1
    wait_until(lambda: a.stats("wasmcustom.aura_guard.audit.records_shipped").get(
        "wasmcustom.aura_guard.audit.records_shipped") == records, 15, f"{records} records shipped")
    got_a = prometheus(a)

    # --- stack B: no body hold, no shipper ------------------------------------------------------
    b = stack_factory(name="b", env=env_for(sources=GITHUB), edit=no_shipper)
    d4 = body_for("github")
    p4, h4 = signed(b, "github", d4)
    assert b.request("POST", p4, headers=h4, body=d4, timeout=30).status == 503
    assert b.request("DELETE", "/api/v1/auth/users/8").status < 500
    got_b = prometheus(b)

    want_a = {
        "aura_guard_webhook": {series(source="github", outcome="verified"): 2,
                               series(source="github", outcome="replay"): 1,
                               series(source="github", outcome="invalid_signature"): 1},
        "aura_guard_versions_disabled": {series(version="v0"): 1},
        # /api/v1/items and the user deletion (/api/v1/auth/users/7).
        "aura_guard_versions_deprecated": {series(version="v1"): 2},
        "aura_guard_headers_stripped": {series(header="x-original-url"): 1},
        "aura_guard_audit_operations": {series(operation="user_delete"): 1},
        "aura_guard_ratelimit_allowed": {series(route="login"): 3},
        "aura_guard_ratelimit_failure_recorded": {series(route="login"): 3},
        "aura_guard_ratelimit_over_limit": {series(route="login", limit="ip"): 1},
        "aura_guard_ratelimit_service_failure": {series(route="login", mode="closed"): 1},
        "aura_guard_events": {series(event_type="webhook_validation_failure"): 2,
                              series(event_type="disabled_api_version_access"): 1,
                              series(event_type="repeated_auth_failures"): 1,
                              series(event_type="auth_rate_limit_exceeded"): 1,
                              series(event_type="rate_limit_service_failure"): 1},
        "aura_guard_local_replies": {series(status="401"): 2, series(status="410"): 1,
                                     series(status="429"): 1, series(status="503"): 1},
        "aura_guard_audit_enqueued": {series(): records},
        "aura_guard_audit_records_shipped": {series(): records},
        "envoy_wasm_vm_reload": {series(plugin=p, result=r): 0
                                 for p in ("aura-guard", "aura-guard-audit")
                                 for r in ("success", "failure", "backoff")}
                                | {series(plugin=p): 0 for p in ("aura-guard", "aura-guard-audit")},
    }
    want_b = {
        "aura_guard_body_hold_unavailable": {series(): 1},
        "aura_guard_audit_operations": {series(operation="user_delete"): 1},
        "aura_guard_audit_enqueue_failed": {series(): 1},
        "aura_guard_audit_dropped": {series(): 1},
    }
    wrong = {f"{where}: {name}": got.get(name)
             for where, got, wants in (("A", got_a, want_a), ("B", got_b, want_b))
             for name, want in wants.items() if got.get(name) != want}
    assert wrong == {}
    checked = set(want_a) | set(want_b)
    # Stack A's shipper: ticking, and its buffer empty once everything was shipped.
    assert got_a["aura_guard_audit_ticks"][series()] > 0
    assert got_a["aura_guard_audit_buffered"] == {series(): 0}
    checked |= TIMED
    # A lost nothing: no drop counted, so the metric is absent there.
    assert "aura_guard_audit_dropped" not in got_a
    for name, stat in NOT_CAUSED.items():
        src = open(os.path.join(ROOT, "crates/aura-guard-core/src/filter/audit.rs")).read()
        assert f'"{stat}"' in src, stat
        checked.add(name)
    # Every metric the rules and the dashboard use was checked, with every label they match on.
    assert set(used) - checked == set(), "queried but not checked"
    for name, labels in used.items():
        shown = [s for got in (got_a, got_b) for s in got.get(name, {})]
        if name not in NOT_CAUSED:
            assert any(labels <= {k for k, _ in s} for s in shown), (name, labels, shown)
