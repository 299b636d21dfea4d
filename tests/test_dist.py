"""`make dist` (scripts/dist.py, docs/release.md): the versioned module, its sha256, and the OCI
image layout. The image goes through a real registry on loopback (`crane registry serve`,
go-containerregistry, installed by scripts/setup.sh) and back; the module is then taken out of
the pulled image the way Istio's and Envoy Gateway's image fetchers take it. Also: LICENSE and
CHANGELOG.md agree with Cargo.toml."""
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tomllib
import urllib.request

import pytest

from harness import ROOT, WASM, free_port, wait_until

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import dist  # noqa: E402

CRANE = os.path.join(ROOT, ".tools", "bin", "crane")
with open(os.path.join(ROOT, "Cargo.toml"), "rb") as _f:
    PACKAGE = tomllib.load(_f)["workspace"]["package"]
VERSION = PACKAGE["version"]
NAME = f"aura_guard-{VERSION}"


def run_dist(out):
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts/dist.py"), "--out", str(out)],
                   check=True, capture_output=True, text=True)
    return out


@pytest.fixture(scope="module")
def dist_dir(tmp_path_factory):
    return run_dist(tmp_path_factory.mktemp("dist"))


def read(path, mode="rb"):
    with open(path, mode) as f:
        return f.read()


def module_bytes():
    return read(WASM)


def layout_manifest(layout):
    """The single image manifest an OCI layout's index.json names, and its digest."""
    index = json.loads(read(os.path.join(layout, "index.json")))
    assert index["schemaVersion"] == 2 and len(index["manifests"]) == 1, index
    desc = index["manifests"][0]
    assert desc["mediaType"] == dist.MANIFEST, desc
    raw = read(blob_path(layout, desc["digest"]))
    assert len(raw) == desc["size"] and dist.sha256(raw) == desc["digest"]
    return json.loads(raw), desc["digest"]


def blob_path(layout, digest):
    algo, hexd = digest.split(":", 1)
    return os.path.join(layout, "blobs", algo, hexd)


def extract_like_istio(manifest, blob):
    """The module out of an image, by the rules Istio's and Envoy Gateway's image fetchers
    apply to a "compat" image (pkg/wasm/imagefetcher.go in both): the last layer must be
    application/vnd.oci.image.layer.v1.tar+gzip, a gzipped tar holding a file whose base name
    is plugin.wasm; the result must start with the wasm magic number."""
    layer = manifest["layers"][-1]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip", layer
    data = blob(layer["digest"])
    assert dist.sha256(data) == layer["digest"] and len(data) == layer["size"]
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        for member in tar.getmembers():
            if os.path.basename(member.name) == "plugin.wasm":
                module = tar.extractfile(member).read()
                assert module[:4] == b"\0asm"
                return module
    raise AssertionError("plugin.wasm not in the layer")


# --- the files ----------------------------------------------------------------------------------
def test_dist_writes_the_module_its_sha256_and_an_oci_layout(dist_dir):
    module = module_bytes()
    assert read(dist_dir / f"{NAME}.wasm") == module
    # sha256sum's format, so `sha256sum -c` checks it.
    line = read(dist_dir / f"{NAME}.wasm.sha256", "r")
    assert line == f"{hashlib.sha256(module).hexdigest()}  {NAME}.wasm\n"
    subprocess.run(["sha256sum", "-c", "--status", f"{NAME}.wasm.sha256"], cwd=dist_dir,
                   check=True)
    layout = dist_dir / f"{NAME}.oci"
    assert json.loads(read(layout / "oci-layout")) == {"imageLayoutVersion": "1.0.0"}
    manifest, digest = layout_manifest(layout)
    assert read(dist_dir / f"{NAME}.oci.digest", "r") == digest + "\n"
    # One layer (Istio and Envoy Gateway read the last one; the "oci" variant would need two).
    assert len(manifest["layers"]) == 1, manifest
    assert manifest["annotations"]["module.wasm.image/variant"] == "compat"
    assert manifest["annotations"]["org.opencontainers.image.version"] == VERSION
    config = json.loads(read(blob_path(layout, manifest["config"]["digest"])))
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    # The config's diff_id is the digest of the uncompressed layer.
    layer = read(blob_path(layout, manifest["layers"][0]["digest"]))
    assert config["rootfs"] == {"type": "layers",
                                "diff_ids": [dist.sha256(gzip.decompress(layer))]}
    # Nothing but the three blobs the manifest names (and the manifest itself).
    named = {manifest["config"]["digest"], manifest["layers"][0]["digest"], digest}
    assert {f"sha256:{n}" for n in os.listdir(layout / "blobs" / "sha256")} == named
    assert extract_like_istio(manifest, lambda d: read(blob_path(layout, d))) == module


