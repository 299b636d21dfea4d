"""The release artifacts through real Envoy (docs/release.md): the module `make dist` ships is
loaded from a remote HTTP source (`vm_config.code.remote` with its sha256, served by a plain
HTTP server on loopback through an Envoy cluster of its own) and serves requests; with a wrong
sha256 it is refused. And the module names its version and commit when it is configured."""
import functools
import http.server
import os
import subprocess
import sys
import threading
import tomllib

import pytest

from aura_common import find_wasm_config
from harness import ROOT

with open(os.path.join(ROOT, "Cargo.toml"), "rb") as _f:
    VERSION = tomllib.load(_f)["workspace"]["package"]["version"]
NAME = f"aura_guard-{VERSION}"
SOURCE_CLUSTER = "aura_guard_module_source"


@pytest.fixture(scope="module")
def dist_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts/dist.py"), "--out", str(out)],
                   check=True, capture_output=True)
    return out


class ModuleServer:
    """http.server on loopback serving the dist directory; counts the module's downloads."""

    def __init__(self, directory):
        self.fetches = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                outer.fetches.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(directory)))
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def module_server(dist_dir):
    server = ModuleServer(dist_dir)
    yield server
    server.close()


def remote_code(port, sha256):
    """Edits a rendered config: the filter's module comes from the HTTP server, checked
    against sha256, through a cluster of its own (what a user's config does, docs/release.md).
    The audit shipper's bootstrap VM keeps the local file (a bootstrap wasm service cannot
    fetch remote code: Envoy's cluster manager is not up when it starts)."""
    def edit(cfg):
        vm = find_wasm_config(cfg)["vm_config"]
        vm["code"] = {"remote": {
            "http_uri": {"uri": f"http://127.0.0.1:{port}/{NAME}.wasm",
                         "cluster": SOURCE_CLUSTER, "timeout": "10s"},
            "sha256": sha256,
        }}
        cfg["static_resources"]["clusters"].append({
            "name": SOURCE_CLUSTER, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": SOURCE_CLUSTER, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": port}}}}]}]},
        })
    return edit


def shipped_sha256(dist_dir):
    with open(dist_dir / f"{NAME}.wasm.sha256") as f:
        return f.read().split()[0]


def test_envoy_loads_the_shipped_module_from_a_remote_source(stack_factory, dist_dir,
                                                             module_server):
    s = stack_factory(edit=remote_code(module_server.port, shipped_sha256(dist_dir)))
    assert f"/{NAME}.wasm" in module_server.fetches, module_server.fetches
    r = s.request("GET", "/api/v2/ping")
    assert r.status == 200 and r.json()["upstream"] == "demo", r
    # aura-guard's headers: the remote module is the filter.
    assert r.header("x-content-type-options") == "nosniff", r.headers
    assert r.header("x-frame-options") == "DENY", r.headers
    assert "aura-guard: configured for environment development" in s.envoy_log()


def test_envoy_refuses_a_module_with_the_wrong_sha256(stack_factory, dist_dir, module_server):
    wrong = "0" * 64
    assert wrong != shipped_sha256(dist_dir)
    s = stack_factory(edit=remote_code(module_server.port, wrong))
    # Envoy fetched the file and found it does not match: it fetches again (its remote data
    # source's retries), gives up, and the plugin is not loaded. Envoy still starts (the
    # harness waited for /ready), but the filter fails closed: every request gets Envoy's own
    # 503, never the upstream and never a response without the filter (docs/release.md).
    assert f"/{NAME}.wasm" in module_server.fetches, module_server.fetches
    log = s.envoy_log()
    assert "Plugin aura-guard failed to load" in log, log[-3000:]
    assert "aura-guard: configured for environment" not in log, log[-3000:]
    r = s.request("GET", "/api/v2/ping")
    assert r.status == 503 and r.body == b"", r
    assert "x-content-type-options" not in r.headers, r.headers
    assert s.upstream_requests() == [], s.upstream_requests()


def test_the_module_logs_its_version_and_commit_when_configured(stack_factory):
    # `make build` (scripts/build-wasm.sh) embeds the commit of HEAD, "-dirty" when tracked
    # files differed from it; a module built by a plain `cargo build` says "unknown".
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()
    s = stack_factory()
    lines = [ln for ln in s.envoy_log().splitlines()
             if "aura-guard: configured for environment development" in ln]
    assert lines, s.envoy_log()[-3000:]
    assert lines[0].endswith((f"; version {VERSION}, commit {head}",
                              f"; version {VERSION}, commit {head}-dirty")), \
        (lines[0], "rebuild with `make build` if HEAD moved since the module was built")
