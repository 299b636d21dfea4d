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
