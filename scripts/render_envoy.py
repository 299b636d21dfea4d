#!/usr/bin/env python3
"""Renders envoy/envoy.yaml for one run: ports, cluster endpoints, module path and the plugin
configuration are replaced structurally (not by text), so the committed file stays the single
source of truth for `make run`, the end-to-end tests and the benchmark.

Usage: render_envoy.py --out FILE [--listen-port N] [--admin-port N] [--upstream-port N]
       [--ratelimit-port N] [--collector-port N] [--wasm PATH] [--plugin-config JSON]
       [--audit-config JSON] [--template FILE]
"""
import argparse
import json
import os
import sys

import yaml

from aura_common import ROOT, WASM, cluster_socket_address, find_audit_service, find_wasm_config


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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--template", default=os.path.join(ROOT, "envoy/envoy.yaml"))
    p.add_argument("--out", required=True)
    for name in ("listen-port", "admin-port", "upstream-port", "ratelimit-port", "collector-port"):
        p.add_argument("--" + name)
    p.add_argument("--wasm")
    p.add_argument("--plugin-config")
    p.add_argument("--audit-config", help="the audit shipper's configuration (JSON)")
    a = p.parse_args()
    try:
        cfg = render(a.template, a.listen_port, a.admin_port, a.upstream_port, a.ratelimit_port,
                     a.collector_port, a.wasm, a.plugin_config, a.audit_config)
    except LookupError as err:
        raise SystemExit(f"render_envoy: {err}")
    with open(a.out, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
