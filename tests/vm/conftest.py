"""Fixtures for the virtual-machine tests.

Guest tests boot Debian's 6.1 kernel (or the lockdep kernel, when it is built) under QEMU with
real loop modules: they are skipped, with the reason, unless we are root and everything a guest
needs is installed (``loopdev vm check`` lists it; scripts/setup.sh installs it and builds the
lockdep kernel). Every guest test also checks that nothing of its own
is left: no QEMU process, no temporary directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from loopdev.vm import check

DATA = Path(__file__).resolve().parent / "data"


def _guest_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "VM tests need root"
    ok, items = check.ready()
    if not ok:
        missing = [f"{i.name}: {i.detail}" for i in items if i.required and not i.ok]
        return "VM guests cannot run here: " + "; ".join(missing)
    return None


def _build_unavailable() -> str | None:
    missing = [
        i for i in check.environment()
        if i.required and not i.ok and i.name in ("make", "patch", "guest kernel headers",
                                                   "compiler", "loop.c source")
    ]  # fmt: skip
    return "; ".join(f"{i.name}: {i.detail}" for i in missing) or None


@pytest.fixture(scope="session")
def guests_available() -> None:
    why = _guest_unavailable()
    if why:
        pytest.skip(why)


@pytest.fixture(scope="session")
def builds_available() -> None:
    why = _build_unavailable()
    if why:
        pytest.skip(f"module builds need: {why}")


def _ours() -> set[str]:
    tmp = tempfile.gettempdir()
    return {n for n in os.listdir(tmp) if n.startswith("loopdev-vm-")}


def _qemu_pids() -> set[int]:
    pids = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        if b"qemu-system" in cmdline and b"loopdev-vm-" in cmdline:
            pids.add(int(name))
    return pids


@pytest.fixture
def nothing_left() -> Iterator[None]:
    """Fails the test if a QEMU guest or a temporary guest directory of ours outlives it."""
    before_dirs, before_pids = _ours(), _qemu_pids()
    yield
    left_pids = _qemu_pids() - before_pids
    left_dirs = _ours() - before_dirs
    for d in left_dirs:
        shutil.rmtree(Path(tempfile.gettempdir(), d), ignore_errors=True)
    assert not left_pids, f"QEMU still running: {left_pids}"
    assert not left_dirs, f"guest temp dirs left behind: {left_dirs}"
