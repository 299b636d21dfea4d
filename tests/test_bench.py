"""Smoke test of `make bench` (bench/run.py): with a tiny duration it starts every case's Envoy,
drives each with wrk and writes a result row per case. It checks that the harness works, never
how fast anything is: no timing or throughput assertions."""
import json
import os
import subprocess
import sys

from harness import COLLECTOR_BIN, ROOT, WASM

BENCH = os.path.join(ROOT, "bench", "run.py")


def case_ids():
    out = subprocess.run([sys.executable, BENCH, "--list"], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def test_bench_lists_the_comparison_cases():
    ids = case_ids()
    for want in ("bare", "noop-wasm", "lua-headers", "native-ratelimit", "aura-headers",
                 "aura-ratelimit", "bare-webhook", "aura-webhook", "bare-webhook-1m",
                 "aura-webhook-1m", "aura-webhook-unsigned-1m", "wasm-hmac-1m", "bare-audit",
                 "aura-audit", "wasm-floor", "native-headers"):
        assert want in ids


def test_bench_runs_every_case_and_writes_a_row_for_each(tmp_path):
    # Cheap mode: one round of one second per case, no warm-up, few connections; the audit
    # case ships to the debug collector `make build` builds (the bench's default is release).
    r = subprocess.run([sys.executable, BENCH, "--duration", "1", "--rounds", "1", "--warmup", "0",
                        "--connections", "2", "--out-dir", str(tmp_path),
                        "--collector", COLLECTOR_BIN],
                       capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with open(tmp_path / "latest.json") as f:
        result = json.load(f)
    rows = {row["id"]: row for row in result["cases"]}
    assert list(rows) == case_ids()
    assert result["upstream"].startswith("direct_response")
    for cid, row in rows.items():
        # Every stage ran: nothing was skipped or failed.
        assert "skipped" not in row and "failed" not in row, row
        assert row["rounds"] == 1
        assert row["requests"] > 0, row  # traffic flowed; how much is not the test's business
        assert row["socket_errors"] == 0, row
        if row["expect"] == "2xx":
            assert row["non_2xx"] == 0, row
        else:  # the unsigned flood: every answer is the expected refusal, and says so
            assert row["unexpected_status"] == 0 and row["non_2xx"] == row["requests"], row
        assert row["ratio"] is not None
        for key in ("rps_median", "p99_ms_median"):
            assert isinstance(row[key], float)
    # The Envoy ratelimit filter really called the service for every request.
    assert rows["native-ratelimit"]["rls_calls_per_request"] > 0.9
    # The 1 MiB cases report body MB/s, and the signed one its ratio to the raw in-wasm HMAC.
    for cid in ("bare-webhook-1m", "aura-webhook-1m", "aura-webhook-unsigned-1m",
                "wasm-hmac-1m"):
        assert rows[cid]["body_mb_s"] > 0, rows[cid]
    assert rows["aura-webhook-1m"]["vs_raw_hmac"] > 0
    assert rows["aura-webhook-unsigned-1m"]["expect"] == "401"
    # Every audited request's record reached the collector: counted by the filter, stored in
    # SQLite after the drain, nothing dropped, and the chain verifies.
    audit = rows["aura-audit"]
    assert audit["audited_requests"] >= audit["requests"] > 0, audit
    assert audit["records_stored"] == audit["audited_requests"], audit
    assert audit["records_delivered_ratio"] == 1.0, audit
    assert audit["records_dropped"] == 0 and audit["unaccounted"] == 0, audit
    assert audit["verify"].endswith(" 0 problems"), audit
    md = (tmp_path / "latest.md").read_text()
    for row in rows.values():
        assert row["label"] in md
    assert "records_delivered_ratio **1.0000**" in md, md
    # The chart is drawn and the table links it.
    assert (tmp_path / "latest.png").stat().st_size > 0
    assert (tmp_path / "latest.svg").stat().st_size > 0
    assert "](latest.png)" in md, md


def test_a_chart_that_cannot_be_drawn_leaves_the_results_and_exit_status_alone(tmp_path):
    # matplotlib made unimportable for the bench's process: the chart fails, nothing else.
    blocker = tmp_path / "nomatplotlib"
    blocker.mkdir()
    (blocker / "matplotlib.py").write_text("raise ImportError('matplotlib blocked by the test')\n")
    env = dict(os.environ, PYTHONPATH=str(blocker))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, BENCH, "--duration", "1", "--rounds", "1", "--warmup", "0",
                        "--connections", "2", "--out-dir", str(out), "--cases", "bare"],
                       capture_output=True, text=True, timeout=240, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "bench: chart not drawn: ImportError: matplotlib blocked by the test" in r.stderr
    assert not (out / "latest.png").exists()
    md = (out / "latest.md").read_text()
    assert "bare Envoy" in md and "latest.png" not in md, md


def test_a_stage_that_did_not_run_fails_the_bench_naming_why(tmp_path):
    # The aura-guard cases given the no-op module (it accepts any configuration and does
    # nothing): no security header is set, an unsigned webhook passes, no rate-limit call is
    # made, no audit record is built. Each is a failure.
    noop = os.path.join(os.path.dirname(WASM), "noop_filter.wasm")
    r = subprocess.run([sys.executable, BENCH, "--duration", "1", "--rounds", "1", "--warmup", "0",
                        "--connections", "2", "--out-dir", str(tmp_path), "--aura-wasm", noop,
                        "--collector", COLLECTOR_BIN,
                        "--cases",
                        "aura-headers,aura-ratelimit,aura-webhook,aura-webhook-unsigned-1m,"
                        "aura-audit"],
                       capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    assert ("bench: FAILED aura-webhook: an unsigned probe request got 200: the stage does not "
            "verify this route") in r.stderr, r.stderr[-3000:]
    assert "bench: FAILED aura-ratelimit: no rate-limit service calls in " in r.stderr, \
        r.stderr[-3000:]
    assert "bench: FAILED aura-webhook-unsigned-1m: an unsigned probe request got 200" \
        in r.stderr, r.stderr[-3000:]
    assert "bench: FAILED aura-audit: no audit records built in " in r.stderr, r.stderr[-3000:]
    assert ("bench: FAILED aura-headers: the response lacks x-content-type-options, "
            "x-frame-options") in r.stderr, r.stderr[-3000:]
    # The results are still written, each failure stated.
    md = (tmp_path / "latest.md").read_text()
    assert md.count("- FAILED ") == 5, md
    # The flood's answers were all 200, none the expected 401: each counted as unexpected.
    with open(tmp_path / "latest.json") as f:
        flood = {r["id"]: r for r in json.load(f)["cases"]}["aura-webhook-unsigned-1m"]
    assert flood["unexpected_status"] == flood["requests"] > 0, flood


def test_each_wrk_run_logs_in_as_new_clients_so_no_round_measures_refusals(tmp_path):
    # Six runs of the login case (three rounds, before and after): the per-IP limit allows five
    # tries in five minutes, so clients that came back in every run would be refused in the
    # sixth, and the bench would measure refusals. Each run gets clients of its own.
    r = subprocess.run([sys.executable, BENCH, "--duration", "1", "--rounds", "3", "--warmup", "0",
                        "--connections", "2", "--out-dir", str(tmp_path), "--cases",
                        "aura-ratelimit", "--compare-wasm", WASM],
                       capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with open(tmp_path / "latest.json") as f:
        rows = {row["id"]: row for row in json.load(f)["cases"]}
    for cid in ("aura-ratelimit", "aura-ratelimit-before"):
        assert rows[cid]["requests"] > 0 and rows[cid]["non_2xx"] == 0, rows[cid]
        assert "failed" not in rows[cid], rows[cid]
