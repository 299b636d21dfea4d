#!/usr/bin/env python3
"""Where the filter module's bytes go, by crate (docs/module-size.md).

Reads a build of the module that kept its function names (scripts/module-size.sh makes one
with the shipped settings), asks twiggy for every item's size, and adds them up by the crate
whose code each item is: the first `crate::` (or `crate[hash]::`) in its name, so a generic
function counts for the crate that defines it (`alloc` for a BTreeMap of the core's types), not
for the crate that instantiated it; serde's deserializers for the core's types have a row of
their own. The section of names and the debug sections are left out: the shipped
module has neither. Prints a Markdown table; --write replaces the table in docs/module-size.md.
"""
import argparse
import collections
import csv
import io
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "module-size.md"
BEGIN, END = "<!-- size-table:begin -->", "<!-- size-table:end -->"
# A path's first segment: `crate[hash]::` in v0-mangled names (the precompiled std's),
# `crate::` in legacy-mangled ones (what the project's own crates get from the toolchain).
CRATE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[[0-9a-f]+\])?::")
SERDE = {"serde", "serde_core", "serde_path_to_error"}
CORE_PATH = re.compile(r"aura_guard_core(?:\[[0-9a-f]+\])?::")
# serde's deserializers instantiated for the core's types (the configuration, JWT claims): the
# derived code is inlined into serde's and serde_path_to_error's generic functions, so the first
# crate in their names would hide what they are.
SERDE_DE = re.compile(r"Deserializ|Visitor|MapAccess|SeqAccess|EnumAccess")
# Parts of the wasm file that are not code or data of any crate.
STRUCTURE = re.compile(r"^(type\[|import |export |elem|table|memory|global|start|code section|"
                       r"data section|type section|import section|export section|function section)")


def leb128(b: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = b[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def without_custom_sections(wasm: bytes) -> int:
    """The size the module has once its custom sections (names, debug info, producers) are
    stripped, as the shipped build strips them."""
    size, i = 8, 8
    while i < len(wasm):
        section_id = wasm[i]
        length, j = leb128(wasm, i + 1)
        if section_id != 0:
            size += j + length - i
        i = j + length
    return size


def owner(name: str) -> str | None:
    """Which row an item counts for; None for what the shipped module does not have."""
    if name.startswith('"function names"') or name.startswith("custom section"):
        return None
    if name.startswith("data segment"):
        return "data segments (strings, tables, constants of every crate)"
    m = CRATE.search(name)
    # Legacy-mangled names leave out generic arguments (`TrackedSeed<X>`), so serde's and
    # serde_path_to_error's deserializers count here too: the core's types are all they serve.
    if SERDE_DE.search(name) and (CORE_PATH.search(name) or (m and m.group(1) in SERDE)):
        return "aura_guard_core's types through serde (configuration, JWT claims)"
    if name.startswith(("import ", "export ")):
        return "wasm structure (types, imports, exports, tables)"
    if m:
        return m.group(1)
    if STRUCTURE.match(name):
        return "wasm structure (types, imports, exports, tables)"
    return "no Rust crate (wasi-libc, dlmalloc, compiler builtins, SDK exports)"


def table(wasm_path: Path, twiggy: str) -> str:
    wasm = wasm_path.read_bytes()
    out = subprocess.run([twiggy, "top", "-f", "csv", str(wasm_path)], check=True,
                         capture_output=True, text=True).stdout
    sizes: collections.Counter = collections.Counter()
    counts: collections.Counter = collections.Counter()
    for row in csv.DictReader(io.StringIO(out)):
        key = owner(row["Name"])
        if key is not None:
            sizes[key] += int(row["ShallowSize"])
            counts[key] += 1
    shipped = without_custom_sections(wasm)
    counted = sum(sizes.values())
    lines = [
        f"Module without its custom sections (as shipped): **{shipped:,} bytes**; the items "
        f"twiggy lists add up to {counted:,}.",
        "",
        "| crate | bytes | share | items |",
        "|---|---:|---:|---:|",
    ]
    for key, size in sizes.most_common():
        lines.append(f"| {key} | {size:,} | {100 * size / shipped:.1f}% | {counts[key]} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wasm", type=Path, help="a build of the module with its name section")
    ap.add_argument("--twiggy", default=str(ROOT / ".tools" / "bin" / "twiggy"))
    ap.add_argument("--write", action="store_true", help=f"replace the table in {DOC}")
    a = ap.parse_args()
    text = table(a.wasm, a.twiggy)
    if not a.write:
        sys.stdout.write(text)
        return 0
    doc = DOC.read_text()
    start, end = doc.find(BEGIN), doc.find(END)
    if start < 0 or end < start:
        print(f"module_size: {DOC} has no {BEGIN} ... {END} block", file=sys.stderr)
        return 1
    DOC.write_text(doc[: start + len(BEGIN)] + "\n" + text + doc[end:])
    print(f"module_size: table written to {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
