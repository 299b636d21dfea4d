"""The shipped module's size budget (docs/module-size.md): `make build`'s module must not grow
past it. A size is a count of bytes, the same on any machine, so this is no timing test."""
import os

from harness import WASM
import module_size  # noqa: E402  (scripts/ is on the path through harness)

# 800 KiB: what the module weighs today (784 KiB, after the fleet-wide replay check and the
# body-hold watch added 14 KB) and a little room. Issue 12 asks for 500 KB;
# docs/module-size.md says what stands between the two. Lower this as the module shrinks.
BUDGET_BYTES = 800 * 1024


def test_the_shipped_module_is_within_its_size_budget():
    size = os.path.getsize(WASM)
    assert size <= BUDGET_BYTES, (
        f"{WASM} is {size:,} bytes, over its budget of {BUDGET_BYTES:,} bytes "
        f"({BUDGET_BYTES // 1024} KiB); `make size-report` shows where the bytes go "
        "(docs/module-size.md)")


def test_the_size_report_names_the_crate_of_either_mangling():
    # `make size-report` (scripts/module_size.py): the toolchain's own crates come out
    # legacy-mangled (`crate::path::h<hash>`), the precompiled std v0-mangled
    # (`crate[hash]::path`); both count for their crate, not as "no Rust crate".
    owner = module_size.owner
    serde = "aura_guard_core's types through serde (configuration, JWT claims)"
    for name, want in [
        ("aura_guard_core::path::normalise::hbce3d30d7039e06d", "aura_guard_core"),
        ("aura_guard_core[1a2b3c]::path::normalise", "aura_guard_core"),
        ("<aura_guard::root::AuraRoot as proxy_wasm::traits::RootContext>::on_configure::h0",
         "aura_guard"),
        ("<f64 as core[fa2af07491efb8b4]::fmt::Display>::fmt", "core"),
        ("<serde_path_to_error::de::TrackedSeed<X> as serde_core::de::DeserializeSeed>"
         "::deserialize::h7aab50509efb764c", serde),
        ("<aura_guard_core[9f]::config::Config as serde_core[1]::de::Deserialize>::deserialize",
         serde),
        ("serde_json::de::Deserializer<R>::parse_whitespace::h1", "serde_json"),
        ("import env::proxy_log", "wasm structure (types, imports, exports, tables)"),
        ('data segment ".rodata"', "data segments (strings, tables, constants of every crate)"),
        ("dlmalloc", "no Rust crate (wasi-libc, dlmalloc, compiler builtins, SDK exports)"),
        ('"function names" subsection', None),
    ]:
        assert owner(name) == want, name
