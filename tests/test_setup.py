"""scripts/setup.sh on a machine that lacks things: its prerequisite check names every missing
one in one message and stops before installing anything; with rustup it takes rustup's wasm
targets and falls back to Debian's toolchain when rustup cannot add them.

Runs a copy of the setup scripts in a scratch directory with a PATH of stand-ins (small shell
scripts) for the tools it looks for, so nothing on this machine is installed or changed."""
import os
import shutil
import subprocess

import pytest

from harness import ROOT

COPIED = ["scripts/setup.sh", "scripts/lib.sh", "scripts/setup-ratelimit.sh", "Cargo.lock",
          "tests/requirements.txt", ".envoy-version", ".envoy-compat-versions"]
# What the scripts themselves run (not prerequisites): taken from this machine.
BASE_TOOLS = ["bash", "sh", "env", "dirname", "cat", "awk", "grep", "tr", "cut", "head", "sed",
              "ls", "cmp", "rm", "mkdir", "cp"]
# Every command setup.sh's check looks for on PATH, each a stand-in that succeeds.
PREREQS = ["cargo", "rustup", "go", "node", "cc", "redis-server", "curl", "apt-get"]


def real_python():
    # The interpreter itself (not a pyenv shim, not this venv's), for `import venv, ensurepip`.
    return subprocess.check_output(["python3", "-c", "import sys; print(sys.executable)"],
                                   text=True).strip()


def stub(bin_dir, name, body="exit 0"):
    path = os.path.join(bin_dir, name)
    # A base tool here is a symlink to the machine's own: replace the link, never write
    # through it.
    if os.path.lexists(path):
        os.unlink(path)
    with open(path, "x") as f:
        f.write("#!/bin/sh\n" + body + "\n")
    os.chmod(path, 0o755)


@pytest.fixture
def box(tmp_path):
    """A copy of the setup scripts (nothing installed: no .venv, no .tools) and an empty bin/."""
    root = tmp_path / "repo"
    for rel in COPIED:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(os.path.join(ROOT, rel), root / rel)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in BASE_TOOLS:
        os.symlink(shutil.which(tool), bin_dir / tool)
    return root, str(bin_dir)


