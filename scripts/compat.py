#!/usr/bin/env python3
"""`make test-compat`: a few of the existing tests, under each Envoy release the project supports
(.envoy-compat-versions; `scripts/setup.sh compat` installs each in .tools/envoy-<version>/).

The tests pick the binary from AURA_ENVOY_BIN (scripts/aura_common.py envoy_bin). For every
version this runs the CHECKS below in one pytest process, reads the outcome of each from pytest's
JUnit XML, and writes a table (check x version, with the exact failure) to
logs/compat/latest.md and .json; --write also puts it into docs/compatibility.md between its
markers. Exits 1 when any check failed under any version.

Usage: compat.py [--write] [VERSION ...]   (default: every version in .envoy-compat-versions)
"""
import argparse
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from aura_common import ROOT  # noqa: E402

# (check, pytest node id): config validation, then the short end-to-end subset. Each is an
# existing test, so the default Envoy runs it in `make test` already;
# tests/test_compat.py fails when one of these ids stops naming a test.
CHECKS = [
    ("validate envoy/envoy.yaml",
     "tests/test_envoy_config.py::test_envoy_validates_config[envoy/envoy.yaml]"),
    ("validate deploy/envoy.yaml (production)",
     "tests/test_deploy.py::test_deploy_envoy_config_passes_envoy_validate[production]"),
    ("security headers on a plain request (production)",
     "tests/test_headers_e2e.py::test_headers_per_environment[production-True-True]"),
    ("signed webhook accepted, tampered one refused (github)",
     "tests/test_webhook_e2e.py::"
     "test_valid_delivery_reaches_the_upstream_exactly_and_invalid_never[github]"),
    ("login limit: 6th attempt refused (envoyproxy/ratelimit + Redis)",
     "tests/test_ratelimit_e2e.py::test_seed_ten_logins_first_five_pass_then_429"),
    ("audit record reaches the collector (file + SQLite)",
     "tests/test_audit_e2e.py::test_refund_is_recorded_sanitised_in_file_and_sqlite"),
]
VERSIONS_FILE = os.path.join(ROOT, ".envoy-compat-versions")
OUT_DIR = os.path.join(ROOT, "logs", "compat")
DOC = os.path.join(ROOT, "docs", "compatibility.md")
BEGIN, END = "<!-- compat-results:begin -->", "<!-- compat-results:end -->"


def supported_versions():
    with open(VERSIONS_FILE) as f:
        return [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]


def envoy_path(version):
    return os.path.join(ROOT, ".tools", f"envoy-{version}", "bin", "envoy")


def junit_outcomes(path):
    """{node id: (outcome, message)} from pytest's JUnit XML."""
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        # classname "tests.test_x" (or "test_x"), name "test_y[param]".
        mod = case.get("classname", "").split(".")[-1]
        node = f"tests/{mod}.py::{case.get('name')}"
        outcome, msg = "pass", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = {"failure": "FAIL", "error": "ERROR", "skipped": "skip"}[tag]
                msg = ((el.get("message") or "") + "\n" + (el.text or "")).strip()
                break
        out[node] = (outcome, msg)
    return out


def run_version(version):
    binary = envoy_path(version)
    res = {"version": version, "binary": binary, "checks": {}}
    try:
        res["envoy_version"] = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    except OSError as e:
        res["envoy_version"] = ""
        for name, _ in CHECKS:
            res["checks"][name] = ("not run", f"{binary}: {e} (run scripts/setup.sh compat)")
        return res
    m = re.search(r"/(\d+\.\d+\.\d+)/", res["envoy_version"])
    if not m or m.group(1) != version:
        raise SystemExit(f"compat: {binary} reports {res['envoy_version']!r}, not {version}")
    os.makedirs(OUT_DIR, exist_ok=True)
    xml = os.path.join(OUT_DIR, f"envoy-{version}.xml")
    if os.path.exists(xml):
        os.remove(xml)
    env = dict(os.environ, AURA_ENVOY_BIN=binary)
    cmd = [os.path.join(ROOT, ".venv", "bin", "python"), "-m", "pytest", "-p", "no:cacheprovider",
           "-q", "-rfE", f"--junitxml={xml}", *[node for _, node in CHECKS]]
    print(f"compat: Envoy {version}: {' '.join(cmd[3:7])} ... (AURA_ENVOY_BIN={binary})",
          flush=True)
    subprocess.run(cmd, cwd=ROOT, env=env)
    outcomes = junit_outcomes(xml) if os.path.exists(xml) else {}
    for name, node in CHECKS:
        res["checks"][name] = outcomes.get(node, ("not run", f"pytest did not report {node}"))
    return res


# In a failure's text, the line that says why: Envoy's own error (timestamp dropped), else the
# assertion's first line.
ENVOY_ERROR = re.compile(r"^.*?\]\[(?:warning|error|critical)\]\[(?:wasm|main|config)\] \[[^]]*\] ?(.*)$")


def first_line(msg, limit=300):
    lines = [ln.strip() for ln in msg.splitlines() if ln.strip()]
    why = next((m.group(1) for ln in lines if (m := ENVOY_ERROR.match(ln))), None)
    line = why or (lines[0] if lines else "")
    return line if len(line) <= limit else line[:limit] + " ..."


def table(results):
    lines = ["| check | " + " | ".join(r["version"] for r in results) + " |",
             "|---|" + "---|" * len(results)]
    for name, _ in CHECKS:
        lines.append(f"| {name} | " + " | ".join(r["checks"][name][0] for r in results) + " |")
    failures = [(r["version"], name, msg) for r in results
                for name, (outcome, msg) in r["checks"].items() if outcome != "pass"]
    lines.append("")
    lines.append("Binaries: " + "; ".join(
        f"{r['version']}: `{first_line(r['envoy_version']).split('version: ')[-1]}`"
        for r in results) + ".")
    if failures:
        lines += ["", "Failures, as pytest reported them:", ""]
        lines += [f"- {v}, {name}: `{first_line(msg)}`" for v, name, msg in failures]
    return "\n".join(lines) + "\n"


def write_doc(md):
    with open(DOC) as f:
        text = f.read()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"compat: {DOC} lacks the markers {BEGIN} ... {END}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(DOC, "w") as f:
        f.write(f"{head}{BEGIN}\n{md}{END}{tail}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="put the table into " + DOC)
    ap.add_argument("versions", nargs="*", help="default: .envoy-compat-versions")
    args = ap.parse_args()
    results = [run_version(v) for v in (args.versions or supported_versions())]
    md = table(results)
    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, "latest.md"), "w") as f:
        f.write(md)
    with open(os.path.join(OUT_DIR, "latest.json"), "w") as f:
        json.dump(results, f, indent=2)
    if args.write:
        write_doc(md)
    print("\n" + md)
    bad = any(o != "pass" for r in results for o, _ in r["checks"].values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
