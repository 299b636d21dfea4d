#!/usr/bin/env python3
"""Start Redis + the real envoyproxy/ratelimit service (``service_cmd``) on free loopback
ports with envoy/ratelimit/config.yaml, wait for /healthcheck, and stop both on exit.

As a library (used by tests/test_ratelimit_service.py)::

    with RateLimitService(workdir) as svc:
        svc.http_url, svc.grpc_port, svc.redis_port

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
                 extra_env: dict[str, str] | None = None) -> None:
        self.workdir = Path(workdir)
        self.config = Path(config)
        self.grpc_port = grpc_port or free_port()
        self.http_port = http_port or free_port()
        self.debug_port = debug_port or free_port()
        self.redis_port = redis_port or free_port()
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

    def _redis_up(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.redis_port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

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
        redis_dir = self.workdir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        try:
            self._spawn("redis-server", [redis, "--port", str(self.redis_port), "--bind", "127.0.0.1",
                                         "--save", "", "--appendonly", "no", "--dir", str(redis_dir)],
                        logs / "redis.log", env=None)
            _wait(self._redis_up, 10, f"redis on 127.0.0.1:{self.redis_port}", self._procs)
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "USE_STATSD": "false",
                "LOG_LEVEL": self.log_level,
                "REDIS_SOCKET_TYPE": "tcp",
                "REDIS_URL": f"127.0.0.1:{self.redis_port}",
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
    a = ap.parse_args()
    svc = RateLimitService(a.dir, config=a.config, grpc_port=a.grpc_port, http_port=a.http_port,
                           debug_port=a.debug_port, redis_port=a.redis_port, log_level=a.log_level)
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
              f"debug=127.0.0.1:{svc.debug_port} redis=127.0.0.1:{svc.redis_port}", flush=True)
        while not stop and all(p.poll() is None for _, p in svc._procs):
            time.sleep(0.2)
    finally:
        svc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
