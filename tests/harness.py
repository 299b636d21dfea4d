"""End-to-end harness: starts the real Envoy with the built module, the demo upstream and (as
their capabilities need them) Redis, envoyproxy/ratelimit and the audit collector, each on free
ports, so tests can run in parallel. Every process is stopped at teardown; logs are kept under
logs/e2e/<test> when a test fails."""
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import render_envoy  # noqa: E402
# Re-exported for the tests: `from harness import ROOT, WASM, clean_env, envoy_bin, ...`.
from aura_common import (  # noqa: E402,F401
    WASM, clean_env, envoy_bin, find_aura_hcm, free_port, tail)

# JWT_SECRET_KEY every stack gets unless the test sets its own (the filter verifies refresh and
# bearer tokens with it; the demo upstream signs its tokens with it). Production refuses a
# secret shorter than 32 bytes (README, "Configuration"), so it is longer.
TEST_JWT_SECRET = "e2e-jwt-secret-for-tests-only-0123456789"
# `make build` builds it (cargo build -p aura-collector); AURA_COLLECTOR_BIN overrides.
COLLECTOR_BIN = os.environ.get("AURA_COLLECTOR_BIN") or os.path.join(
    ROOT, "target/debug/aura-collector")
# Token the tests give both the collector and Envoy's audit shipper.
TEST_COLLECTOR_TOKEN = "e2e-collector-token-5f1d9c0a7b3e"

# Every Stack whose Envoy became ready, in this process: conftest.py's autouse `no_trap`
# checks the ones a test started (docs/robustness.md).
STARTED = []
# What a trapped wasm VM (or a crashing Envoy) leaves in Envoy's log: the module's panic hook
# ("aura-guard panic: panicked at ..."), V8's "Uncaught RuntimeError: unreachable", Envoy's own
# panics.
TRAP_LOG = re.compile(r"panic|RuntimeError", re.IGNORECASE)


def event_lines(stack):
    """The filter's security-event log lines (docs/operations.md#security-event-log), parsed."""
    prefix = "aura-guard-event "
    return [json.loads(line.split(prefix, 1)[1]) for line in stack.envoy_log().splitlines()
            if prefix in line]


def wait_until(check, timeout, what, proc=None, log=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}\n{tail(log)}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not ready after {timeout}s\n{tail(log)}")


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-cased name -> list of values
        self.body = body

    def header(self, name):
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"Response({self.status}, {self.headers}, {self.body[:300]!r})"


