#!/usr/bin/env python3
"""Start Redis + the real envoyproxy/ratelimit service (``service_cmd``) on free loopback
ports with envoy/ratelimit/config.yaml, wait for /healthcheck, and stop both on exit.

As a library (used by tests/test_ratelimit_service.py)::

    with RateLimitService(workdir) as svc:
        svc.http_url, svc.grpc_port, svc.redis_port

With ``redis_cluster=N`` (``--redis-cluster N``, N >= 3) Redis is a local Redis Cluster of N
masters (``redis-server --cluster-enabled yes``, joined by ``redis-cli --cluster create``) and
the service runs with ``REDIS_TYPE=cluster`` and ``REDIS_URL`` listing the nodes
(``svc.redis_ports``; docs/scaling.md, "Redis beyond one node").

As a command: ``python3 scripts/run_ratelimit.py --dir .run/ratelimit`` runs until
interrupted (SIGINT/SIGTERM) and prints the ports.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from aura_common import free_port, tail

REPO = Path(__file__).resolve().parent.parent
SERVICE_BIN = REPO / ".tools" / "bin" / "service_cmd"
CONFIG_YAML = REPO / "envoy" / "ratelimit" / "config.yaml"


# The service's settings for a Redis Cluster (envoyproxy/ratelimit README, "Redis type" and
# "Pipelining"). REDIS_PIPELINE_WINDOW is the write-flush interval of each connection; the
# README calls it required for cluster mode. The pinned commit's code (src/redis/driver_impl.go)
# runs without it too (it pipelines each key's INCRBY + EXPIRE itself), but it is set as the
# README says, at the low end of the range it recommends (150us-500us).
# REDIS_PIPELINE_LIMIT is deprecated there (no effect with radix v4) and not set.
CLUSTER_PIPELINE_WINDOW = "150us"


class SetupError(RuntimeError):
    pass


def _wait(pred, timeout: float, what: str, procs) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, p in procs:
            if p.poll() is not None:
                raise SetupError(f"{name} exited with {p.returncode} while waiting for {what}")
        if pred():
            return
        time.sleep(0.05)
    raise SetupError(f"timed out after {timeout}s waiting for {what}")


class RateLimitService:
    def __init__(self, workdir: Path, *, config: Path = CONFIG_YAML, grpc_port: int | None = None,
                 http_port: int | None = None, debug_port: int | None = None,
                 redis_port: int | None = None, log_level: str = "warn",
                 extra_env: dict[str, str] | None = None,
                 redis_cluster: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.config = Path(config)
        self.grpc_port = grpc_port or free_port()
        self.http_port = http_port or free_port()
        self.debug_port = debug_port or free_port()
        self.redis_port = redis_port or free_port()
        if redis_cluster is not None and redis_cluster < 3:
            raise SetupError("a Redis Cluster needs at least 3 masters")
        self.redis_cluster = redis_cluster
        # Every Redis node's port (one, or the cluster's; redis_port is the first) and, in a
        # cluster, each node's cluster bus port (picked free too: Redis's default, port + 10000,
        # may be taken).
        self.redis_ports = [self.redis_port] + [free_port() for _ in range((redis_cluster or 1) - 1)]
        self.bus_ports = [free_port() for _ in self.redis_ports] if redis_cluster else []
        self.log_level = log_level
        # More of the service's own settings (e.g. REDIS_PIPELINE_WINDOW for the bench).
        self.extra_env = dict(extra_env or {})
        self._procs: list[tuple[str, subprocess.Popen]] = []

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.http_url + "/healthcheck", timeout=0.5) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _redis_up(self, port: int | None = None) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port or self.redis_port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def redis_cli(self, port: int, *args: str) -> str:
        """Runs `redis-cli -p port args...` against one of our Redis nodes; its output."""
        cli = shutil.which("redis-cli")
        if not cli:
            raise SetupError("redis-cli not found: run scripts/setup-ratelimit.sh first")
        r = subprocess.run([cli, "-h", "127.0.0.1", "-p", str(port), *args], capture_output=True,
                           text=True, timeout=30)
        if r.returncode != 0:
            raise SetupError(f"redis-cli {' '.join(args)}: {r.stderr.strip() or r.stdout.strip()}")
        return r.stdout

    def _cluster_ok(self) -> bool:
        return all("cluster_state:ok" in self.redis_cli(p, "CLUSTER", "INFO")
                   for p in self.redis_ports)

    def _start_redis(self, redis: str, logs: Path) -> dict[str, str]:
        """Starts Redis (one node, or the cluster's nodes joined into one cluster) and returns
        the service's Redis settings for it."""
        for i, port in enumerate(self.redis_ports):
            node_dir = self.workdir / "redis" / (str(port) if self.redis_cluster else "")
            node_dir.mkdir(parents=True, exist_ok=True)
            argv = [redis, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--dir", str(node_dir)]
            if self.redis_cluster:
                argv += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                         "--cluster-port", str(self.bus_ports[i])]
            log = logs / ("redis.log" if not self.redis_cluster else f"redis-{port}.log")
            self._spawn("redis-server", argv, log, env=None)
        for port in self.redis_ports:
            _wait(lambda: self._redis_up(port), 10, f"redis on 127.0.0.1:{port}", self._procs)
        nodes = [f"127.0.0.1:{p}" for p in self.redis_ports]
        if not self.redis_cluster:
            return {"REDIS_URL": nodes[0]}
        # Every node a master holding a third (a 1/N) of the hash slots; no replicas.
        self.redis_cli(self.redis_ports[0], "--cluster", "create", *nodes,
                       "--cluster-replicas", "0", "--cluster-yes")
        _wait(self._cluster_ok, 30, "the Redis Cluster (cluster_state:ok on every node)",
              self._procs)
        return {"REDIS_TYPE": "cluster", "REDIS_URL": ",".join(nodes),
                "REDIS_PIPELINE_WINDOW": CLUSTER_PIPELINE_WINDOW}

    def start(self) -> "RateLimitService":
        if not SERVICE_BIN.is_file():
            raise SetupError(f"{SERVICE_BIN} not found: run scripts/setup-ratelimit.sh first")
        redis = shutil.which("redis-server")
        if not redis:
            raise SetupError("redis-server not found: run scripts/setup-ratelimit.sh first")
        if not self.config.is_file():
            raise SetupError(f"{self.config} not found")
        runtime = self.workdir / "runtime"
        conf_dir = runtime / "ratelimit" / "config"
        conf_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.config, conf_dir / "config.yaml")
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        try:
            redis_env = self._start_redis(redis, logs)
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "USE_STATSD": "false",
                "LOG_LEVEL": self.log_level,
                "REDIS_SOCKET_TYPE": "tcp",
                **redis_env,
                "RUNTIME_ROOT": str(runtime),
                "RUNTIME_SUBDIRECTORY": "ratelimit",
                "RUNTIME_APPDIRECTORY": "config",
                "RUNTIME_WATCH_ROOT": "false",
                "HOST": "127.0.0.1",
                "PORT": str(self.http_port),
                "GRPC_HOST": "127.0.0.1",
                "GRPC_PORT": str(self.grpc_port),
                "DEBUG_HOST": "127.0.0.1",
                "DEBUG_PORT": str(self.debug_port),
                **self.extra_env,
            }
            self._spawn("service_cmd", [str(SERVICE_BIN)], logs / "ratelimit.log", env=env)
            _wait(self._healthy, 30, f"{self.http_url}/healthcheck", self._procs)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, argv: list[str], log: Path, env) -> None:
        out = open(log, "ab")
        try:
            p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=env, cwd=self.workdir)
        finally:
            out.close()
        self._procs.append((name, p))

    def stop(self) -> None:
        # Stop only the processes we started, newest first.
        for _, p in reversed(self._procs):
            if p.poll() is None:
                p.terminate()
        for _, p in reversed(self._procs):
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        self._procs.clear()

    def kill(self, name: str) -> None:
        """Kills one of our processes (`redis-server` or `service_cmd`), e.g. to test failure modes."""
        for n, p in self._procs:
            if n == name and p.poll() is None:
                p.kill()
                p.wait(timeout=5)

    def send_signal(self, name: str, sig: int) -> int:
        """Sends `sig` to one of our processes (`redis-server` or `service_cmd`), e.g. SIGSTOP
        and SIGCONT to hang it and let it go again (tests/test_faults_e2e.py). Returns its
        pid."""
        for n, p in self._procs:
            if n == name and p.poll() is None:
                os.kill(p.pid, sig)
                return p.pid
        raise SetupError(f"{name} is not running")

    def log_tail(self, n: int = 40) -> str:
        return tail(self.workdir / "logs" / "ratelimit.log", n)

    def __enter__(self) -> "RateLimitService":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", required=True, type=Path, help="runtime directory (config copy, redis dir, logs)")
    ap.add_argument("--config", type=Path, default=CONFIG_YAML)
    ap.add_argument("--grpc-port", type=int)
    ap.add_argument("--http-port", type=int)
    ap.add_argument("--debug-port", type=int)
    ap.add_argument("--redis-port", type=int)
    ap.add_argument("--log-level", default="warn")
    ap.add_argument("--redis-cluster", type=int, metavar="N",
                    help="a local Redis Cluster of N (>= 3) masters instead of one Redis")
    a = ap.parse_args()
    try:
        svc = RateLimitService(a.dir, config=a.config, grpc_port=a.grpc_port,
                               http_port=a.http_port, debug_port=a.debug_port,
                               redis_port=a.redis_port, log_level=a.log_level,
                               redis_cluster=a.redis_cluster)
    except SetupError as e:
        print(f"run_ratelimit: {e}", file=sys.stderr)
        return 1
    stop = False

    def on_signal(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        svc.start()
    except SetupError as e:
        print(f"run_ratelimit: {e}", file=sys.stderr)
        return 1
    try:
        print(f"ratelimit ready: grpc=127.0.0.1:{svc.grpc_port} http={svc.http_url} "
              f"debug=127.0.0.1:{svc.debug_port} "
              f"redis={','.join(f'127.0.0.1:{p}' for p in svc.redis_ports)}", flush=True)
        while not stop and all(p.poll() is None for _, p in svc._procs):
            time.sleep(0.2)
    finally:
        svc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
