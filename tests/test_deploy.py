"""deploy/ (docker compose) checked offline: Docker has no engine on the machines this project
is developed on, so what can be checked without it is checked here. The compose file parses and
mounts only files that exist, every variable the filter's VM may read is passed through, the
rate-limit service gets the repository's config, and deploy/envoy.yaml passes the real Envoy's
`--mode validate` (which loads the module and runs its configuration check; STRICT_DNS names
like `ratelimit` are not resolved in validate mode, so the compose hostnames need not exist).
deploy/envoy.yaml is generated from envoy/envoy.yaml (scripts/render_envoy.py --deploy); the
first tests fail when it is stale or differs from envoy/envoy.yaml in more than the deploy
settings."""
import difflib
import os
import re
import subprocess
import sys

import pytest
import yaml

from harness import ROOT, WASM, clean_env, envoy_bin
from aura_common import WASM_REL, cluster_socket_address, find_wasm_config, wasm_services
import render_envoy  # scripts/, on sys.path through harness

DEPLOY = os.path.join(ROOT, "deploy")
COMPOSE = os.path.join(DEPLOY, "docker-compose.yaml")
DEPLOY_ENVOY = os.path.join(DEPLOY, "envoy.yaml")
WASM_MOUNT_SOURCE = WASM_REL
WASM_IN_CONTAINER = "/etc/envoy/aura_guard.wasm"


def load(path):
    with open(path) as f:
        return yaml.safe_load(f)


def wasm_vms(cfg):
    return [find_wasm_config(cfg)] + wasm_services(cfg)


def host_env_keys(cfg):
    keys = []
    for vm in wasm_vms(cfg):
        for k in vm["vm_config"].get("environment_variables", {}).get("host_env_keys", []):
            if k not in keys:
                keys.append(k)
    return keys


def mounts(service):
    """(host path relative to the repository root, container path) for each bind mount."""
    out = []
    for v in service.get("volumes", []):
        src, dst = v.split(":")[:2]
        if src.startswith((".", "/")):
            out.append((os.path.normpath(os.path.join("deploy", src)), dst))
    return out


def env_names(service):
    env = service.get("environment", {})
    if isinstance(env, list):
        return {e.split("=", 1)[0] for e in env}
    return set(env)


@pytest.fixture(scope="module")
def compose():
    return load(COMPOSE)


def test_deploy_envoy_yaml_is_what_render_envoy_deploy_writes(tmp_path):
    # Run from another directory: the script finds the repository from its own path.
    out = tmp_path / "envoy.yaml"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "render_envoy.py"),
                        "--deploy", "--out", str(out)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    with open(DEPLOY_ENVOY) as f:
        committed = f.read()
    diff = "".join(difflib.unified_diff(committed.splitlines(keepends=True),
                                        out.read_text().splitlines(keepends=True),
                                        "deploy/envoy.yaml", "regenerated"))
    assert not diff, ("deploy/envoy.yaml is stale: regenerate it with "
                      "`.venv/bin/python scripts/render_envoy.py --deploy`\n" + diff)


def test_deploy_envoy_yaml_is_the_local_stack_with_only_the_deploy_settings():
    want = render_envoy.deploy_config(load(os.path.join(ROOT, "envoy", "envoy.yaml")))
    assert load(DEPLOY_ENVOY) == want


def test_compose_has_the_five_services(compose):
    assert set(compose["services"]) >= {"envoy", "redis", "ratelimit", "collector", "upstream"}


def test_every_mounted_file_exists_in_the_repository(compose):
    for name, svc in compose["services"].items():
        for src, dst in mounts(svc):
            if src == WASM_MOUNT_SOURCE:
                continue  # a build output (make build), checked below
            assert os.path.isfile(os.path.join(ROOT, src)), f"{name}: mounts missing {src}"


def test_envoy_mounts_the_built_module_and_its_config(compose):
    m = dict(mounts(compose["services"]["envoy"]))
    assert m.get(WASM_MOUNT_SOURCE) == WASM_IN_CONTAINER
    assert m.get("deploy/envoy.yaml") == "/etc/envoy/envoy.yaml"
    for vm in wasm_vms(load(DEPLOY_ENVOY)):
        assert vm["vm_config"]["code"]["local"]["filename"] == WASM_IN_CONTAINER


def test_deploy_ships_audit_like_the_local_stack():
    local = wasm_services(load(os.path.join(ROOT, "envoy", "envoy.yaml")))
    deploy = wasm_services(load(DEPLOY_ENVOY))
    assert [s["root_id"] for s in deploy] == [s["root_id"] for s in local]
    assert [s["configuration"] for s in deploy] == [s["configuration"] for s in local]


