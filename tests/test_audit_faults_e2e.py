"""Dependency faults of the audit pipeline, end to end, under steady load: real Envoy with the
built module, the real aura-collector (SQLite, or a real PostgreSQL), and faults made the way
they happen: a collector answering 500/401/400/503 or resetting after its response head (a
small stand-in in front of the real collector), a full disk (RLIMIT_FSIZE on the collector),
PostgreSQL stopped and then hung (SIGSTOP). docs/audit.md §1, §4, §9.4; docs/robustness.md.
Every test also runs under conftest.py's `no_trap` check."""
import http.client
import http.server
import json
import os
import resource
import signal
import subprocess
import tempfile
import threading
import time

import pytest

from harness import ROOT, Collector, free_port, wait_until
# `collector`: the real collector (files + SQLite), a fixture shared with test_audit_e2e.py.
from test_audit_e2e import AUDIT_ENV, FAST, collector  # noqa: F401

AUDIT = "wasmcustom.aura_guard.audit."
# Small bounds so a poison batch is given up quickly; the flush keeps batches small.
FAULT_CFG = dict(FAST, max_attempts=3)
POISON = "poison"


def refund(s, rid):
    return s.request("POST", f"/api/v1/payments/refund?n={rid}",
                     headers={"content-type": "application/json", "x-request-id": rid},
                     body=json.dumps({"amount": 10, "card_token": "tok_x"}))


class Load:
    """Steady audited traffic: refunds `<prefix>-0`, `<prefix>-1`, ... from a thread, about
    `rate` a second, until stopped. `ok` holds the request ids answered 200 (each left one
    record); a request that failed fails the test at `stop`."""

    def __init__(self, stack, prefix="load", rate=20):
        self.stack, self.prefix, self.pause = stack, prefix, 1.0 / rate
        self.ok, self.errors = [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        n = 0
        while not self._stop.is_set():
            rid = f"{self.prefix}-{n}"
            n += 1
            try:
                r = refund(self.stack, rid)
                (self.ok if r.status == 200 else self.errors).append(rid if r.status == 200
                                                                     else (rid, r.status))
            except OSError as e:
                self.errors.append((rid, repr(e)))
            time.sleep(self.pause)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=30)
        # Shipping never delays or fails the request it records.
        assert self.errors == [], self.errors[:5]
        assert self.ok, "no load went through"
        return list(self.ok)


