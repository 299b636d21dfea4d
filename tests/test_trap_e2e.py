"""What a trap costs, end to end through real Envoy (docs/robustness.md, "The suite").

The module never panics on purpose; to see what Envoy does when it does, these tests load a
test build (cargo feature `test-trap`, src/test_trap.rs) that panics when a request's
`x-aura-test-trap` header names the phase. It is built into target/test-trap/ and never into
the shipped module (scripts/build-wasm.sh refuses that). With `failure_policy: FAIL_RELOAD`
(envoy/envoy.yaml) the trapping request gets Envoy's 503 and never reaches the upstream, the
worker's VM is reloaded after a back-off during which requests get 503 (closed, never
unfiltered), and the filter then serves again."""
import os
import subprocess
import time

import pytest

from harness import ROOT, WASM
from test_webhook_e2e import body_for, deliver, env_for, sha

TRAP_TARGET = os.path.join(ROOT, "target", "test-trap")
TRAP_WASM = os.path.join(TRAP_TARGET, "wasm32-wasip1", "release", "aura_guard.wasm")
TRAP_HEADER = "x-aura-test-trap"
# The start of the panic message src/test_trap.rs formats: in the test build's data only.
TRAP_MESSAGE = b"aura-guard test trap in "
PROD = env_for(["github"])


@pytest.fixture(scope="module")
def trap_wasm():
    r = subprocess.run(["bash", "scripts/build-wasm.sh", "-p", "aura-guard", "--features",
                        "test-trap", "--target-dir", TRAP_TARGET],
                       cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return TRAP_WASM


def vm(s):
    """The filter's VM counters (`wasm.aura-guard.vm_reload*`) and VMs created."""
    c = s.vm_counters()
    return {k.rsplit(".", 1)[-1]: v for k, v in c.items() if k.startswith("wasm.aura-guard.")} | {
        "created": c.get("wasm.envoy.wasm.runtime.v8.created", 0)}


def served_again(s, timeout=20):
    """Polls until the reloaded VM serves a ping. Meanwhile nothing is served unfiltered: a
    debug endpoint gets 503 (no VM) or the filter's 404, never the upstream's 200."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        debug = s.request("GET", "/debug/token")
        assert debug.status in (503, 404), debug
        ping = s.request("GET", "/api/v2/ping")
        assert ping.status in (503, 200), ping
        if ping.status == 200:
            return ping
        time.sleep(0.1)
    raise AssertionError(f"the filter did not serve again within {timeout} s: {vm(s)}")


def assert_filtering(s):
    """The filter runs (not a pass-through): its headers on a ping, its 404 on debug."""
    ping = s.request("GET", "/api/v2/ping")
    assert ping.status == 200 and ping.header("x-frame-options") == "DENY", ping
    assert ping.header("x-request-id"), ping
    debug = s.request("GET", "/debug/token")
    assert (debug.status, debug.json()) == (404, {"detail": "Not found"}), debug


def test_the_shipped_module_has_no_test_trap():
    with open(WASM, "rb") as f:
        assert TRAP_HEADER.encode() not in f.read()


def test_the_shipped_module_has_no_test_trap_panic_message(trap_wasm):
    # The test build holds the message, so the search would find it in a module that had it.
    with open(trap_wasm, "rb") as f:
        assert TRAP_MESSAGE in f.read(), f"{trap_wasm} lost the panic message: fix TRAP_MESSAGE"
    with open(WASM, "rb") as f:
        assert TRAP_MESSAGE not in f.read(), f"{WASM} holds the test-trap panic message"


@pytest.mark.traps_on_purpose
def test_a_trap_in_the_request_headers_gets_503_then_the_vm_is_reloaded_and_serves(
        stack_factory, trap_wasm):
    s = stack_factory(env=PROD, wasm=trap_wasm)
    assert_filtering(s)
    before = vm(s)
    r = s.request("GET", "/api/v2/ping?trapped=1", headers={TRAP_HEADER: "request_headers"})
    # Envoy's own answer for a failed stream (FAIL_RELOAD), not the upstream's.
    assert r.status == 503, r
    log = s.envoy_log()
    assert "aura-guard panic: panicked at src/test_trap.rs" in log, log[-3000:]
    assert "proxy_on_request_headers failed: Uncaught RuntimeError" in log
    served_again(s)
    assert_filtering(s)
    after = vm(s)
    assert after["vm_reload_success"] == before["vm_reload_success"] + 1, (before, after)
    assert after["vm_reload_failure"] == 0, after
    assert after["created"] == before["created"] + 1, (before, after)
    # The trapping request and every debug request while the VM was down stayed here.
    paths = [q["path"] for q in s.upstream_requests()]
    assert not [p for p in paths if "trapped" in p or p.startswith("/debug")], paths


@pytest.mark.traps_on_purpose
def test_a_trap_while_a_webhook_body_is_held_never_forwards_it_and_a_redelivery_passes(
        stack_factory, trap_wasm):
    s = stack_factory(env=PROD, wasm=trap_wasm)
    body = body_for("github")
    r = deliver(s, "github", body, headers={TRAP_HEADER: "request_body"})
    assert r.status == 503, r
    assert "aura-guard panic: panicked at src/test_trap.rs" in s.envoy_log()
    # The held delivery was never forwarded, verified or not.
    assert s.upstream_requests() == []
    served_again(s)
    # The provider's retry of the same delivery passes once the VM is back: the trap recorded
    # no replay key.
    r = deliver(s, "github", body)
    assert r.status == 200, r
    webhooks = [q for q in s.upstream_requests() if q["path"].startswith("/webhooks/")]
    assert [q["body_sha256"] for q in webhooks] == [sha(body)], webhooks
    assert vm(s)["vm_reload_success"] == 1
