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
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml

from harness import ROOT, WASM, clean_env, envoy_bin, free_port
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


# --- secure defaults: admin on loopback, Redis password, required secrets, .env ignored ---------
# Compose's own interpolation: `$$` is a literal `$`, `${X:?msg}` fails when X is unset or
# empty, `${X:-default}` falls back when it is. (docker compose is not installed here.)
INTERPOLATION = re.compile(r"\$\$|\$\{(\w+)(?::([?-])([^}]*))?\}")
# The secrets compose must refuse to start without, and the services that need each.
REQUIRED = {"JWT_SECRET_KEY": ["envoy", "upstream"], "AUDIT_COLLECTOR_TOKEN": ["envoy", "collector"],
            "REDIS_PASSWORD": ["redis", "ratelimit"]}


def interpolate(text, env):
    def one(m):
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.groups()
        value = env.get(name, "")
        if op == "?" and not value:
            raise KeyError(f"{name}: {arg}")
        return arg if op == "-" and not value else value
    return INTERPOLATION.sub(one, text)


def service_env(compose, name, env):
    """The environment compose gives service `name` (values interpolated from `env`)."""
    return {k: interpolate(str(v), env) for k, v in
            compose["services"][name].get("environment", {}).items() if v is not None}


def test_deploy_admin_listens_on_loopback_only_and_is_not_published(compose):
    cfg = load(DEPLOY_ENVOY)
    assert cfg["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    # The API itself still listens on every address of the container.
    listener = cfg["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert listener["address"] == "0.0.0.0"
    admin_port = cfg["admin"]["address"]["socket_address"]["port_value"]
    for svc in compose["services"].values():
        for mapping in svc.get("ports", []):
            assert not str(mapping).endswith(f":{admin_port}"), mapping
    assert "127.0.0.1" in compose["services"]["envoy"]["healthcheck"]["test"][-1]


def test_compose_healthcheck_reads_ready_from_the_loopback_admin(compose, stack_factory):
    # The healthcheck's own command, run against a real Envoy's admin on 127.0.0.1.
    test = compose["services"]["envoy"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "bash", "-c"], test
    admin_port = load(DEPLOY_ENVOY)["admin"]["address"]["socket_address"]["port_value"]
    target = f"/dev/tcp/127.0.0.1/{admin_port} "
    assert target in test[3], test

    def check(port):
        script = test[3].replace(target, f"/dev/tcp/127.0.0.1/{port} ")
        return subprocess.run(["bash", "-c", script], capture_output=True, timeout=10).returncode

    s = stack_factory()
    assert check(s.admin_port) == 0
    assert check(free_port()) != 0  # nothing listening: unhealthy


def test_every_required_secret_stops_compose_when_missing(compose):
    for var, services in REQUIRED.items():
        for name in services:
            env = compose["services"][name]["environment"]
            refs = [str(v) for v in env.values() if v is not None and var in str(v)]
            assert refs and all(f"${{{var}:?" in v for v in refs), (name, var, env)
            others = {k: "x" * 40 for k in REQUIRED if k != var}
            with pytest.raises(KeyError, match=var):
                service_env(compose, name, {**others, var: ""})
    # The filter's JWT secret is not optional anywhere.
    text = open(COMPOSE).read()
    assert re.search(r"JWT_SECRET_KEY:\s*$", text, re.M) is None


def test_redis_password_is_what_the_ratelimit_service_logs_in_with(compose):
    pw = "p:a ss'w\"d-0123456789abcdef0123456789"  # ':' and quotes must survive
    env = {"REDIS_PASSWORD": pw, "JWT_SECRET_KEY": "x" * 40, "AUDIT_COLLECTOR_TOKEN": "x" * 40}
    assert service_env(compose, "redis", env)["REDIS_PASSWORD"] == pw
    auth = service_env(compose, "ratelimit", env)["REDIS_AUTH"]
    # envoyproxy/ratelimit splits REDIS_AUTH at the first ':' into user and password.
    user, _, password = auth.partition(":")
    assert (user, password) == ("default", pw)
    assert "--requirepass" in " ".join(compose["services"]["redis"]["command"])


def redis_cmd(sock, *args):
    sock.sendall(("*%d\r\n" % len(args) + "".join(
        "$%d\r\n%s\r\n" % (len(a.encode()), a) for a in args)).encode())
    return sock.recv(256)


def test_compose_redis_refuses_commands_without_the_password_and_ratelimit_starts_with_it(
        compose, tmp_path):
    """The compose commands and variables, run for real: redis-server with the redis service's
    command, envoyproxy/ratelimit with the ratelimit service's environment."""
    from run_ratelimit import CONFIG_YAML, SERVICE_BIN
    if not SERVICE_BIN.is_file() or not shutil.which("redis-server"):
        pytest.skip("envoyproxy/ratelimit or redis-server missing: run scripts/setup-ratelimit.sh")
    pw = "p:a ss'w\"d-0123456789abcdef0123456789"
    env = {"REDIS_PASSWORD": pw, "JWT_SECRET_KEY": "x" * 40, "AUDIT_COLLECTOR_TOKEN": "x" * 40}
    redis_port = free_port()
    command = [interpolate(c, env) for c in compose["services"]["redis"]["command"]]
    command[-1] += f" --port {redis_port} --bind 127.0.0.1 --dir {tmp_path}"
    procs = []

    def spawn(argv, proc_env, log):
        with open(tmp_path / log, "wb") as out:
            p = subprocess.Popen(argv, env=proc_env, stdout=out, stderr=subprocess.STDOUT,
                                 cwd=tmp_path)
        procs.append(p)
        return p

    try:
        spawn(command, {**clean_env(), **service_env(compose, "redis", env)}, "redis.log")
        deadline = time.time() + 10
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", redis_port), timeout=2)
                break
            except OSError:
                assert time.time() < deadline, (tmp_path / "redis.log").read_text()
                time.sleep(0.05)
        with sock:
            assert redis_cmd(sock, "PING").startswith(b"-NOAUTH"), "Redis answered without a password"
            user, _, password = service_env(compose, "ratelimit", env)["REDIS_AUTH"].partition(":")
            assert redis_cmd(sock, "AUTH", user, password) == b"+OK\r\n"
            assert redis_cmd(sock, "PING") == b"+PONG\r\n"

        conf = tmp_path / "runtime" / "ratelimit" / "config"
        conf.mkdir(parents=True)
        shutil.copy(CONFIG_YAML, conf / "config.yaml")

        def ratelimit(with_auth):
            rl = service_env(compose, "ratelimit", env)
            if not with_auth:
                del rl["REDIS_AUTH"]
            http = free_port()
            rl.update({"REDIS_URL": f"127.0.0.1:{redis_port}", "RUNTIME_ROOT": str(tmp_path / "runtime"),
                       "HOST": "127.0.0.1", "PORT": str(http), "GRPC_HOST": "127.0.0.1",
                       "GRPC_PORT": str(free_port()), "DEBUG_HOST": "127.0.0.1",
                       "DEBUG_PORT": str(free_port()), "PATH": os.environ.get("PATH", "")})
            p = spawn([str(SERVICE_BIN)], rl, f"ratelimit-{with_auth}.log")
            deadline = time.time() + 30
            while time.time() < deadline and p.poll() is None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{http}/healthcheck",
                                                timeout=1) as r:
                        return r.status == 200
                except OSError:
                    time.sleep(0.1)
            return False

        # Without REDIS_AUTH the service cannot use Redis and never becomes healthy.
        assert not ratelimit(with_auth=False)
        assert "NOAUTH" in (tmp_path / "ratelimit-False.log").read_text()
        assert ratelimit(with_auth=True), (tmp_path / "ratelimit-True.log").read_text()[-3000:]
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def test_deploy_env_is_git_ignored_and_its_example_is_not():
    def ignored(path):
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0

    assert ignored("deploy/.env")
    assert not ignored("deploy/.env.example")
    assert os.path.isfile(os.path.join(DEPLOY, ".env.example"))


def test_env_example_names_every_required_secret_without_a_value():
    with open(os.path.join(DEPLOY, ".env.example")) as f:
        lines = dict(line.split("=", 1) for line in f.read().splitlines()
                     if line and not line.startswith("#"))
    for var in REQUIRED:
        # Empty, so compose stops until a real value is filled in.
        assert lines.get(var) == "", (var, lines)
    assert lines.get("ENVIRONMENT") == "production"