class FaultProxy:
    """A stand-in on the collector's address that forwards each POST to the real collector,
    except the batches `fault(body, n)` picks (n: how many times this proxy has seen a batch
    holding the poison record before), which it answers itself: `("status", code)` with a JSON
    body, or `("reset",)`: a 200 head announcing 100 bytes, one byte, and the connection
    closed (Envoy then calls the shipper back with no answer)."""

    def __init__(self, port, collector, fault):
        proxy = self
        self.collector, self.fault = collector, fault
        self.poison_posts = []  # the bodies of the batches that held the poison record
        self.lock = threading.Lock()
        # Slow: every batch is forwarded (so the collector stores it), but its answer is held
        # for this many seconds and then the connection closed: the shipper times out.
        self.hold_s = 0
        self.chained = 0  # the highest x-aura-audit-chained forwarded

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with proxy.lock:
                    hold = proxy.hold_s
                    proxy.chained = max(proxy.chained,
                                        int(self.headers.get("x-aura-audit-chained", 0)))
                if hold:
                    self.forward(body, answer=False)
                    time.sleep(hold)
                    self.close_connection = True
                    return
                action = None
                if f'"request_id":"{POISON}"'.encode() in body:
                    with proxy.lock:
                        action = proxy.fault(body, len(proxy.poison_posts))
                        proxy.poison_posts.append(body)
                if action is None:
                    return self.forward(body)
                if action[0] == "reset":
                    self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                     b"content-length: 100\r\n\r\n{")
                    self.close_connection = True
                    return
                data = json.dumps({"error": f"injected {action[1]}"}).encode()
                self.send_response(action[1])
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def forward(self, body, answer=True):
                conn = http.client.HTTPConnection("127.0.0.1", proxy.collector.port, timeout=30)
                try:
                    conn.request("POST", self.path, body=body, headers={
                        k: self.headers[k]
                        for k in ("authorization", "content-type", "x-aura-audit-chained")
                        if self.headers.get(k)})
                    r = conn.getresponse()
                    data = r.read()
                except OSError:
                    self.close_connection = True  # no answer: the shipper retries
                    return
                finally:
                    conn.close()
                if not answer:
                    return
                self.send_response(r.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def posts(self):
        with self.lock:
            return list(self.poison_posts)

    def close(self):
        if self.thread.is_alive():
            self.server.shutdown()
            self.thread.join(timeout=5)
        self.server.server_close()


def stats(s):
    return {k[len(AUDIT):]: v for k, v in s.stats(AUDIT).items()}


def stored(collector):
    return collector.lines()


def request_ids(lines):
    return [r["request_id"] for r in lines if r["kind"] == "operation"]


def wait_stored(collector, rids, timeout=60):
    """Waits until every request id in `rids` has a record in the files and the database has
    as many rows as the files have lines (file first, then the DB, then the answer)."""
    want = set(rids)

    def done():
        lines = collector.lines()
        return want <= set(request_ids(lines)) and db_count(collector) >= len(lines)
    wait_until(done, timeout, f"{len(want)} records stored")
    return collector.lines()


def db_count(collector):
    q = collector.run("query", "--limit", "0")
    assert q.returncode == 0, q.stderr
    return len([ln for ln in q.stdout.splitlines() if ln.strip()])


def assert_once(lines, rids):
    """Each id in `rids` has exactly one record, every record id appears once."""
    got = request_ids(lines)
    for rid in rids:
        assert got.count(rid) == 1, (rid, got.count(rid))
    ids = [r["id"] for r in lines]
    assert len(ids) == len(set(ids)), "a record stored twice in the files"


def verify(collector):
    """`verify` on the DB and on the files: (exit status, output) of each."""
    out = []
    for args in (("verify",), ("verify", "--files", collector.log_dir)):
        v = collector.run(*args)
        out.append((v.returncode, v.stdout + v.stderr))
    return out


def settle_with_marker(s, collector, load_ids):
    """Sends one more recorded request after the load and waits until it and every answered
    load request that was not lost is stored; the stored lines."""
    assert refund(s, "marker").status == 200
    return wait_stored(collector, list(load_ids) + ["marker"])


def batch_request_ids(body):
    return [json.loads(ln)["request_id"] for ln in body.decode().splitlines() if ln.strip()]


def faulty_stack(stack_factory, log_dir, collector, fault, audit_config=FAULT_CFG):
    port = free_port()
    proxy = FaultProxy(port, collector, fault)
    s = stack_factory(env=dict(AUDIT_ENV), collector_port=port, audit_config=audit_config)
    return s, proxy


# --- 1. The collector refuses a batch: bounded, dropped with a gap, pipeline not wedged ------

@pytest.mark.parametrize("status,attempts,reason", [
    (500, FAULT_CFG["max_attempts"], "retries_exhausted_500"),
    (401, FAULT_CFG["max_attempts"], "retries_exhausted_401"),
    (400, 1, "rejected_400"),
])
def test_a_poison_batch_is_dropped_with_a_gap_record_and_the_records_behind_it_are_stored(
        stack_factory, log_dir, collector, status, attempts, reason):
    # The stand-in answers `status` to every batch holding the poison record and forwards
    # every other batch to the real collector. 500 and 401 used to be retried without end:
    # the poison batch held back every record behind it until the buffer overflowed.
    proxies = []
    try:
        s, proxy = faulty_stack(stack_factory, log_dir, collector,
                                lambda body, n: ("status", status))
        proxies.append(proxy)
        load = Load(s).start()
        wait_until(lambda: len(request_ids(stored(collector))) >= 5, 20, "load stored")
        assert refund(s, POISON).status == 200
        wait_until(lambda: any(r["kind"] == "gap" for r in stored(collector)), 30,
                   "the gap record of the dropped batch")
        # Records keep flowing after the drop.
        after = len(load.ok)
        wait_until(lambda: len(load.ok) >= after + 10, 20, "more load")
        ids = load.stop()
        lines = settle_with_marker(s, collector, [])
        posts = proxy.posts()
        assert len(posts) == attempts, [batch_request_ids(b) for b in posts]
        # The same records each time, first; a retry may carry records that came since.
        for a, b in zip(posts, posts[1:]):
            assert b.startswith(a), (batch_request_ids(a), batch_request_ids(b))
        lost = batch_request_ids(posts[-1])
        assert POISON in lost
        # Everything else answered 200 is stored, exactly once; the lost batch is not.
        kept = [rid for rid in ids if rid not in lost]
        lines = wait_stored(collector, kept + ["marker"])
        assert_once(lines, kept + ["marker"])
        assert not set(lost) & set(request_ids(lines))
        [gap] = [r for r in lines if r["kind"] == "gap"]
        assert gap["metadata"] == {"dropped": len(lost), "reason": reason}
        assert gap["severity"] == "high" and gap["outcome"] == "dropped"
        st = stats(s)
        assert st.get("dropped") == len(lost), st
        assert st.get("batches_rejected") == 1, st
        assert "invalid" not in st, st
        log = s.envoy_log()
        if status == 400:
            assert f"batch of {len(lost)} records refused (status 400" in log
        else:
            assert f"batch of {len(lost)} records failed {attempts} times (status {status}" \
                in log
            assert f"(refused {attempts - 1} of at most {attempts} times)" in log
        # The chain states the loss: verify names the gap and the missing seqs, nothing else.
        for code, out in verify(collector):
            assert code == 1, out
            assert f"reason: {reason}" in out and "MISSING" in out, out
            for bad in ("HASH_BREAK", "FORK", "BAD_LINE", "DUPLICATE"):
                assert bad not in out, out
    finally:
        for p in proxies:
            p.close()


@pytest.mark.parametrize("mode", ["503", "reset"])
def test_unavailability_and_a_reset_after_the_response_head_are_retried_past_max_attempts(
        stack_factory, log_dir, collector, mode):
    # 503 (storage unavailable) and an answer cut after its head are retried without bound:
    # the stand-in fails the poison batch twice as often as max_attempts, then lets it
    # through to the real collector. Nothing is lost, nothing stored twice, nothing trapped.
    failures = 2 * FAULT_CFG["max_attempts"]
    action = ("status", 503) if mode == "503" else ("reset",)
    proxies = []
    try:
        s, proxy = faulty_stack(stack_factory, log_dir, collector,
                                lambda body, n: action if n < failures else None)
        proxies.append(proxy)
        load = Load(s).start()
        wait_until(lambda: len(request_ids(stored(collector))) >= 5, 20, "load stored")
        assert refund(s, POISON).status == 200
        wait_until(lambda: len(proxy.posts()) > failures, 60, "the poison batch let through")
        ids = load.stop()
        lines = settle_with_marker(s, collector, ids + [POISON])
        assert_once(lines, ids + [POISON, "marker"])
        assert [r["seq"] for r in lines] == list(range(1, len(lines) + 1))
        assert not [r for r in lines if r["kind"] == "gap"]
        st = stats(s)
        assert st.get("dropped", 0) == 0 and st.get("batches_failed", 0) >= failures, st
        assert "refused" not in s.envoy_log()
        for code, out in verify(collector):
            assert code == 0, out
    finally:
        for p in proxies:
            p.close()


# --- 2. The collector's disk fills up ------------------------------------------------------

def set_fsize(pid, soft):
    _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))


