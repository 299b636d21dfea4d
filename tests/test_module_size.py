"""The shipped module's size budget (docs/module-size.md): `make build`'s module must not grow
past it. A size is a count of bytes, the same on any machine, so this is no timing test."""
import os

from harness import WASM

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
