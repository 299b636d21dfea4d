"""deploy/kubernetes/ and deploy/docker-compose.yaml checked with the projects' own code
(docs/kubernetes.md, "How this is checked"): tests/k8s (Go) decodes every manifest strictly
into the Go types of k8s.io/api, sigs.k8s.io/gateway-api, istio.io/client-go and
github.com/envoyproxy/gateway, and loads the compose file with compose-go, the loader
`docker compose` uses. Each check is also shown to refuse a broken input. The Envoy fragments
the manifests carry (filter, clusters, audit shipper) are assembled into one config that the
real Envoy validates with the built module.
"""
import copy
import glob
import json
import os
import re
import subprocess

import pytest
import yaml

from harness import ROOT, WASM, clean_env, envoy_bin
from aura_common import find_wasm_config, wasm_services

K8S = os.path.join(ROOT, "deploy", "kubernetes")
COMPOSE = os.path.join(ROOT, "deploy", "docker-compose.yaml")
MANIFESTS = sorted(glob.glob(os.path.join(K8S, "**", "*.yaml"), recursive=True))
SECRET_KEYS = {"JWT_SECRET_KEY", "AUDIT_COLLECTOR_TOKEN", "REDIS_PASSWORD"}
COMPOSE_ENV = {"JWT_SECRET_KEY": "j" * 40, "AUDIT_COLLECTOR_TOKEN": "t" * 20,
               "REDIS_PASSWORD": "r" * 40}


@pytest.fixture(scope="session")
def validator(tmp_path_factory):
    """tests/k8s built once per session (Go's build cache makes later sessions fast)."""
    out = tmp_path_factory.mktemp("k8s") / "validate"
    r = subprocess.run(["go", "build", "-o", str(out), "."], cwd=os.path.join(ROOT, "tests", "k8s"),
                       capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stdout + r.stderr
    return str(out)


def run(validator, *args, env=None):
    return subprocess.run([validator, *args], capture_output=True, text=True, timeout=120,
                          env=clean_env(env or {}))


def docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def objects():
    return [(os.path.relpath(p, K8S), d) for p in MANIFESTS for d in docs(p)]


def find(kind, name=None, where=None):
    found = [d for p, d in objects() if d["kind"] == kind
             and (name is None or d["metadata"]["name"] == name)
             and (where is None or p.startswith(where))]
    assert len(found) == 1, (kind, name, where, len(found))
    return found[0]


# --- strict decoding with the projects' Go types ------------------------------------------------

def test_every_manifest_decodes_strictly_into_its_projects_go_type(validator):
    r = run(validator, "k8s", *MANIFESTS)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\nok ") + r.stdout.startswith("ok ") == len(objects())


def test_istio_gateway_deployment_overlay_decodes_as_a_deployment(validator, tmp_path):
    # Istio merges it into the gateway's Deployment; a typo there would be dropped silently.
    cm = find("ConfigMap", "aura-guard-gateway-options")
    overlay = yaml.safe_load(cm["data"]["deployment"])
    doc = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "overlay"}, **overlay}
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(doc))
    r = run(validator, "k8s", str(path))
    assert r.returncode == 0, r.stderr


BROKEN = [
    # (file, a change that must be refused, what the error names)
    ("shared/redis.yaml", lambda d: d[0]["spec"]["template"]["spec"].update(restartPolicyy="Always"),
     "restartPolicyy"),
    ("istio/aura-guard.yaml", lambda d: d[0]["spec"]["configPatches"][0].update(applyToo="CLUSTER"),
     "applyToo"),
    ("istio-wasmplugin/wasmplugin.yaml", lambda d: d[0]["spec"].update(failStrategyy="FAIL_OPEN"),
     "failStrategyy"),
    ("envoy-gateway/aura-guard.yaml", lambda d: d[0]["spec"]["wasm"][0].update(allowOnHeadersStopIteration=True),
     "allowOnHeadersStopIteration"),
    ("envoy-gateway/aura-guard.yaml", lambda d: d[1]["spec"]["jsonPatches"][0]["operation"].update(jsonPathh="x"),
     "jsonPathh"),
    ("envoy-gateway/envoyproxy.yaml", lambda d: d[0]["spec"]["bootstrap"].update(patches=[]), "patches"),
    ("envoy-gateway/gateway.yaml", lambda d: d[0]["spec"]["listeners"][0].update(hostnamee="x"), "hostnamee"),
    ("shared/ratelimit.yaml", lambda d: d.append({"apiVersion": "v1", "kind": "Pods", "metadata": {"name": "x"}}),
     "unknown apiVersion/kind"),
]