def jsonl_files(collector):
    return [os.path.join(collector.log_dir, n) for n in sorted(os.listdir(collector.log_dir))
            if n.endswith(".jsonl")]


def assert_whole_lines(collector):
    """Every stored byte belongs to a whole line that parses: no torn line."""
    for path in jsonl_files(collector):
        with open(path, "rb") as f:
            data = f.read()
        assert data == b"" or data.endswith(b"\n"), f"{path}: torn last line {data[-80:]!r}"
        for ln in data.splitlines():
            json.loads(ln)


def test_a_full_disk_is_503_with_no_torn_line_and_every_record_is_stored_once_after(
        stack_factory, collector):
    # RLIMIT_FSIZE on the running collector stands in for a full disk mid-run. The write past
    # it raised SIGXFSZ, whose default action killed the collector; now the batch is answered
    # 503, what reached the file is cut off, and once there is room again every record is
    # stored exactly once and verify passes.
    s = stack_factory(env=dict(AUDIT_ENV), collector_port=collector.port, audit_config=FAST)
    load = Load(s).start()
    try:
        wait_until(lambda: len(request_ids(stored(collector))) >= 10, 20, "load stored")
        pid = collector.proc.proc.pid
        [path] = jsonl_files(collector)
        # Room for a part of the next line only.
        set_fsize(pid, os.path.getsize(path) + 200)
        failed = stats(s).get("batches_failed", 0)
        wait_until(lambda: stats(s).get("batches_failed", 0) >= failed + 3, 30,
                   "batches refused while the disk is full")
        assert collector.proc.alive(), "the collector died of the full disk"
        # The file append (EFBIG) or SQLite's own write past the limit, whichever comes first.
        with open(collector.proc.log, errors="replace") as f:
            log = f.read()
        assert "File too large" in log or "disk I/O error" in log, log[-2000:]
        assert "status 503" in s.envoy_log()
        assert_whole_lines(collector)
    finally:
        if collector.proc is not None and collector.proc.alive():
            set_fsize(collector.proc.proc.pid, resource.RLIM_INFINITY)
    ids = load.stop()
    lines = settle_with_marker(s, collector, ids)
    assert_once(lines, ids + ["marker"])
    assert_whole_lines(collector)
    assert db_count(collector) == len(lines)
    assert stats(s).get("dropped", 0) == 0
    for code, out in verify(collector):
        assert code == 0, out