def setup_sh(root, bin_dir, *args):
    env = {"PATH": bin_dir, "HOME": str(root), "LANG": "C.UTF-8"}
    return subprocess.run(["bash", str(root / "scripts/setup.sh"), *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


def test_every_missing_prerequisite_is_named_in_one_message_before_anything_is_installed(box):
    root, bin_dir = box
    stub(bin_dir, "id", "echo 1000")          # not root,
    stub(bin_dir, "dpkg", "exit 1")           # no Debian package installed, no apt-get, no sudo
    for args in (["check", "all"], ["all"]):
        r = setup_sh(root, bin_dir, *args)
        assert r.returncode == 1, r
        assert r.stderr.count("missing prerequisites") == 1, r.stderr
        named = [ln.split("- ", 1)[1].split(":")[0] for ln in r.stderr.splitlines() if "  - " in ln]
        assert named == ["cargo", "rustup", "python3 with venv and ensurepip", "node", "go",
                         "apt-get and dpkg (Debian or Ubuntu)", "root or passwordless sudo"], r.stderr
        # The packages apt-get would install are named with what needs root.
        root_line = next(ln for ln in r.stderr.splitlines() if "root or passwordless sudo" in ln)
        for pkg in ("rustc-web", "binaryen", "redis-server", "wrk", "postgresql", "g++", "gcc"):
            assert pkg in root_line.split(), root_line
        assert r.stdout == "", "a step ran before the check"
        assert not (root / ".venv").exists() and not (root / ".tools").exists()


def test_only_what_a_target_needs_is_named(box):
    root, bin_dir = box
    stub(bin_dir, "id", "echo 0")
    stub(bin_dir, "dpkg", "exit 1")
    stub(bin_dir, "apt-get")
    os.symlink(real_python(), os.path.join(bin_dir, "python3"))
    r = setup_sh(root, bin_dir, "check", "ratelimit")
    assert r.returncode == 1, r
    assert [ln for ln in r.stderr.splitlines() if "  - " in ln] == [
        "setup:   - go: Go >= 1.25 (https://go.dev/dl): go install github.com/envoyproxy/ratelimit"]


def test_with_everything_present_the_check_passes(box):
    root, bin_dir = box
    for name in PREREQS:
        stub(bin_dir, name)
    stub(bin_dir, "id", "echo 1000")
    stub(bin_dir, "sudo")                     # passwordless sudo
    stub(bin_dir, "dpkg", "exit 1")           # packages to install: fine with apt-get and sudo
    os.symlink(real_python(), os.path.join(bin_dir, "python3"))
    for what in ("all", "build", "run", "compat", "bench", "fuzz", "size"):
        r = setup_sh(root, bin_dir, "check", what)
        assert (r.returncode, r.stderr) == (0, ""), (what, r)
        assert r.stdout == f"setup: prerequisites for {what}: present\n"


def test_unknown_target_is_refused_with_usage(box):
    root, bin_dir = box
    r = setup_sh(root, bin_dir, "check", "everything")
    assert r.returncode == 2 and "usage: scripts/setup.sh" in r.stderr, r


# A rustup stand-in: `toolchain install` succeeds (and is remembered) when ADD_OK is set.
RUSTUP = """
state="$(dirname "$0")/targets"
case "$1 $2" in
  "target list") cat "$state" 2>/dev/null ;;
  "toolchain install") echo "$@" >> "$(dirname "$0")/rustup.log"
    [ -n "$ADD_OK" ] || { echo "error: could not download" >&2; exit 1; }
    printf 'wasm32-wasip1\\nwasm32-unknown-unknown\\n' > "$state" ;;
esac
"""


@pytest.mark.parametrize("add_ok", [True, False], ids=["rustup-target", "debian-fallback"])
def test_rustup_targets_first_and_the_debian_toolchain_when_rustup_cannot(box, add_ok):
    root, bin_dir = box
    stub(bin_dir, "rustup", ("ADD_OK=1\n" if add_ok else "ADD_OK=\n") + RUSTUP)
    stub(bin_dir, "wasm-opt", "echo 'wasm-opt version 123'")
    stub(bin_dir, "id", "echo 0")
    stub(bin_dir, "dpkg", "exit 0")          # the Debian toolchain is installed
    r = setup_sh(root, bin_dir, "build")
    assert r.returncode == 0, r
    with open(os.path.join(bin_dir, "rustup.log")) as f:
        # The toolchain Debian's rustc-web matches (scripts/lib.sh), never the default one.
        assert f.read().split() == ["toolchain", "install", "1.96.0", "--profile", "minimal",
                                    "--target=wasm32-wasip1", "--target=wasm32-unknown-unknown"]
    lines = r.stdout.splitlines()
    # The step says what it starts before it starts.
    assert lines[0] == ("setup: rustup toolchain install 1.96.0 with targets wasm32-wasip1 "
                        "wasm32-unknown-unknown (about 1 min, 100 MB)"), r.stdout
    if add_ok:
        assert "setup: wasm toolchain: rustup 1.96.0 with target wasm32-wasip1" in lines, r.stdout
        # A second run finds them and installs nothing.
        r = setup_sh(root, bin_dir, "build")
        assert r.returncode == 0 and "toolchain install" not in r.stdout, r
    else:
        assert "setup: rustup could not install them: using Debian's rustc-web instead" \
            in lines, r.stdout
        assert any(ln.startswith("setup: wasm toolchain: Debian rustc-web") for ln in lines), \
            r.stdout


def test_not_root_installs_debian_packages_through_sudo_and_says_so_first(box):
    root, bin_dir = box
    log = os.path.join(bin_dir, "calls.log")
    stub(bin_dir, "id", "echo 1000")
    stub(bin_dir, "dpkg", "exit 1")          # nothing installed yet
    stub(bin_dir, "sudo", f'echo "sudo $*" >> {log}; [ "$1" = -n ] && shift; "$@"')
    stub(bin_dir, "apt-get", f'echo "apt-get $*" >> {log}')
    stub(bin_dir, "wasm-opt", "echo 'wasm-opt version 123'")
    r = setup_sh(root, bin_dir, "build")    # no rustup: the Debian toolchain
    assert r.returncode == 0, r
    debian = "rustc-web cargo-web rust-web-src wasi-libc lld-19"
    assert r.stdout.splitlines()[1] == \
        f"setup: installing Debian packages {debian} with apt-get (about 1-3 min)", r.stdout
    with open(log) as f:
        calls = f.read().splitlines()
    install = "env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq"
    openssl = "libssl-dev pkg-config openssl"
    assert calls == ["sudo -n true", "sudo -n apt-get update -qq", "apt-get update -qq",
                     f"sudo -n {install} {debian}", f"apt-get install -y -qq {debian}",
                     f"sudo -n {install} binaryen", "apt-get install -y -qq binaryen",
                     # the collector (make build builds it too) links OpenSSL
                     f"sudo -n {install} {openssl}", f"apt-get install -y -qq {openssl}"], calls


def test_with_rustup_a_missing_prerequisite_is_named_before_rustup_downloads_anything(box):
    root, bin_dir = box
    for name in PREREQS:
        if name != "go":
            stub(bin_dir, name)
    stub(bin_dir, "rustup", "ADD_OK=1\n" + RUSTUP)
    stub(bin_dir, "id", "echo 0")
    stub(bin_dir, "dpkg", "exit 0")
    os.symlink(real_python(), os.path.join(bin_dir, "python3"))
    r = setup_sh(root, bin_dir, "all")
    assert r.returncode == 1, r
    assert [ln for ln in r.stderr.splitlines() if "  - " in ln][0].startswith("setup:   - go:"), r
    assert r.stdout == "", "a step ran before the check"
    assert not os.path.exists(os.path.join(bin_dir, "rustup.log")), "rustup installed first"
