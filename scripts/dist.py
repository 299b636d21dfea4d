#!/usr/bin/env python3
"""`make dist`: the release artifacts of the built module (docs/release.md).

    dist/aura_guard-<version>.wasm         the module `make build` made, byte for byte
    dist/aura_guard-<version>.wasm.sha256  its digest, in sha256sum's format
    dist/aura_guard-<version>.oci/         an OCI image layout (oci-layout, index.json, blobs/)
    dist/aura_guard-<version>.oci.digest   that image's manifest digest ("sha256:...")

The image is the Wasm image spec's "compat" variant, the one Istio's WasmPlugin and Envoy
Gateway's EnvoyExtensionPolicy both pull (docs/release.md#the-oci-image): one layer of media
type application/vnd.oci.image.layer.v1.tar+gzip, a tar holding `plugin.wasm`, and the
manifest annotation module.wasm.image/variant=compat.

Deterministic: the tar entry has fixed owner, mode and mtime, gzip has no name or time, JSON is
written with sorted keys and no spaces, so the same module gives the same image digest.

Usage: dist.py [--wasm PATH] [--out DIR]
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WASM = os.path.join(ROOT, "target/wasm32-wasip1/release/aura_guard.wasm")

OCI_LAYOUT = "application/vnd.oci.image.layout.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
# Istio's and Envoy Gateway's image fetchers look for this name in the layer's tar.
PLUGIN_FILE = "plugin.wasm"


def cargo_package():
    """The workspace's version and license (Cargo.toml [workspace.package])."""
    with open(os.path.join(ROOT, "Cargo.toml"), "rb") as f:
        pkg = tomllib.load(f)["workspace"]["package"]
    return pkg["version"], pkg["license"]


def canonical_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def layer_tar(module):
    """The uncompressed layer: one regular file, plugin.wasm, with nothing that varies."""
    buf = io.BytesIO()
    info = tarfile.TarInfo(PLUGIN_FILE)
    info.size = len(module)
    info.mode = 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(module))
    return buf.getvalue()


def gzip_bytes(data):
    buf = io.BytesIO()
    # filename="" and mtime=0: gzip's header holds neither a name nor a time.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(media_type, data, annotations=None):
    d = {"mediaType": media_type, "digest": sha256(data), "size": len(data)}
    if annotations:
        d["annotations"] = annotations
    return d


def image_blobs(module, version, license_):
    """The image's blobs, {digest: bytes}, and its manifest's bytes."""
    tar = layer_tar(module)
    layer = gzip_bytes(tar)
    # A minimal image config: a wasm platform, and the layer's uncompressed digest (diff_id)
    # that registries and `crane validate` check against the layer.
    config = canonical_json({
        "architecture": "wasm",
        "os": "wasip1",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [sha256(tar)]},
    })
    manifest = canonical_json({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": descriptor(CONFIG, config),
        "layers": [descriptor(LAYER, layer,
                              {"org.opencontainers.image.title": PLUGIN_FILE})],
        "annotations": {
            # The compat variant with the OCI layer media type must say so (Wasm image spec).
            "module.wasm.image/variant": "compat",
            "org.opencontainers.image.title": "aura-guard",
            "org.opencontainers.image.version": version,
            "org.opencontainers.image.licenses": license_,
        },
    })
    blobs = {sha256(b): b for b in (layer, config, manifest)}
    return blobs, manifest


def write_layout(path, module, version, license_):
    """Writes the OCI image layout at path (replacing any there); returns the manifest digest."""
    blobs, manifest = image_blobs(module, version, license_)
    if os.path.isdir(path):
        shutil.rmtree(path)
    blob_dir = os.path.join(path, "blobs", "sha256")
    os.makedirs(blob_dir)
    for digest in sorted(blobs):
        with open(os.path.join(blob_dir, digest.split(":", 1)[1]), "wb") as f:
            f.write(blobs[digest])
    with open(os.path.join(path, "oci-layout"), "wb") as f:
        f.write(canonical_json({"imageLayoutVersion": "1.0.0"}))
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [descriptor(MANIFEST, manifest,
                                 {"org.opencontainers.image.ref.name": version})],
    }
    with open(os.path.join(path, "index.json"), "wb") as f:
        f.write(canonical_json(index))
    return sha256(manifest)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wasm", default=WASM, help="the module (default: make build's)")
    ap.add_argument("--out", default=os.path.join(ROOT, "dist"), help="output directory")
    args = ap.parse_args(argv)
    if not os.path.isfile(args.wasm):
        sys.exit(f"dist: {args.wasm} is missing: run `make build` first")
    with open(args.wasm, "rb") as f:
        module = f.read()
    if module[:4] != b"\0asm":
        sys.exit(f"dist: {args.wasm} is not a wasm module")
    version, license_ = cargo_package()
    os.makedirs(args.out, exist_ok=True)
    name = f"aura_guard-{version}"
    wasm_out = os.path.join(args.out, name + ".wasm")
    with open(wasm_out, "wb") as f:
        f.write(module)
    digest = hashlib.sha256(module).hexdigest()
    with open(wasm_out + ".sha256", "w") as f:
        f.write(f"{digest}  {name}.wasm\n")
    image_digest = write_layout(os.path.join(args.out, name + ".oci"), module, version, license_)
    with open(os.path.join(args.out, name + ".oci.digest"), "w") as f:
        f.write(image_digest + "\n")
    print(f"dist: {wasm_out} ({len(module)} bytes, sha256 {digest})")
    print(f"dist: {os.path.join(args.out, name + '.oci')} (image manifest {image_digest})")


if __name__ == "__main__":
    main()
