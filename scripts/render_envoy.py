#!/usr/bin/env python3
"""Renders envoy/envoy.yaml for one run: ports, cluster endpoints, module path and the plugin
configuration are replaced structurally (not by text), so the committed file stays the single
source of truth for `make run`, the end-to-end tests and the benchmark.

With --deploy it writes deploy/envoy.yaml, the docker compose config, from the same file: see
render_deploy below.

With --fleet-member NAME the config is one Envoy of a fleet (several Envoys sharing the
rate-limit service and the audit collector, `ENVOYS=N make run`): see fleet_member below.

Usage: render_envoy.py --out FILE [--listen-port N] [--admin-port N] [--upstream-port N]
       [--ratelimit-port N] [--collector-port N] [--wasm PATH] [--plugin-config JSON]
       [--audit-config JSON] [--fleet-member NAME] [--template FILE]
       render_envoy.py --deploy [--out FILE (deploy/envoy.yaml)] [--template FILE]
"""
import argparse
import copy
import json
import os
import sys

import yaml

from aura_common import (ROOT, WASM, WASM_REL, cluster_socket_address, find_audit_service,
                         find_wasm_config, wasm_services)


def set_cluster_port(cfg, name, port):
    cluster_socket_address(cfg, name)["port_value"] = int(port)