def test_dist_is_deterministic(dist_dir, tmp_path):
    again = run_dist(tmp_path / "again")
    for name in (f"{NAME}.wasm.sha256", f"{NAME}.oci.digest"):
        assert read(again / name) == read(dist_dir / name), name
    # Every file of the layout, byte for byte.
    def files(root):
        out = {}
        for d, _, names in os.walk(root):
            for n in names:
                p = os.path.join(d, n)
                out[os.path.relpath(p, root)] = read(p)
        return out
    assert files(again / f"{NAME}.oci") == files(dist_dir / f"{NAME}.oci")


def test_a_different_module_gives_a_different_image(dist_dir, tmp_path):
    # The digest follows the module: the determinism above is not a constant.
    other = tmp_path / "other.wasm"
    other.write_bytes(module_bytes() + b"\0")  # a trailing byte: still a distinct file
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts/dist.py"), "--wasm",
                    str(other), "--out", str(tmp_path / "o")], check=True, capture_output=True)
    assert read(tmp_path / "o" / f"{NAME}.oci.digest") != read(dist_dir / f"{NAME}.oci.digest")


# --- through a registry -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    assert os.access(CRANE, os.X_OK), f"{CRANE} is missing: scripts/setup.sh installs it"
    log = tmp_path_factory.mktemp("registry") / "crane-registry.log"
    port = free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen([CRANE, "registry", "serve", "--address", f"127.0.0.1:{port}"],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        def up():
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2).status == 200
            except OSError:
                return False
        wait_until(up, 20, "crane registry serve", proc, str(log))
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def crane(*args, **kw):
    return subprocess.run([CRANE, *args, "--insecure"], check=True, capture_output=True, **kw)


def test_the_image_goes_through_a_registry_and_back(dist_dir, registry, tmp_path):
    layout = dist_dir / f"{NAME}.oci"
    _, digest = layout_manifest(layout)
    ref = f"{registry}/aura-guard:{VERSION}"
    crane("push", str(layout), ref)
    # The registry holds the very manifest the layout has (so the .oci.digest users pin is
    # the one they pull), and the image is valid (every blob's digest and the diff_id).
    assert crane("digest", ref, text=True).stdout.strip() == digest
    crane("validate", "--remote", ref)
    # Pulled back as an OCI layout: the module out of it, as Istio and Envoy Gateway take it.
    pulled = tmp_path / "pulled"
    crane("pull", "--format", "oci", ref, str(pulled))
    manifest, pulled_digest = layout_manifest(pulled)
    assert pulled_digest == digest
    assert extract_like_istio(manifest, lambda d: read(blob_path(pulled, d))) == module_bytes()
    # And the image's filesystem (crane export): exactly one file, plugin.wasm, the module.
    exported = crane("export", ref, "-").stdout
    with tarfile.open(fileobj=io.BytesIO(exported)) as tar:
        names = tar.getnames()
        assert names == ["plugin.wasm"], names
        assert tar.extractfile("plugin.wasm").read() == module_bytes()


# --- LICENSE and CHANGELOG ----------------------------------------------------------------------
def test_license_file_matches_cargo_toml():
    # Cargo.toml's `license` is an SPDX expression; this project's is a single license, whose
    # text is LICENSE (an "A OR B" expression would need one file per license instead).
    assert PACKAGE["license"] == "Apache-2.0", "update LICENSE (and this test) with Cargo.toml"
    text = read(os.path.join(ROOT, "LICENSE"), "r")
    assert text.lstrip().startswith("Apache License\n"), text[:200]
    assert "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_changelog_has_the_current_version_and_unreleased():
    text = read(os.path.join(ROOT, "CHANGELOG.md"), "r")
    headings = [ln for ln in text.splitlines() if ln.startswith("## ")]
    assert headings and headings[0].startswith("## [Unreleased]"), headings
    assert any(h.startswith(f"## [{VERSION}]") for h in headings), (VERSION, headings)
