"""Real-kernel test modules that this host's kernel cannot run, run inside a guest.

The host's 6.18 kernel parses no DOS partition tables, so tests/kernel/test_partitions.py
skips most of its tests here; Debian's 6.1 kernel does parse them. Each module below runs
under pytest in one guest with Debian's stock loop driver (``loopdev.vm.guest_tests``); the
test fails when any of its tests fails, errors, or skips for a reason not listed as expected,
and when a test function of the module did not run at all.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from loopdev.vm.guest_tests import run_tests

pytestmark = pytest.mark.usefixtures("guests_available", "nothing_left")

KERNEL_TESTS = Path(__file__).resolve().parents[1] / "kernel"

#: module -> regular expressions of the skip reasons expected in a guest
GUEST_MODULES: dict[str, tuple[str, ...]] = {
    "test_partitions.py": (),
}


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


@pytest.mark.parametrize("module", sorted(GUEST_MODULES))
def test_kernel_test_module_passes_in_a_guest(module: str) -> None:
    path = KERNEL_TESTS / module
    if not path.exists():
        pytest.skip(f"{path} does not exist")
    result = run_tests([path], timeout=600.0)
    assert result.status == "ok", (result.status, result.message, result.output[-3000:])
    bad = result.unexpected(GUEST_MODULES[module])
    assert not bad, "\n".join(f"{t.outcome} {t.nodeid}: {t.message}" for t in bad)
    ran = {t.nodeid.split("::", 1)[1].split("[", 1)[0] for t in result.tests}
    assert ran == _test_functions(path), result.output[-3000:]
    assert result.returncode == 0 and result.count("passed") >= len(ran)
