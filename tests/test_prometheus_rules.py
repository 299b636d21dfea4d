"""deploy/prometheus/aura-guard.rules.yml checked by promtool (Debian's prometheus package,
scripts/setup.sh step_promtool): `promtool check rules`, then its unit tests
(aura-guard.rules.test.yml) with `promtool test rules`. Every alert must have a test that fires
it and one that keeps it silent (docs/metrics.md, "Alerts"), and the tests must be able to
fail: with every alert's expression made never-true, promtool must report failures."""
import os
import shutil
import subprocess

import pytest
import yaml

from harness import ROOT

PROM = os.path.join(ROOT, "deploy", "prometheus")
RULES = os.path.join(PROM, "aura-guard.rules.yml")
TESTS = os.path.join(PROM, "aura-guard.rules.test.yml")


def promtool():
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: run scripts/setup.sh promtool (make test does)")
    return path


def run(*args, cwd=PROM):
    return subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def alerts():
    with open(RULES) as f:
        return {r["alert"]: r for g in yaml.safe_load(f)["groups"] for r in g["rules"]}


def test_rules_pass_promtool_check():
    r = run("check", "rules", RULES)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in r.stdout, r.stdout


def test_rule_unit_tests_pass():
    r = run("test", "rules", TESTS)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_every_alert_has_a_firing_and_a_silent_test():
    with open(TESTS) as f:
        suite = yaml.safe_load(f)
    fired, silent = set(), set()
    for t in suite["tests"]:
        for a in t.get("alert_rule_test", []):
            (fired if a.get("exp_alerts") else silent).add(a["alertname"])
    names = set(alerts())
    assert names - fired == set(), "alerts without a test that fires them"
    assert names - silent == set(), "alerts without a test that keeps them silent"
    assert (fired | silent) - names == set(), "tests of alerts that do not exist"


def test_the_unit_tests_fail_when_no_alert_can_fire(tmp_path):
    """The firing tests are real: the same suite against rules that never fire fails once per
    firing test."""
    with open(RULES) as f:
        rules = yaml.safe_load(f)
    for g in rules["groups"]:
        for r in g["rules"]:
            r["expr"] = "vector(0) > 1"
    with open(tmp_path / "aura-guard.rules.yml", "w") as f:
        yaml.safe_dump(rules, f)
    shutil.copy(TESTS, tmp_path / "aura-guard.rules.test.yml")
    r = run("test", "rules", "aura-guard.rules.test.yml", cwd=str(tmp_path))
    assert r.returncode != 0, r.stdout
    with open(TESTS) as f:
        firing = [a for t in yaml.safe_load(f)["tests"] for a in t["alert_rule_test"]
                  if a.get("exp_alerts")]
    out = r.stdout + r.stderr
    for a in firing:
        assert f"alertname: {a['alertname']}" in out, a["alertname"]
