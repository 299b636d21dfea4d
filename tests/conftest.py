import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import ROOT, WASM, Fleet, Stack, start_ratelimit_service  # noqa: E402


# A test that makes a wasm VM trap on purpose (a test build of the module) says so with this
# marker; `no_trap` then requires the trap it announced instead of refusing it.
TRAPS_ON_PURPOSE = "traps_on_purpose"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", f"{TRAPS_ON_PURPOSE}: the test makes a wasm VM trap on purpose "
                   "(tests/test_trap_e2e.py); the no-trap check requires that trap instead")


def pytest_sessionstart(session):
    if not os.path.exists(WASM):
        pytest.exit(f"{WASM} is missing: run `make build` (make test does it)", returncode=2)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture(autouse=True)
def no_trap(request):
    """Every test: no Envoy it started trapped a wasm VM. After the test (its traffic done and
    its stacks stopped, each Stack reading its counters just before), Envoy's log has no panic
    or RuntimeError, and no VM was created or reloaded after Envoy became ready
    (docs/robustness.md). A test marked `traps_on_purpose` must show a trap instead."""
    first = len(harness.STARTED)
    yield
    stacks = harness.STARTED[first:]
    del harness.STARTED[first:]
    problems = [f"{s.envoy.log}: {p}" for s in stacks for p in s.trap_report()]
    if request.node.get_closest_marker(TRAPS_ON_PURPOSE) is not None:
        if not problems:
            pytest.fail(f"marked {TRAPS_ON_PURPOSE}, but no wasm VM trapped", pytrace=False)
    elif problems:
        pytest.fail("a wasm VM trapped:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture
def log_dir(request, tmp_path):
    yield str(tmp_path)
    failed = any(getattr(request.node, "rep_" + w, None) is not None and
                 getattr(request.node, "rep_" + w).failed for w in ("setup", "call"))
    if failed:
        keep = os.path.join(ROOT, "logs", "e2e", request.node.name.replace("/", "_"))
        shutil.rmtree(keep, ignore_errors=True)
        shutil.copytree(str(tmp_path), keep, dirs_exist_ok=True)
        print(f"\nlogs kept in {keep}")


@pytest.fixture
def stack_factory(log_dir):
    """Builds and starts stacks; every process is stopped at teardown."""
    stacks = []

    def make(**kw):
        name = kw.pop("name", f"stack{len(stacks)}")
        s = Stack(os.path.join(log_dir, name), **kw)
        stacks.append(s)
        return s.start()

    yield make
    for s in stacks:
        s.stop()


@pytest.fixture
def ratelimit_factory(log_dir):
    """Starts Redis + envoyproxy/ratelimit with the YAML for a `ratelimit` config section;
    every process is stopped at teardown."""
    services = []

    def make(ratelimit_config=None, name=None):
        d = os.path.join(log_dir, name or f"rls{len(services)}")
        svc = start_ratelimit_service(d, ratelimit_config)
        services.append(svc)
        return svc

    yield make
    for svc in services:
        svc.stop()


@pytest.fixture
def fleet_factory(log_dir):
    """Builds and starts fleets (harness.Fleet: N Envoys sharing one rate-limit service and one
    collector); every process is stopped at teardown."""
    fleets = []

    def make(n=3, name=None, start_kw=None, **kw):
        f = Fleet(os.path.join(log_dir, name or f"fleet{len(fleets)}"), n=n, **kw)
        fleets.append(f)
        return f.start(**(start_kw or {}))

    yield make
    for f in fleets:
        f.stop()
