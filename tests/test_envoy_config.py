"""Envoy accepts every config in the repo, and refuses a bad plugin configuration with a line
that names the field."""
import glob
import json
import os
import subprocess

import pytest

from harness import ROOT, TEST_JWT_SECRET, Stack, clean_env, envoy_bin

CONFIGS = sorted(glob.glob(os.path.join(ROOT, "envoy", "**", "*.yaml"), recursive=True))
ENVOY_CONFIGS = [c for c in CONFIGS if "static_resources" in open(c).read()]


def test_repo_has_envoy_configs():
    assert os.path.join(ROOT, "envoy", "envoy.yaml") in ENVOY_CONFIGS


@pytest.mark.parametrize("path", ENVOY_CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_envoy_validates_config(path):
    # No ENVIRONMENT: the filter runs as production, which needs the JWT secret.
    r = subprocess.run([envoy_bin(), "--mode", "validate", "-c", path], cwd=ROOT,
                       capture_output=True, text=True,
                       env=clean_env({"JWT_SECRET_KEY": TEST_JWT_SECRET}), timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def validate_with_plugin_config(tmp_path, plugin_config, env=None):
    s = Stack(str(tmp_path), plugin_config=plugin_config)
    cfg = s.render(str(tmp_path / "bad.yaml"))
    return subprocess.run([envoy_bin(), "--mode", "validate", "-c", cfg], cwd=ROOT,
                          capture_output=True, text=True, env=clean_env(env), timeout=120)


def test_unknown_field_is_refused_naming_the_field(tmp_path):
    r = validate_with_plugin_config(tmp_path, {"headers": {"colour": "blue"}})
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-2000:]
    assert "invalid configuration: headers.colour: unknown field `colour`" in out, out[-3000:]


def test_malformed_json_is_refused(tmp_path):
    r = validate_with_plugin_config(tmp_path, '{"environment": ')
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "aura-guard: invalid configuration" in out, out[-3000:]


def test_bad_environment_variable_is_refused(tmp_path):
    r = validate_with_plugin_config(tmp_path, {}, env={"ENVIRONMENT": "prod"})
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "invalid configuration: ENVIRONMENT: unknown environment" in out, out[-3000:]


def test_running_envoy_refuses_to_start_with_a_bad_plugin_config(tmp_path):
    s = Stack(str(tmp_path), plugin_config=json.dumps({"environment": "nowhere"}))
    cfg = s.render(str(tmp_path / "bad.yaml"))
    r = subprocess.run([envoy_bin(), "-c", cfg, "--disable-hot-restart"], cwd=ROOT,
                       capture_output=True, text=True, env=clean_env(), timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "invalid configuration: environment: unknown variant `nowhere`" in out, out[-3000:]


# --- what the shipped configs must bound (docs/robustness.md, "Overload and slow clients") ----
SHIPPED = [os.path.join(ROOT, "envoy", "envoy.yaml"), os.path.join(ROOT, "deploy", "envoy.yaml")]


def load_yaml(path):
    import yaml
    with open(path) as f:
        return yaml.safe_load(f)


def seconds(duration):
    """An Envoy duration ("30s", "0.25s") in seconds."""
    assert isinstance(duration, str) and duration.endswith("s"), duration
    return float(duration[:-1])


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: os.path.relpath(p, ROOT))
def test_shipped_config_cuts_off_slow_clients(path):
    from harness import find_aura_hcm
    cfg = load_yaml(path)
    hcm = find_aura_hcm(cfg)
    route_timeouts = [seconds(r["route"]["timeout"])
                      for vh in hcm["route_config"]["virtual_hosts"] for r in vh["routes"]]
    # Envoy's defaults: no request timeout at all, 5 minutes of idle stream.
    assert 0 < seconds(hcm["request_headers_timeout"]) <= 30
    assert 0 < seconds(hcm["request_timeout"]) <= 60
    # Above the routes' upstream timeout, so a slow upstream gets its 504 rather than an idle
    # cut-off; well below the default.
    assert max(route_timeouts) < seconds(hcm["stream_idle_timeout"]) <= 60


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: os.path.relpath(p, ROOT))
def test_shipped_config_bounds_envoy_memory_with_the_overload_manager(path):
    om = load_yaml(path)["overload_manager"]
    monitors = {m["name"]: m["typed_config"] for m in om["resource_monitors"]}
    heap = monitors["envoy.resource_monitors.fixed_heap"]
    assert heap["@type"].endswith("fixed_heap.v3.FixedHeapConfig")
    assert 0 < int(heap["max_heap_size_bytes"])
    conns = monitors["envoy.resource_monitors.global_downstream_max_connections"]
    assert 0 < int(conns["max_active_downstream_connections"])
    thresholds = {a["name"]: [t["threshold"]["value"] for t in a["triggers"]
                              if t["name"] == "envoy.resource_monitors.fixed_heap"]
                  for a in om["actions"]}
    shrink = thresholds["envoy.overload_actions.shrink_heap"]
    stop = thresholds["envoy.overload_actions.stop_accepting_requests"]
    # Freed memory goes back to the OS before new requests are refused.
    assert len(shrink) == len(stop) == 1 and 0 < shrink[0] < stop[0] < 1, thresholds


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: os.path.relpath(p, ROOT))
@pytest.mark.parametrize("cluster", ["ratelimit", "audit_collector"])
def test_shipped_config_has_circuit_breakers_for_the_dependencies(path, cluster):
    clusters = {c["name"]: c for c in load_yaml(path)["static_resources"]["clusters"]}
    thresholds = clusters[cluster]["circuit_breakers"]["thresholds"]
    default = [t for t in thresholds if t.get("priority", "DEFAULT") == "DEFAULT"]
    assert len(default) == 1, thresholds
    for field in ("max_connections", "max_pending_requests", "max_requests", "max_retries"):
        assert field in default[0], (cluster, field)
    assert 0 < default[0]["max_requests"] <= 1024
