"""Never trap, never lose silently (docs/robustness.md), end to end through real Envoy.

A collector that sends its response head and then resets the connection made Envoy call the
shipper back with no response (`onHttpCallFailure`); the SDK then panicked reading the header
map ("unexpected status: 2"), the shipper's singleton VM trapped, and no record was shipped
again until Envoy restarted. Every e2e test also runs under conftest.py's `no_trap` check."""
import http.server
import os
import threading
import time
import types

from harness import Collector, Stack, free_port, wait_until
from test_audit_e2e import AUDIT_ENV, FAST, refund, wait_records


class ResettingCollector:
    """Listens on the collector's port and answers each POST with a 200 head announcing
    100 bytes, sends one (`{`) and closes: Envoy sees the upstream reset mid-body."""

    def __init__(self, port):
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", 0)))
                fake.posts += 1
                self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                 b"content-length: 100\r\n\r\n{")
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.posts = 0
        self.server = http.server.HTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        if self.thread.is_alive():
            self.server.shutdown()
            self.thread.join(timeout=5)
        self.server.server_close()


def refunds(s, first, n, pause=0.0):
    """Refunds `first` .. `first + n - 1` (each audited), `pause` s apart; the next number."""
    for i in range(first, first + n):
        assert refund(s, i).status == 200
        time.sleep(pause)
    return first + n


def test_a_collector_reset_after_its_response_head_is_retried_without_a_trap(stack_factory,
                                                                              log_dir):
    port = free_port()
    fake = ResettingCollector(port)
    collector = Collector(os.path.join(log_dir, "collector"), port=port)
    try:
        s = stack_factory(env=dict(AUDIT_ENV), collector_port=port, audit_config=FAST)
        sent = refunds(s, 0, 5)
        # The first batch reaches the fake collector and is cut mid-answer.
        wait_until(lambda: fake.posts >= 1, 10, "the shipper's POST to the resetting collector")
        fake.close()
        collector.start()
        sent = refunds(s, sent, 5, pause=0.2)
        # The cut batch is retried: every record arrives, exactly once, in order.
        recs = wait_records(collector, sent, timeout=30)
        assert len(recs) == sent, recs
        assert sorted(r["request_id"] for r in recs) == sorted(f"refund-{i}"
                                                              for i in range(sent))
        assert [r["seq"] for r in recs] == list(range(1, sent + 1))
        assert len({r["id"] for r in recs}) == sent
        assert len(collector.db_rows()) == sent
        v = collector.run("verify")
        assert v.returncode == 0, v.stdout + v.stderr
        s.wait_stat("wasmcustom.aura_guard.audit.records_shipped", sent)
        stats = s.stats("wasmcustom.aura_guard.audit")
        assert stats.get("wasmcustom.aura_guard.audit.batches_failed", 0) >= 1, stats
        assert stats.get("wasmcustom.aura_guard.audit.dropped", 0) == 0, stats
        # Said here too (conftest's no_trap says it again after the teardown).
        assert s.trap_report() == []
        assert "batch failed (no answer (timeout, reset or unreachable))" in s.envoy_log()
    finally:
        fake.close()
        collector.stop()


def test_the_no_trap_check_reports_a_panic_line_and_vm_counters_that_moved(tmp_path):
    # The check itself (harness.Stack.trap_report), on a stopped stack's log and counters.
    s = Stack(str(tmp_path))
    log = tmp_path / "envoy.log"
    log.write_text("[info] all fine\n")
    s.envoy = types.SimpleNamespace(log=str(log), alive=lambda: False)
    created = "wasm.envoy.wasm.runtime.v8.created"
    reload = "wasm.aura-guard.vm_reload"
    s.vm_ready = {created: 5, reload: 0}
    s.vm_stopped = {created: 5, reload: 0}
    assert s.trap_report() == []

    s.vm_stopped = {created: 6, reload: 1}
    assert s.trap_report() == [f"{reload}: 0 when ready, 1 after the test",
                               f"{created}: 5 when ready, 6 after the test"]

    s.vm_stopped = dict(s.vm_ready)
    log.write_text(
        "[critical] wasm log aura-guard-audit: aura-guard panic: panicked at "
        "proxy-wasm-0.2.5/src/hostcalls.rs:267:23: unexpected status: 2\n"
        "[error] Function: proxy_on_http_call_response failed: Uncaught RuntimeError: "
        "unreachable\n")
    report = s.trap_report()
    assert len(report) == 2 and all(r.startswith("envoy log: ") for r in report), report

    # After a hot restart (tests/test_faults_e2e.py) every epoch's log is read: a panic in the
    # old Envoy's counts.
    new_log = tmp_path / "envoy-epoch1.log"
    new_log.write_text("[info] all fine\n")
    s.envoy_logs = [str(log), str(new_log)]
    s.envoy = types.SimpleNamespace(log=str(new_log), alive=lambda: False)
    report = s.trap_report()
    assert len(report) == 2 and all(r.startswith("envoy log (epoch 0): ") for r in report), \
        report