def test_envoy_image_tag_is_the_projects_envoy_version(compose):
    with open(os.path.join(ROOT, ".envoy-version")) as f:
        want = f.read().strip()
    image = compose["services"]["envoy"]["image"]
    assert re.search(r"envoyproxy/envoy:v" + re.escape(want) + r"\b", image), image


def test_ratelimit_service_reads_the_repositorys_config(compose):
    svc = compose["services"]["ratelimit"]
    m = dict(mounts(svc))
    assert m.get("envoy/ratelimit/config.yaml") is not None
    env = svc["environment"]
    # RUNTIME_ROOT/RUNTIME_SUBDIRECTORY/RUNTIME_APPDIRECTORY is where the service looks.
    want_dir = f"{env['RUNTIME_ROOT']}/{env['RUNTIME_SUBDIRECTORY']}/{env['RUNTIME_APPDIRECTORY']}"
    assert os.path.dirname(m["envoy/ratelimit/config.yaml"]) == want_dir
    assert env["USE_STATSD"] == "false" and env["REDIS_SOCKET_TYPE"] == "tcp"
    assert env["REDIS_URL"].split(":")[0] == "redis"


def test_every_variable_the_filter_reads_is_passed_to_envoy(compose):
    passed = env_names(compose["services"]["envoy"])
    missing = [k for k in host_env_keys(load(DEPLOY_ENVOY)) if k not in passed]
    assert not missing, f"host_env_keys not passed through by the envoy service: {missing}"


def test_deploy_filter_reads_every_variable_the_local_stack_does():
    # envoy/envoy.yaml is the reference; a variable added there must reach compose users too.
    local = host_env_keys(load(os.path.join(ROOT, "envoy", "envoy.yaml")))
    deploy = set(host_env_keys(load(DEPLOY_ENVOY)))
    missing = [k for k in local if k not in deploy]
    assert not missing, f"add to deploy/envoy.yaml host_env_keys (and compose): {missing}"


def test_listener_buffer_limit_matches_the_local_stack():
    # The body stages depend on it (docs/webhooks.md, "Body limits").
    def limit(cfg):
        return cfg["static_resources"]["listeners"][0].get("per_connection_buffer_limit_bytes")

    assert limit(load(DEPLOY_ENVOY)) == limit(load(os.path.join(ROOT, "envoy", "envoy.yaml")))


def test_clusters_point_at_the_compose_services(compose):
    cfg = load(DEPLOY_ENVOY)
    ports = {}
    for c in cfg["static_resources"]["clusters"]:
        addr = cluster_socket_address(cfg, c["name"])
        ports[c["name"]] = (addr["address"], addr["port_value"])
    rl_env = compose["services"]["ratelimit"]["environment"]
    assert ports["ratelimit"] == ("ratelimit", int(rl_env["GRPC_PORT"]))
    assert ports["audit_collector"][0] == "collector"
    listen = compose["services"]["collector"]["environment"]["AUDIT_COLLECTOR_LISTEN"]
    assert listen.endswith(f":{ports['audit_collector'][1]}")
    assert ports["upstream"] == ("upstream", 8080)
    assert "8080" in compose["services"]["upstream"]["command"]
    for host, _ in ports.values():
        assert host in compose["services"], f"no compose service named {host}"


def test_collector_image_builds_from_the_repository(compose):
    build = compose["services"]["collector"]["build"]
    dockerfile = os.path.normpath(os.path.join("deploy", build["context"], build["dockerfile"]))
    assert os.path.isfile(os.path.join(ROOT, dockerfile))
    with open(os.path.join(ROOT, dockerfile)) as f:
        assert "-p aura-collector" in f.read()


@pytest.mark.parametrize("environment", ["development", "production"])
def test_deploy_envoy_config_passes_envoy_validate(tmp_path, environment):
    cfg = load(DEPLOY_ENVOY)
    # The only change: the module path inside the container becomes the local build output.
    for vm in wasm_vms(cfg):
        vm["vm_config"]["code"]["local"]["filename"] = WASM
    path = tmp_path / "envoy.yaml"
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    r = subprocess.run([envoy_bin(), "--mode", "validate", "-c", str(path), "--log-level", "warn"],
                       capture_output=True, text=True, timeout=120,
                       env=clean_env({"ENVIRONMENT": environment,
                                      "AUDIT_COLLECTOR_TOKEN": "test-only-token-0123456789",
                                      # Production refuses to start without it (auth rate
                                      # limits verify refresh tokens with it) or with one
                                      # shorter than 32 bytes.
                                      "JWT_SECRET_KEY": "test-only-jwt-secret-0123456789abcdef"}))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK" in r.stdout + r.stderr