# --- 3. PostgreSQL stopped, then hung --------------------------------------------------------

PG_SCRIPT = os.path.join(ROOT, "scripts/pg-temp.sh")


def pg(cmd, pg_dir):
    return subprocess.run(["bash", PG_SCRIPT, cmd, pg_dir], capture_output=True, text=True,
                          check=True, timeout=120).stdout.strip().splitlines()


def pg_processes(pg_dir):
    """The PostgreSQL server's processes: the postmaster first, then its children (each
    backend runs in a session of its own, so a process group does not hold them)."""
    with open(os.path.join(pg_dir, "data", "postmaster.pid")) as f:
        postmaster = int(f.readline())
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    # pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == postmaster:
                children.append(int(entry))
    return [postmaster] + children


def signal_all(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def direct_post(collector, lines, timeout=15):
    """POSTs `lines` to the collector itself; (status, seconds), or (None, seconds) when no
    answer came within `timeout`."""
    t0 = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", collector.port, timeout=timeout)
    try:
        conn.request("POST", "/v1/batches", body="".join(ln + "\n" for ln in lines),
                     headers={"authorization": "Bearer " + collector.token,
                              "content-type": "application/x-ndjson"})
        r = conn.getresponse()
        r.read()
        return r.status, time.monotonic() - t0
    except OSError:
        return None, time.monotonic() - t0
    finally:
        conn.close()


def raw_lines(collector):
    out = []
    for path in jsonl_files(collector):
        with open(path) as f:
            out.extend(ln.rstrip("\n") for ln in f if ln.strip())
    return out


def test_postgresql_stopped_then_hung_is_503_within_the_timeout_and_every_record_stored_once(
        stack_factory, log_dir):
    pg_dir = tempfile.mkdtemp(prefix="aura-pg-")
    os.chmod(pg_dir, 0o755)
    url = pg("start", pg_dir)[-1]
    c = None
    stopped = []
    try:
        c = Collector(os.path.join(log_dir, "collector-pg"), database_url=url,
                      env={"AUDIT_DB_TIMEOUT_MS": "1000"}).start()
        s = stack_factory(env=dict(AUDIT_ENV), collector_port=c.port, audit_config=FAST)
        load = Load(s).start()
        wait_until(lambda: len(request_ids(stored(c))) >= 5, 20, "load stored")

        # Stopped: connections refused, 503 at once.
        pg("stop", pg_dir)
        failed = stats(s).get("batches_failed", 0)
        wait_until(lambda: stats(s).get("batches_failed", 0) >= failed + 2, 30,
                   "batches refused while PostgreSQL is down")
        status, _ = direct_post(c, raw_lines(c)[:1])
        assert status == 503
        pg("start", pg_dir)
        n = len(stored(c))
        wait_until(lambda: len(stored(c)) >= n + 5, 30, "records stored again")

        # Hung: the server takes connections and statements and never answers. The collector
        # answers 503 within its timeout (1 s) instead of waiting with the batch; a bound of
        # 10 s tells that from a hang on any machine.
        # The postmaster first, so it forks no backend the list misses.
        stopped = pg_processes(pg_dir)
        signal_all(stopped[:1], signal.SIGSTOP)
        stopped = pg_processes(pg_dir)
        signal_all(stopped, signal.SIGSTOP)
        failed = stats(s).get("batches_failed", 0)
        wait_until(lambda: stats(s).get("batches_failed", 0) >= failed + 3, 30,
                   "batches refused while PostgreSQL is hung")
        for _ in range(2):
            status, took = direct_post(c, raw_lines(c)[:1], timeout=10)
            assert status == 503, f"no answer within {took:.1f}s while PostgreSQL is hung"
        with open(c.proc.log, errors="replace") as f:
            log = f.read()
        assert "no answer within the database timeout" in log, log[-2000:]
        signal_all(reversed(stopped), signal.SIGCONT)
        stopped = []

        ids = load.stop()
        lines = settle_with_marker(s, c, ids)
        assert_once(lines, ids + ["marker"])
        raw = raw_lines(c)
        assert len(raw) == len(set(raw)), "a line stored twice in the files"
        assert db_count(c) == len(lines)
        assert stats(s).get("dropped", 0) == 0
        for code, out in verify(c):
            assert code == 0, out
    finally:
        signal_all(reversed(stopped), signal.SIGCONT)
        if c is not None:
            c.stop()
        subprocess.run(["bash", PG_SCRIPT, "stop", pg_dir], capture_output=True, timeout=60)
        subprocess.run(["rm", "-rf", pg_dir])


# --- 4. Envoy restarted with records buffered -------------------------------------------------

def test_records_lost_in_an_envoy_restart_are_reported_by_verify_not_silent(
        stack_factory, log_dir, collector):
    # The collector turns slow: it stores each batch but its answer never comes in time, so
    # the shipper retries the front of its buffer while the records behind it pile up. Envoy
    # is then killed and started again: what its shipper still held is gone (a new stream
    # starts). Each batch said how far the chain reached (x-aura-audit-chained), so verify
    # names the records chained but never stored instead of the old stream just ending.
    proxies = []
    try:
        s, proxy = faulty_stack(stack_factory, log_dir, collector, lambda body, n: None)
        proxies.append(proxy)
        load = Load(s).start()
        wait_until(lambda: len(request_ids(stored(collector))) >= 5, 20, "load stored")
        with proxy.lock:
            proxy.hold_s = FAST["timeout_ms"] / 1000 + 1
        wait_until(lambda: stats(s).get("buffered", 0) >= 2 * FAST["batch_size"], 30,
                   "records buffered behind the slow collector")
        # A timed-out retry announced the records behind it.
        wait_until(lambda: proxy.chained > max(r["seq"] for r in stored(collector))
                   + FAST["batch_size"], 30, "an announcement past the stored records")
        buffered = stats(s)["buffered"]
        first_ids = load.stop()
        old_stream = stored(collector)[0]["stream"]
        s.envoy.stop(sig=signal.SIGKILL)
        with proxy.lock:
            proxy.hold_s = 0
        s.start_envoy()
        load = Load(s, prefix="after").start()
        wait_until(lambda: len([r for r in stored(collector)
                                if r["stream"] != old_stream]) >= 5, 30, "the new stream")
        after_ids = load.stop()
        lines = settle_with_marker(s, collector, after_ids)
        assert_once(lines, after_ids + ["marker"])
        old = [r for r in lines if r["stream"] == old_stream]
        last_stored = max(r["seq"] for r in old)
        announced = proxy.chained
        lost = [rid for rid in first_ids if rid not in request_ids(old)]
        assert announced > last_stored and buffered > 0
        # Every record announced past the last stored one was answered 200 and is lost.
        assert len(lost) >= announced - last_stored, (len(lost), announced, last_stored)
        range_ = f"stream={old_stream} seq={last_stored + 1}..{announced}"
        v = collector.run("verify", "--grace-s", "0")
        assert v.returncode == 1, v.stdout
        assert f"UNDELIVERED {range_}: chained by the shipper" in v.stdout, v.stdout
        assert "an Envoy restart loses the records it still held" in v.stdout
        problems = [ln for ln in v.stdout.splitlines()
                    if ln.split(" ")[0] in ("MISSING", "HASH_BREAK", "FORK", "BAD_LINE", "GAP")]
        assert problems == [], problems
        new_stream = [ln for ln in v.stdout.splitlines()
                      if ln.startswith("OK stream=") and old_stream not in ln]
        assert len(new_stream) == 1, v.stdout
        # Within the grace period (default 300 s) the same records may still be on their way.
        v = collector.run("verify")
        assert v.returncode == 0 and f"PENDING {range_}" in v.stdout, v.stdout
    finally:
        for p in proxies:
            p.close()