@pytest.mark.parametrize("rel,change,named", BROKEN, ids=[f"{b[0]}:{b[2]}" for b in BROKEN])
def test_validator_refuses_an_unknown_field_or_kind(validator, tmp_path, rel, change, named):
    d = docs(os.path.join(K8S, rel))
    change(d)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump_all(d, sort_keys=False))
    r = run(validator, "k8s", str(path))
    assert r.returncode == 1, r.stdout
    assert named in r.stderr, r.stderr


# --- generated and shared content -------------------------------------------------------------

def test_ratelimit_configmap_is_rendered_from_the_plugin_config():
    r = subprocess.run([os.path.join(ROOT, ".venv", "bin", "python"),
                        os.path.join(ROOT, "scripts", "render_kubernetes.py"), "--check"],
                       capture_output=True, text=True, timeout=1200, cwd=ROOT)
    assert r.returncode == 0, ("deploy/kubernetes/shared/ratelimit-config.yaml is stale: run "
                               "`.venv/bin/python scripts/render_kubernetes.py`\n" + r.stdout + r.stderr)


def test_ratelimit_service_mounts_the_configmap_where_it_looks():
    dep = find("Deployment", "ratelimit")
    pod = dep["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    mount = pod["containers"][0]["volumeMounts"][0]
    assert mount["mountPath"] == f"{env['RUNTIME_ROOT']}/{env['RUNTIME_SUBDIRECTORY']}/{env['RUNTIME_APPDIRECTORY']}"
    vol = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    cm = find("ConfigMap", vol["configMap"]["name"])
    assert "config.yaml" in cm["data"]


def plugin_configs():
    with open(os.path.join(K8S, "plugin-config.json")) as f:
        want = json.load(f)
    ef = find("EnvoyFilter", "aura-guard")
    wasm = ef["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["config"]
    return want, {
        "istio EnvoyFilter": json.loads(wasm["configuration"]["value"]),
        "istio WasmPlugin": find("WasmPlugin", "aura-guard")["spec"]["pluginConfig"],
        "EnvoyExtensionPolicy": find("EnvoyExtensionPolicy", "aura-guard")["spec"]["wasm"][0]["config"],
    }


def test_every_variant_carries_the_plugin_config_the_configmap_is_rendered_from():
    want, got = plugin_configs()
    for where, cfg in got.items():
        assert cfg == want, where


def local_filter():
    with open(os.path.join(ROOT, "envoy", "envoy.yaml")) as f:
        cfg = yaml.safe_load(f)
    return cfg, find_wasm_config(cfg)


def test_every_variant_passes_the_filter_the_variables_the_local_stack_does():
    _, local = local_filter()
    want = local["vm_config"]["environment_variables"]["host_env_keys"]
    ef = find("EnvoyFilter", "aura-guard")["spec"]["configPatches"][0]["patch"]["value"]
    assert ef["typed_config"]["config"]["vm_config"]["environment_variables"]["host_env_keys"] == want
    assert [e["name"] for e in find("WasmPlugin", "aura-guard")["spec"]["vmConfig"]["env"]] == want
    assert all(e["valueFrom"] == "HOST" for e in find("WasmPlugin", "aura-guard")["spec"]["vmConfig"]["env"])
    assert find("EnvoyExtensionPolicy", "aura-guard")["spec"]["wasm"][0]["env"]["hostKeys"] == want


def test_the_body_hold_is_set_in_each_variant_that_claims_it():
    ef = find("EnvoyFilter", "aura-guard")["spec"]["configPatches"]
    config = ef[0]["patch"]["value"]["typed_config"]["config"]
    assert config["allow_on_headers_stop_iteration"] is True
    assert config["failure_policy"] == "FAIL_RELOAD"
    # The HTTP filter names the extension config it uses.
    assert ef[1]["patch"]["value"]["name"] == ef[0]["patch"]["value"]["name"]
    # Envoy Gateway: the patch must name the listener and filter it generates for these objects.
    gw = find("Gateway", "aura-guard", where="envoy-gateway")
    eep = find("EnvoyExtensionPolicy", "aura-guard")
    filter_name = (f"envoy.filters.http.wasm/envoyextensionpolicy/{eep['metadata']['namespace']}/"
                   f"{eep['metadata']['name']}/wasm/0")
    listener = f"{gw['metadata']['namespace']}/{gw['metadata']['name']}/{gw['spec']['listeners'][0]['name']}"
    patches = find("EnvoyPatchPolicy", "aura-guard")["spec"]["jsonPatches"]
    set_fields = {}
    for p in patches:
        if p["type"].endswith("Listener"):
            assert p["name"] == listener
            assert f"'{filter_name}'" in p["operation"]["jsonPath"]
            set_fields[p["operation"]["path"]] = p["operation"]["value"]
    assert set_fields == {"/allow_on_headers_stop_iteration": True, "/failure_policy": "FAIL_RELOAD"}


def shipper_configs():
    istio = json.loads(find("ConfigMap", "aura-guard-bootstrap")["data"]["custom_bootstrap.json"])
    eg = {p["path"]: p["value"] for p in find("EnvoyProxy", "aura-guard")["spec"]["bootstrap"]["jsonPatches"]}
    return {"istio": (istio["bootstrap_extensions"], istio["static_resources"]["clusters"]),
            "envoy-gateway": (eg["/bootstrap_extensions"], [eg["/static_resources/clusters/-"]])}


def test_the_audit_shipper_is_configured_as_in_the_local_stack():
    cfg, _ = local_filter()
    local = wasm_services(cfg)[0]
    collector = next(c for c in cfg["static_resources"]["clusters"] if c["name"] == "audit_collector")
    for where, (exts, clusters) in shipper_configs().items():
        (ext,) = exts
        got = ext["typed_config"]["config"]
        assert ext["typed_config"]["singleton"] is True, where
        for key in ("name", "root_id", "configuration"):
            assert got[key] == local[key], (where, key)
        for key in ("vm_id", "runtime", "environment_variables"):
            assert got["vm_config"][key] == local["vm_config"][key], (where, key)
        (cluster,) = clusters
        assert cluster["name"] == "audit_collector"
        assert cluster["circuit_breakers"] == collector["circuit_breakers"], where


def test_clusters_point_at_the_shared_services():
    services = {d["metadata"]["name"]: d for _, d in objects() if d["kind"] == "Service"}
    rl = [find("EnvoyFilter", "aura-guard-clusters")["spec"]["configPatches"][0]["patch"]["value"],
          next(p["operation"]["value"] for p in find("EnvoyPatchPolicy", "aura-guard")["spec"]["jsonPatches"]
               if p["type"].endswith("Cluster"))]
    audit = [c for _, (_, cs) in shipper_configs().items() for c in cs]
    for cluster, svc in [(c, "ratelimit") for c in rl] + [(c, "collector") for c in audit]:
        addr = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
        s = services[svc]
        assert addr["address"] == f"{svc}.{s['metadata']['namespace']}.svc.cluster.local"
        assert addr["port_value"] in [p["port"] for p in s["spec"]["ports"]]
    _, cfg = plugin_configs()
    assert all(c["name"] == cfg["EnvoyExtensionPolicy"]["ratelimit"]["cluster"] for c in rl)


def test_the_module_image_is_named_the_same_everywhere():
    text = "".join(open(p).read() for p in MANIFESTS)
    refs = set(re.findall(r"registry\.example\.com/aura-guard[:@][\w.:]+", text))
    assert {r.split("@")[0].split(":")[0] for r in refs} == {"registry.example.com/aura-guard"}
    assert len({r for r in refs if ":" in r and "@" not in r}) == 1, refs
    assert len({r for r in refs if "@" in r}) == 1, refs


def test_no_literal_secret_in_any_manifest():
    for rel, d in objects():
        if d["kind"] == "Secret":
            assert all(v == "" for v in d.get("stringData", {}).values()), rel
            assert "data" not in d, rel
            continue
        text = json.dumps(d)
        for key in SECRET_KEYS:
            for m in re.finditer(r'"name": "%s", "value": ' % key, text):
                pytest.fail(f"{rel}: {key} given a literal value")
        # Every secret-named variable comes from a secretKeyRef (or, in a WasmPlugin, from the
        # proxy's own environment, which has it from a secretKeyRef).
        for e in re.findall(r'\{"name": "((?:JWT_SECRET_KEY|AUDIT_COLLECTOR_TOKEN|REDIS_PASSWORD|WEBHOOK_SECRET_\w+))", ([^}]*)', text):
            assert "secretKeyRef" in e[1] or e[1] == '"valueFrom": "HOST"', (rel, e)


# --- Envoy validates the fragments --------------------------------------------------------------

def test_real_envoy_validates_the_fragments_the_manifests_carry(tmp_path):
    """The wasm filter (Istio EnvoyFilter and Envoy Gateway's patched fields), the clusters and
    the audit shipper, put in place of their envoy/envoy.yaml counterparts: Envoy 1.40 with the
    built module validates the result (loading the module and running its configuration check)."""
    cfg, _ = local_filter()
    ef = find("EnvoyFilter", "aura-guard")["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]
    wasm = copy.deepcopy(ef)
    wasm["config"]["vm_config"]["code"] = {"local": {"filename": WASM}}
    # Envoy Gateway's fields, as its patch sets them.
    for p in find("EnvoyPatchPolicy", "aura-guard")["spec"]["jsonPatches"]:
        if p["type"].endswith("Listener"):
            wasm["config"][p["operation"]["path"].lstrip("/")] = p["operation"]["value"]
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"][0]["typed_config"] = wasm
    for where, (exts, clusters) in shipper_configs().items():
        ext = copy.deepcopy(exts[0])
        ext["typed_config"]["config"]["vm_config"]["code"] = {"local": {"filename": WASM}}
        rl = find("EnvoyFilter", "aura-guard-clusters")["spec"]["configPatches"][0]["patch"]["value"]
        c = dict(cfg, bootstrap_extensions=[ext])
        c["static_resources"] = dict(cfg["static_resources"], clusters=[
            next(x for x in cfg["static_resources"]["clusters"] if x["name"] == "upstream"), rl, clusters[0]])
        path = tmp_path / f"{where}.yaml"
        path.write_text(yaml.safe_dump(c, sort_keys=False))
        r = subprocess.run([envoy_bin(), "--mode", "validate", "-c", str(path), "--log-level", "warn"],
                           capture_output=True, text=True, timeout=120,
                           env=clean_env({"ENVIRONMENT": "production",
                                          "AUDIT_COLLECTOR_TOKEN": "test-only-token-0123456789",
                                          "JWT_SECRET_KEY": "test-only-jwt-secret-0123456789abcdef"}))
        assert r.returncode == 0, (where, r.stdout + r.stderr)


# --- docker compose, loaded by compose-go -----------------------------------------------------

@pytest.fixture(scope="module")
def project(validator):
    r = run(validator, "compose", COMPOSE, env=COMPOSE_ENV)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_compose_go_loads_the_compose_file(project):
    assert set(project["services"]) == {"envoy", "upstream", "redis", "ratelimit", "collector"}


def test_compose_go_refuses_it_without_a_required_secret(validator):
    for var in COMPOSE_ENV:
        env = {k: v for k, v in COMPOSE_ENV.items() if k != var}
        r = run(validator, "compose", COMPOSE, env=env)
        assert r.returncode == 1 and f"required variable {var} is missing" in r.stderr, r.stderr


@pytest.mark.parametrize("change,named", [
    (lambda t: t.replace("    restart: unless-stopped\n", "    restartt: unless-stopped\n", 1), "restartt"),
    (lambda t: t.replace("condition: service_healthy", "condition: service_happy", 1), "service_happy"),
    (lambda t: t.replace("      interval: 10s\n", "      interval: ten seconds\n", 1), "interval"),
    (lambda t: t + "  ghost:\n    depends_on: [nobody]\n    image: busybox:1.37.0-musl\n", "nobody"),
], ids=["unknown key", "bad condition", "bad duration", "missing dependency"])
def test_compose_go_refuses_a_broken_compose_file(validator, tmp_path, change, named):
    text = open(COMPOSE).read()
    broken = change(text)
    assert broken != text
    path = os.path.join(ROOT, "deploy", f".broken-{os.getpid()}-{named}.yaml")
    # Next to the original, so its relative paths resolve the same way.
    with open(path, "w") as f:
        f.write(broken)
    try:
        r = run(validator, "compose", path, env=COMPOSE_ENV)
    finally:
        os.unlink(path)
    assert r.returncode == 1, r.stdout[:500]
    assert named in r.stderr, r.stderr


def test_every_compose_service_has_a_healthcheck_and_waits_for_healthy_dependencies(project):
    for name, svc in project["services"].items():
        hc = svc.get("healthcheck")
        assert hc and not hc.get("disable") and hc["test"][0] in ("CMD", "CMD-SHELL"), name
        for dep, how in (svc.get("depends_on") or {}).items():
            assert how["condition"] == "service_healthy", (name, dep)


def test_every_compose_image_is_pinned(project):
    with open(os.path.join(ROOT, ".envoy-version")) as f:
        envoy = f.read().strip()
    for name, svc in project["services"].items():
        image = svc.get("image")
        if "build" in svc and name == "collector":
            continue  # built from deploy/collector.Dockerfile
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", (name, image)
        # A release (x.y.z) or a commit, never a moving major tag like `7-alpine`.
        assert re.match(r"v?\d+\.\d+\.\d+|[0-9a-f]{7,40}$", tag), (name, image)
    assert project["services"]["envoy"]["image"] == f"envoyproxy/envoy:v{envoy}"
    with open(os.path.join(ROOT, "deploy", "ratelimit.Dockerfile")) as f:
        text = f.read()
    for ref in re.findall(r"^(?:ARG RATELIMIT_IMAGE=|FROM )(\S+)", text, re.M):
        if ref.startswith("$"):
            continue
        assert re.search(r":(?:v?\d+\.\d+\.\d+\S*|[0-9a-f]{7,40})$", ref), ref


def test_every_variant_tags_the_stats_as_the_local_stack_does():
    """The stats_tags that turn the filter's counters into labelled Prometheus metrics
    (docs/metrics.md) are envoy/envoy.yaml's, in both bootstraps the manifests patch, and Istio
    keeps the stats they apply to."""
    cfg, _ = local_filter()
    want = cfg["stats_config"]["stats_tags"]
    istio = json.loads(find("ConfigMap", "aura-guard-bootstrap")["data"]["custom_bootstrap.json"])
    assert istio["stats_config"]["stats_tags"] == want
    eg = {p["path"]: p["value"] for p in find("EnvoyProxy", "aura-guard")["spec"]["bootstrap"]["jsonPatches"]}
    assert eg["/stats_config"]["stats_tags"] == want
    annotations = find("Gateway", "aura-guard", where="istio/")["spec"]["infrastructure"]["annotations"]
    matcher = json.loads(annotations["proxy.istio.io/config"])["proxyStatsMatcher"]
    assert set(matcher["inclusionPrefixes"]) >= {"wasmcustom.aura_guard.", "wasm."}
