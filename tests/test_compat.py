"""The Envoy version matrix's plumbing (docs/compatibility.md), cheaply: the tests pick the Envoy
binary from AURA_ENVOY_BIN, every check `make test-compat` runs still names an existing test,
and the README's minimum Envoy and the recorded table match .envoy-compat-versions. The matrix
itself (each Envoy running those tests) is `make test-compat`, not part of `make test`."""
import os
import re
import subprocess
import sys

from harness import ROOT

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import aura_common  # noqa: E402
import compat  # noqa: E402


def test_envoy_bin_is_aura_envoy_bin_when_set(monkeypatch):
    monkeypatch.setenv("AURA_ENVOY_BIN", "/opt/envoy-x/bin/envoy")
    assert aura_common.envoy_bin() == "/opt/envoy-x/bin/envoy"
    r = subprocess.run(["bash", "-c", f'ROOT={ROOT}; . {ROOT}/scripts/lib.sh; envoy_bin'],
                       capture_output=True, text=True, env=dict(os.environ), check=True)
    assert r.stdout.strip() == "/opt/envoy-x/bin/envoy"
    monkeypatch.delenv("AURA_ENVOY_BIN")
    assert aura_common.envoy_bin() != "/opt/envoy-x/bin/envoy"


def test_every_compat_check_names_one_existing_test():
    nodes = [node for _, node in compat.CHECKS]
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                        "-p", "no:cacheprovider", *nodes], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    collected = [ln.strip() for ln in r.stdout.splitlines() if "::" in ln]
    assert sorted(collected) == sorted(nodes), r.stdout


def test_the_default_envoy_is_one_the_matrix_runs():
    with open(os.path.join(ROOT, ".envoy-version")) as f:
        assert f.read().strip() in compat.supported_versions()


def test_readme_minimum_is_the_oldest_envoy_the_matrix_runs():
    oldest = min(compat.supported_versions(), key=lambda v: tuple(map(int, v.split("."))))
    minor = ".".join(oldest.split(".")[:2])
    with open(os.path.join(ROOT, "README.md")) as f:
        claims = re.findall(r"Envoy ≥ (\d+\.\d+)", f.read())
    assert claims and set(claims) == {minor}, (claims, oldest)


def test_compatibility_doc_has_a_result_column_per_version():
    with open(compat.DOC) as f:
        text = f.read()
    table = text.split(compat.BEGIN, 1)[1].split(compat.END, 1)[0]
    header = table.strip().splitlines()[0]
    assert [c.strip() for c in header.strip("|").split("|")][1:] == compat.supported_versions()
    for name, _ in compat.CHECKS:
        assert f"| {name} |" in table, name