def request(port, method, path, headers=None, body=None, timeout=10):
    """One HTTP/1.1 request with the path sent exactly as given (no client normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        hdrs = {"host": "localhost"}
        hdrs.update({k.lower(): v for k, v in (headers or {}).items()})
        if body is not None:
            if isinstance(body, str):
                body = body.encode()
            hdrs.setdefault("content-length", str(len(body)))
        for k, v in hdrs.items():
            conn.putheader(k, v)
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
        out = {}
        for k, v in resp.getheaders():
            out.setdefault(k.lower(), []).append(v)
        return Response(resp.status, out, data)
    finally:
        conn.close()


class Process:
    def __init__(self, name, cmd, log_dir, env=None, cwd=ROOT):
        self.name = name
        self.log = os.path.join(log_dir, f"{name}.log")
        self._logf = open(self.log, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._logf, stderr=subprocess.STDOUT,
                                     env=env or clean_env(), cwd=cwd, start_new_session=True)

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._logf.close()


def names_environment(plugin_config):
    """Whether a plugin configuration (dict or JSON text) names `environment`."""
    if isinstance(plugin_config, str):
        try:
            plugin_config = json.loads(plugin_config)
        except ValueError:
            return False
    return isinstance(plugin_config, dict) and "environment" in plugin_config


class Stack:
    """Envoy + demo upstream (+ optional services). Use `Stack(...).start()` via the fixture."""

    def __init__(self, log_dir, plugin_config=None, env=None, concurrency=1,
                 ratelimit_port=None, collector_port=None, audit_config=None, hcm=None,
                 wasm=None, hot_restart=False, edit=None):
        self.log_dir = log_dir
        os.makedirs(log_dir, exist_ok=True)
        self.plugin_config = plugin_config if plugin_config is not None else {}
        env = {"JWT_SECRET_KEY": TEST_JWT_SECRET, **(env or {})}
        # Like `make run`, the harness names the environment: development unless the test names
        # one (ENVIRONMENT or the plugin configuration's `environment`). The filter alone runs
        # as production; `env={"ENVIRONMENT": None}` starts it with none named, as a bare
        # deployment would (a None value means "unset").
        if "ENVIRONMENT" not in env and not names_environment(self.plugin_config):
            env["ENVIRONMENT"] = "development"
        self.env = {k: v for k, v in env.items() if v is not None}
        self.concurrency = concurrency
        self.listen_port = free_port()
        self.admin_port = free_port()
        self.upstream_port = free_port()
        self.ratelimit_port = ratelimit_port or free_port()
        self.collector_port = collector_port or free_port()
        self.audit_config = audit_config
        # Options of the HTTP connection manager set over envoy/envoy.yaml's (e.g.
        # {"normalize_path": False}), and the module to load (default: the shipped build).
        self.hcm = hcm or {}
        self.wasm = wasm or WASM
        # Any other change to the rendered config: a function given the parsed config to edit
        # in place (e.g. a smaller heap limit for the overload manager).
        self.edit = edit
        self.record = os.path.join(log_dir, "upstream-requests.jsonl")
        self.procs = []
        self.envoy = None
        # Envoy's wasm VM counters when it became ready, and just before it was stopped.
        self.vm_ready = {}
        self.vm_stopped = None
        # Hot restart (`hot_restart()`): Envoy runs with a restart epoch and a base id of its
        # own (--use-dynamic-base-id), so it never meets the shared memory of another test's
        # Envoy. Every epoch's log, and what the no-trap check found in the epochs before.
        self.hot_restart_enabled = hot_restart
        self.epoch = 0
        self.base_id_path = os.path.join(log_dir, "envoy-base-id")
        self.envoy_logs = []
        self.earlier_problems = []

    def start(self):
        up = Process("upstream", [sys.executable, os.path.join(ROOT, "scripts/demo_upstream.py"),
                                  "--port", str(self.upstream_port), "--record", self.record],
                     self.log_dir, env=clean_env(self.env))
        self.procs.append(up)
        wait_until(lambda: request(self.upstream_port, "GET", "/health").status == 200, 10,
                   "demo upstream", up.proc, up.log)
        # The probe above is not a test request.
        if os.path.exists(self.record):
            os.remove(self.record)
        self.start_envoy()
        return self

    def render(self, path):
        cfg = render_envoy.render(
            os.path.join(ROOT, "envoy/envoy.yaml"), self.listen_port, self.admin_port,
            self.upstream_port, self.ratelimit_port, self.collector_port, self.wasm,
            self.plugin_config, self.audit_config)
        if self.hcm:
            find_aura_hcm(cfg).update(self.hcm)
        if self.edit is not None:
            self.edit(cfg)
        import yaml
        with open(path, "w") as f:
            yaml.safe_dump(cfg, f, sort_keys=False)
        return path

    # Hot restart timing: the old Envoy drains its connections for DRAIN_S, then exits at
    # PARENT_SHUTDOWN_S after the new one started.
    DRAIN_S = 2
    PARENT_SHUTDOWN_S = 4

    def envoy_cmd(self, cfg):
        cmd = [envoy_bin(), "-c", cfg, "--concurrency", str(self.concurrency),
               "--log-level", "info"]
        if not self.hot_restart_enabled:
            return cmd + ["--disable-hot-restart"]
        cmd += ["--restart-epoch", str(self.epoch), "--drain-time-s", str(self.DRAIN_S),
                "--parent-shutdown-time-s", str(self.PARENT_SHUTDOWN_S),
                # The new Envoy's counters are its own (not merged from the old one), so the
                # no-trap check compares counters of one process.
                "--skip-hot-restart-parent-stats"]
        if self.epoch == 0:
            return cmd + ["--use-dynamic-base-id", "--base-id-path", self.base_id_path]
        with open(self.base_id_path) as f:
            return cmd + ["--base-id", f.read().strip()]

    def start_envoy(self):
        cfg = self.render(os.path.join(self.log_dir, "envoy.yaml"))
        name = "envoy" if self.epoch == 0 else f"envoy-epoch{self.epoch}"
        self.envoy = Process(name, self.envoy_cmd(cfg), self.log_dir, env=clean_env(self.env))
        self.envoy_logs.append(self.envoy.log)
        self.procs.append(self.envoy)
        epoch = self.epoch
        wait_until(lambda: request(self.admin_port, "GET", "/ready").status == 200 and
                   self.stats("server.hot_restart_epoch").get(
                       "server.hot_restart_epoch", 0) == epoch,
                   30, "envoy", self.envoy.proc, self.envoy.log)
        self.vm_ready = self.vm_counters()
        self.vm_stopped = None
        if self not in STARTED:
            STARTED.append(self)

    def hot_restart(self):
        """Starts the next epoch of Envoy with the same configuration (Envoy's hot restart:
        the new process takes over the listening sockets and the admin port, the old one
        drains and exits by itself within PARENT_SHUTDOWN_S). Returns the old Envoy's
        Process."""
        assert self.hot_restart_enabled, "Stack(hot_restart=True) for a hot restart"
        old = self.envoy
        # The old Envoy's VM counters, read while it still answers (its log is read at the end).
        self.earlier_problems += [f"epoch {self.epoch}: {p}"
                                  for p in self.counter_problems(self.vm_counters())]
        self.epoch += 1
        self.start_envoy()
        return old

    def stop(self):
        # After the test's own traffic, before Envoy goes: what the no-trap check compares.
        if self.envoy is not None and self.envoy.alive():
            try:
                self.vm_stopped = self.vm_counters()
            except (OSError, ValueError):
                self.vm_stopped = None
        for p in reversed(self.procs):
            p.stop()
        self.procs = []

    def vm_counters(self):
        """Envoy's wasm VM counters: VMs created (`wasm.envoy.wasm.runtime.v8.created`) and,
        per plugin, reloads after a trap (`wasm.<plugin>.vm_reload*`, FAIL_RELOAD)."""
        return {k: v for k, v in self.stats("wasm.").items()
                if k.endswith(".created") or ".vm_reload" in k}

    def trap_report(self):
        """Why this Envoy's wasm VMs are not known to have run without a trap since it became
        ready: its log lines that show a panic, and VM counters that moved (of every epoch,
        after a hot restart). Empty: no trap."""
        problems = list(self.earlier_problems)
        logs = list(self.envoy_logs)
        if self.envoy is not None and self.envoy.log not in logs:
            logs.append(self.envoy.log)
        for epoch, log in enumerate(logs):
            if not os.path.exists(log):
                continue
            with open(log, errors="replace") as f:
                lines = [ln for ln in f.read().splitlines() if TRAP_LOG.search(ln)]
            label = "envoy log" if len(logs) == 1 else f"envoy log (epoch {epoch})"
            problems += [f"{label}: {ln[:400]}" for ln in lines[:5]]
        now = self.vm_counters() if self.envoy is not None and self.envoy.alive() \
            else self.vm_stopped
        return problems + self.counter_problems(now)

    def counter_problems(self, now):
        """VM counters that moved since this Envoy became ready (`now`: its counters)."""
        if now is None:
            return []
        problems = []
        for name in sorted(set(self.vm_ready) | set(now)):
            before, after = self.vm_ready.get(name, 0), now.get(name, 0)
            if after != before or (".vm_reload" in name and after != 0):
                problems.append(f"{name}: {before} when ready, {after} after the test")
        return problems

    # --- what tests use -------------------------------------------------------------------
    def request(self, method, path, headers=None, body=None, timeout=10):
        return request(self.listen_port, method, path, headers, body, timeout)

    def upstream_requests(self):
        if not os.path.exists(self.record):
            return []
        with open(self.record) as f:
            return [json.loads(line) for line in f if line.strip()]

    def stats(self, prefix="wasmcustom."):
        """Envoy counters whose name starts with prefix, as {name: value}."""
        r = request(self.admin_port, "GET", "/stats?format=json&filter=" +
                    urllib.parse.quote(prefix))
        out = {}
        for s in r.json().get("stats", []):
            if "name" in s and s["name"].startswith(prefix):
                out[s["name"]] = s.get("value", 0)
        return out

    def wait_stat(self, name, want, timeout=10):
        """Waits until Envoy's stat `name` reads `want`. The shipper counts a batch shipped when
        the collector's answer reaches it, a moment after the collector stored the batch: a
        test that saw the records stored reads the counters through this."""
        wait_until(lambda: self.stats(name).get(name) == want, timeout,
                   f"{name} == {want} (now {self.stats(name).get(name)})")

    def envoy_log(self):
        with open(self.envoy.log, errors="replace") as f:
            return f.read()


# --- auth rate limiting: Redis + envoyproxy/ratelimit ------------------------------------------
RATELIMIT_YAML_BIN = os.path.join(ROOT, "target/debug/examples/ratelimit_yaml")


def render_ratelimit_yaml(ratelimit_config, out_path):
    """The service YAML for a `ratelimit` config section (None: the default, the original's
    limits, docs/original-behaviour.md#rate-limiting), rendered by the
    filter's own code (`--example ratelimit_yaml`), so the descriptors cannot drift."""
    subprocess.run(["cargo", "build", "-q", "-p", "aura-guard-core", "--example", "ratelimit_yaml"],
                   cwd=ROOT, check=True)
    args = [RATELIMIT_YAML_BIN]
    if ratelimit_config is not None:
        cfg_path = out_path + ".json"
        with open(cfg_path, "w") as f:
            json.dump(ratelimit_config, f)
        args.append(cfg_path)
    yaml_text = subprocess.run(args, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    with open(out_path, "w") as f:
        f.write(yaml_text)
    return out_path


def start_ratelimit_service(log_dir, ratelimit_config=None, redis_cluster=None):
    """Redis + the real envoyproxy/ratelimit on free ports with the YAML for `ratelimit_config`.
    The caller stops it (`.stop()`); `.kill("service_cmd" | "redis-server")` kills one part.
    `redis_cluster=N`: Redis is a local Redis Cluster of N masters (scripts/run_ratelimit.py)."""
    from run_ratelimit import SERVICE_BIN, RateLimitService
    if not SERVICE_BIN.is_file():
        raise RuntimeError(f"{SERVICE_BIN} is missing: run scripts/setup-ratelimit.sh (make setup)")
    work = os.path.join(log_dir, "ratelimit")
    os.makedirs(work, exist_ok=True)
    yaml_path = render_ratelimit_yaml(ratelimit_config, os.path.join(work, "config.yaml"))
    return RateLimitService(work, config=yaml_path, redis_cluster=redis_cluster).start()
class Collector:
    """The real aura-collector (crates/aura-collector) on a fixed free port, storing into
    files and SQLite (or `database_url`) under its own directory. It can be stopped and started
    again on the same port (Envoy's cluster points at it)."""

    def __init__(self, base_dir, token=TEST_COLLECTOR_TOKEN, port=None, database_url=None,
                 env=None):
        if not os.path.exists(COLLECTOR_BIN):
            raise RuntimeError(f"{COLLECTOR_BIN} missing: run `make build`")
        self.dir = base_dir
        self.log_dir = os.path.join(base_dir, "audit")
        os.makedirs(self.log_dir, exist_ok=True)
        self.db_path = os.path.join(base_dir, "audit.db")
        self.database_url = database_url or f"sqlite://{self.db_path}"
        self.token = token
        self.port = port or free_port()
        self.proc = None
        self.starts = 0
        # More collector settings (e.g. AUDIT_DB_TIMEOUT_MS).
        self.extra_env = env or {}

    def env(self):
        return clean_env({"AUDIT_COLLECTOR_TOKEN": self.token, "AUDIT_LOG_DIR": self.log_dir,
                          "AUDIT_DATABASE_URL": self.database_url, **self.extra_env})

    def start(self):
        self.starts += 1
        self.proc = Process(f"collector{self.starts}",
                            [COLLECTOR_BIN, "serve", "--listen", f"127.0.0.1:{self.port}"],
                            self.dir, env=self.env())
        wait_until(lambda: request(self.port, "GET", "/healthz").status == 200, 20,
                   "aura-collector", self.proc.proc, self.proc.log)
        return self

    def stop(self):
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def lines(self):
        """Every stored line of the JSONL files, parsed, in file order."""
        out = []
        for name in sorted(os.listdir(self.log_dir)):
            if name.endswith(".jsonl"):
                with open(os.path.join(self.log_dir, name)) as f:
                    out.extend(json.loads(line) for line in f if line.strip())
        return out

    def files_text(self):
        text = ""
        for name in sorted(os.listdir(self.log_dir)):
            with open(os.path.join(self.log_dir, name), errors="replace") as f:
                text += f.read()
        return text

    def db_rows(self):
        import sqlite3
        con = sqlite3.connect(self.db_path)
        try:
            con.row_factory = sqlite3.Row
            return [dict(r) for r in con.execute(
                "SELECT * FROM audit_records ORDER BY stream, seq")]
        finally:
            con.close()

    def run(self, *args):
        """Runs a collector subcommand (query, verify) against this collector's stores."""
        return subprocess.run([COLLECTOR_BIN, *args], capture_output=True, text=True,
                              env=self.env(), timeout=60)


# --- a fleet: several Envoys sharing the rate-limit service and the collector ------------------
class Fleet:
    """`n` Envoys (each a Stack: its own ports, demo upstream and log directory) sharing one
    rate-limit service (Redis + envoyproxy/ratelimit) and one Collector, as `ENVOYS=N make run`
    starts them. Each Envoy's config is rendered as a fleet member (render_envoy.fleet_member):
    the webhook replay check fleet-wide (`replay_mode`, None: the filter's default) and its
    audit stream named `aura-guard-envoy<i>-...`. `fleet[i]` is the i-th Stack.
    `collector`: True (start one), False (none: audit has nowhere to go) or a started Collector
    of the test's own (not stopped with the fleet)."""

    def __init__(self, log_dir, n=3, ratelimit_config=None, plugin_config=None, env=None,
                 audit_config=None, replay_mode=render_envoy.FLEET_REPLAY_MODE,
                 collector=True):
        self.log_dir = log_dir
        self.n = n
        self.ratelimit_config = ratelimit_config
        plugin_config = dict(plugin_config or {})
        if ratelimit_config is not None:
            plugin_config.setdefault("ratelimit", ratelimit_config)
        self.plugin_config = plugin_config
        self.env = env
        self.audit_config = audit_config
        self.replay_mode = replay_mode
        self.own_collector = collector is True
        self.ratelimit = None
        self.collector = collector if isinstance(collector, Collector) else None
        self.stacks = []

    def names(self):
        return [f"envoy{i + 1}" for i in range(self.n)]

    def start(self, **stack_kw):
        """Starts the shared services, then the Envoys. `stack_kw` go to every Stack;
        `collector_ports` (a list, one per Envoy) points an Envoy's audit shipper elsewhere
        (e.g. a fault stand-in in front of the shared collector)."""
        collector_ports = stack_kw.pop("collector_ports", None)
        self.ratelimit = start_ratelimit_service(os.path.join(self.log_dir, "ratelimit"),
                                                 self.ratelimit_config)
        if self.own_collector:
            self.collector = Collector(os.path.join(self.log_dir, "collector")).start()
        for i, name in enumerate(self.names()):
            def edit(cfg, name=name):
                render_envoy.fleet_member(cfg, name, self.replay_mode)
            port = (collector_ports[i] if collector_ports and collector_ports[i] else
                    self.collector.port if self.collector else None)
            s = Stack(os.path.join(self.log_dir, name), plugin_config=self.plugin_config,
                      env=self.env, ratelimit_port=self.ratelimit.grpc_port,
                      collector_port=port, audit_config=self.audit_config, edit=edit,
                      **stack_kw)
            self.stacks.append(s)
            s.start()
        return self

    def stop(self):
        for s in self.stacks:
            s.stop()
        if self.own_collector and self.collector is not None:
            self.collector.stop()
        if self.ratelimit is not None:
            self.ratelimit.stop()

    def __getitem__(self, i):
        return self.stacks[i]

    def __iter__(self):
        return iter(self.stacks)

    def __len__(self):
        return len(self.stacks)