def render(template, listen_port=None, admin_port=None, upstream_port=None,
           ratelimit_port=None, collector_port=None, wasm=None, plugin_config=None,
           audit_config=None):
    with open(template) as f:
        cfg = yaml.safe_load(f)
    if listen_port:
        cfg["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = int(listen_port)
    if admin_port:
        cfg["admin"]["address"]["socket_address"]["port_value"] = int(admin_port)
    for name, port in (("upstream", upstream_port), ("ratelimit", ratelimit_port),
                       ("audit_collector", collector_port)):
        if port:
            set_cluster_port(cfg, name, port)
    wasm_cfg = find_wasm_config(cfg)
    wasm_path = os.path.abspath(wasm or WASM)
    wasm_cfg["vm_config"]["code"]["local"]["filename"] = wasm_path
    audit_cfg = find_audit_service(cfg)
    if audit_cfg is not None:
        audit_cfg["vm_config"]["code"]["local"]["filename"] = wasm_path
        if audit_config is not None:
            if not isinstance(audit_config, str):
                audit_config = json.dumps(audit_config)
            audit_cfg["configuration"]["value"] = audit_config
    if plugin_config is not None:
        if not isinstance(plugin_config, str):
            plugin_config = json.dumps(plugin_config)
        wasm_cfg["configuration"]["value"] = plugin_config
    return cfg


# --- a fleet: several Envoys sharing the rate-limit service and the collector ---------------
# The webhook replay check a fleet needs: a delivery accepted by one Envoy must be refused by the
# others, so the replay memory is the rate-limit service's Redis, not one Envoy's shared memory
# (docs/webhooks.md).
FLEET_REPLAY_MODE = "ratelimit"


def _json_object(text, what):
    try:
        value = json.loads(text)
    except ValueError as err:
        raise LookupError(f"{what} is not JSON: {err}")
    if not isinstance(value, dict):
        raise LookupError(f"{what} is not a JSON object")
    return value


def fleet_member(cfg, name, replay_mode=FLEET_REPLAY_MODE):
    """Makes a rendered config (`cfg`, edited in place) Envoy `name` of a fleet:
    - the webhook replay check goes fleet-wide (`webhook.replay.mode`: `replay_mode`), unless
      the plugin configuration already names a mode (the operator's choice stands); None leaves
      the mode alone;
    - the audit shipper's streams are named after the Envoy (`stream_prefix`
      `aura-guard-<name>`, unless set), so `aura-collector verify` says whose stream it is.
      Each shipper's stream id is unique anyway (a start time and random bits, docs/audit.md
      §9.3): the name is for people.
    Everything else in the plugin and shipper configurations is kept."""
    wasm_cfg = find_wasm_config(cfg)
    plugin = _json_object(wasm_cfg["configuration"]["value"], "the plugin configuration")
    if replay_mode is not None:
        webhook = plugin.setdefault("webhook", {})
        replay = webhook.setdefault("replay", {}) if isinstance(webhook, dict) else None
        if not isinstance(replay, dict):
            raise LookupError("the plugin configuration's webhook.replay is not an object")
        replay.setdefault("mode", replay_mode)
    wasm_cfg["configuration"]["value"] = json.dumps(plugin)
    audit_cfg = find_audit_service(cfg)
    if audit_cfg is not None:
        shipper = _json_object(audit_cfg["configuration"]["value"], "the audit configuration")
        shipper.setdefault("stream_prefix", f"aura-guard-{name}")
        audit_cfg["configuration"]["value"] = json.dumps(shipper)
    return cfg


# --- deploy/envoy.yaml -------------------------------------------------------------------------
# The docker compose config is envoy/envoy.yaml with these changes and no others: the listener
# binds all addresses inside its container, the admin API binds loopback only (it can stop
# Envoy, /quitquitquit; the compose healthcheck runs inside the container), Envoy reaches the
# other services by their compose names, and loads the module from where
# deploy/docker-compose.yaml mounts it.
DEPLOY_OUT = os.path.join(ROOT, "deploy", "envoy.yaml")
DEPLOY_BIND = "0.0.0.0"
DEPLOY_ADMIN_BIND = "127.0.0.1"
DEPLOY_WASM = "/etc/envoy/aura_guard.wasm"
DEPLOY_CLUSTER_TYPE = "STRICT_DNS"
# cluster -> compose service. A cluster added to envoy/envoy.yaml needs its service here.
DEPLOY_HOSTS = {"upstream": "upstream", "ratelimit": "ratelimit", "audit_collector": "collector"}
DEPLOY_HEADER = """\
# GENERATED from envoy/envoy.yaml by scripts/render_envoy.py --deploy: do not edit by hand.
# Edit envoy/envoy.yaml (or the deploy settings in scripts/render_envoy.py), then regenerate
# from the repository root with
#   .venv/bin/python scripts/render_envoy.py --deploy
# tests/test_deploy.py fails when this file differs from what that command writes.
#
# aura-guard in docker compose (deploy/docker-compose.yaml): Envoy listens on :{listen} in its
# container (admin on its loopback only, 127.0.0.1:{admin}) and reaches the other services by
# their compose names. Everything else is envoy/envoy.yaml (the local stack) as it stands; only
# the bind addresses, the cluster hosts (STRICT_DNS) and the module path differ.
# tests/test_deploy.py validates this file with the real Envoy binary.
"""


def deploy_config(cfg):
    """What deploy/envoy.yaml must parse to: `cfg` (envoy/envoy.yaml) with the deploy changes."""
    cfg = copy.deepcopy(cfg)
    cfg["admin"]["address"]["socket_address"]["address"] = DEPLOY_ADMIN_BIND
    for listener in cfg["static_resources"]["listeners"]:
        listener["address"]["socket_address"]["address"] = DEPLOY_BIND
    for cluster in cfg["static_resources"]["clusters"]:
        if cluster["name"] not in DEPLOY_HOSTS:
            raise SystemExit(f"render_envoy: cluster {cluster['name']} has no compose service in "
                             "DEPLOY_HOSTS (scripts/render_envoy.py)")
        cluster["type"] = DEPLOY_CLUSTER_TYPE
        cluster_socket_address(cfg, cluster["name"])["address"] = DEPLOY_HOSTS[cluster["name"]]
    for vm in [find_wasm_config(cfg)] + wasm_services(cfg):
        vm["vm_config"]["code"]["local"]["filename"] = DEPLOY_WASM
    return cfg


def _rewrite_lines(text, edits):
    """Replaces each line whose text (indentation aside) is an edit's `line` by the edit's
    lines, indented like it. Each edit must match exactly `count` lines."""
    by_line = {line: (new, count) for line, new, count in edits}
    seen = dict.fromkeys(by_line, 0)
    out = []
    for raw in text.splitlines(keepends=True):
        stripped = raw.strip()
        if stripped not in by_line:
            out.append(raw)
            continue
        seen[stripped] += 1
        indent = raw[:len(raw) - len(raw.lstrip())]
        out.extend(indent + new + "\n" for new in by_line[stripped][0])
    for line, (_, count) in by_line.items():
        if seen[line] != count:
            raise SystemExit(f"render_envoy: --deploy expects {count} line(s) `{line}` in the "
                             f"template, found {seen[line]}; update the deploy edits in "
                             "scripts/render_envoy.py")
    return "".join(out)


def render_deploy(template):
    """deploy/envoy.yaml's text: the template's own lines and comments with the deploy changes
    made line by line (plus a few comments for compose users), checked to parse to exactly
    deploy_config(template)."""
    with open(template) as f:
        text = f.read()
    cfg = yaml.safe_load(text)
    want = deploy_config(cfg)

    def sock(addr):
        return f"socket_address: {{ address: {addr['address']}, port_value: {addr['port_value']} }}"

    admin = cfg["admin"]["address"]["socket_address"]
    listeners = [listener["address"]["socket_address"]
                 for listener in cfg["static_resources"]["listeners"]]
    clusters = cfg["static_resources"]["clusters"]
    edits = [(sock(admin),
              ["# Loopback only: anyone who reaches the admin API can stop Envoy",
               "# (/quitquitquit). Read it from inside the container (deploy/README.md).",
               sock({**admin, "address": DEPLOY_ADMIN_BIND})], 1)]
    edits += [(sock(a), [sock({**a, "address": DEPLOY_BIND})], 1) for a in listeners]
    for cluster in clusters:
        a = cluster_socket_address(cfg, cluster["name"])
        edits.append((sock(a), [sock({**a, "address": DEPLOY_HOSTS[cluster["name"]]})], 1))
    edits += [
        ("type: STATIC", [f"type: {DEPLOY_CLUSTER_TYPE}"], len(clusters)),
        (f"local: {{ filename: {WASM_REL} }}",
         [f"# Mounted from {WASM_REL} (make build).",
          f"local: {{ filename: {DEPLOY_WASM} }}"], 1 + len(wasm_services(cfg))),
        ("environment_variables:",
         ["# Read from the container's environment, which the envoy service in",
          "# docker-compose.yaml fills from your shell or deploy/.env; a name added",
          "# here must be added there too.",
          "environment_variables:"], 1 + len(wasm_services(cfg))),
        ("use_remote_address: true",
         ["# Envoy is the edge here: put a load balancer in front and raise the filter's",
          "# ratelimit.trusted_hops to match.",
          "use_remote_address: true"], 1),
        ("- name: upstream",
         ["# The application (the demo upstream in compose; point it at yours).",
          "- name: upstream"], 1),
    ]
    body = _rewrite_lines(text, edits)
    # The template's opening comment is about the local stack: the deploy header replaces it.
    lines = body.splitlines(keepends=True)
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    listen = listeners[0]["port_value"]
    out = DEPLOY_HEADER.format(listen=listen, admin=admin["port_value"]) + "".join(lines)
    if yaml.safe_load(out) != want:
        raise SystemExit("render_envoy: --deploy's line edits no longer give the deploy config; "
                         "update them in scripts/render_envoy.py")
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--template", default=os.path.join(ROOT, "envoy/envoy.yaml"))
    p.add_argument("--out", help="required, except with --deploy (default deploy/envoy.yaml)")
    p.add_argument("--deploy", action="store_true",
                   help="write the docker compose config (deploy/envoy.yaml) instead")
    for name in ("listen-port", "admin-port", "upstream-port", "ratelimit-port", "collector-port"):
        p.add_argument("--" + name)
    p.add_argument("--wasm")
    p.add_argument("--plugin-config")
    p.add_argument("--audit-config", help="the audit shipper's configuration (JSON)")
    p.add_argument("--fleet-member", metavar="NAME",
                   help="one Envoy of a fleet: fleet-wide webhook replay check, audit streams "
                        "named aura-guard-NAME (fleet_member)")
    a = p.parse_args()
    if a.deploy:
        run_opts = [o for o in ("listen_port", "admin_port", "upstream_port", "ratelimit_port",
                                "collector_port", "wasm", "plugin_config", "audit_config",
                                "fleet_member")
                    if getattr(a, o) is not None]
        if run_opts:
            p.error(f"--deploy takes only --template and --out, not {run_opts}")
    elif not a.out:
        p.error("--out is required")
    try:
        if a.deploy:
            text = render_deploy(a.template)
        else:
            cfg = render(a.template, a.listen_port, a.admin_port, a.upstream_port,
                         a.ratelimit_port, a.collector_port, a.wasm, a.plugin_config,
                         a.audit_config)
            if a.fleet_member is not None:
                fleet_member(cfg, a.fleet_member)
            text = yaml.safe_dump(cfg, sort_keys=False)
    except LookupError as err:
        raise SystemExit(f"render_envoy: {err}")
    with open(a.out or DEPLOY_OUT, "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
