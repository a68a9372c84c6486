"""The benchmarks' short modes, so they keep working: benchmarks/stress.py --short (real
systemd-udevd, nested umounts, kill -9 of io_uring fio) and a few rounds of
benchmarks/bench_vs_util_linux.py. Both run under this session's machine lock."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest
from rk import bound_loops, mounts

from loopdev.lab.realudev import running_udevd_pids, snapshot_tree

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while executing it
    spec.loader.exec_module(module)
    return module


def _state() -> tuple[set[str], set[str]]:
    """Bound loop devices and loop mounts on the machine."""
    return {b.path for b in bound_loops()}, {
        m.target for m in mounts() if m.source.startswith("/dev/loop")
    }


@pytest.mark.skipif(
    not all(shutil.which(t) for t in ("mkfs.xfs", "fio", "mksquashfs"))
    or not os.access("/lib/systemd/systemd-udevd", os.X_OK),
    reason="needs xfsprogs, fio, squashfs-tools and udev",
)
def test_stress_short(capsys: pytest.CaptureFixture[str]) -> None:
    if running_udevd_pids():
        pytest.skip("a systemd-udevd is already running on this machine")
    before = _state()
    dev_before = {p: (e.mode, e.uid, e.gid) for p, e in snapshot_tree("/dev").items()}
    code = _load("stress").main(["--short", "--no-lock"])
    out = capsys.readouterr().out
    assert code == 0, out  # loopdev: no failure, nothing left behind, udevd gone
    assert "umount inner; umount outer      loopdev         0 of 20" in out
    assert "kill -9 io_uring fio; umount    loopdev         0 of 3" in out
    assert _state() == before
    assert running_udevd_pids() == []
    assert not os.path.exists("/run/udev") and not os.path.exists("/dev/disk")
    dev_after = {p: (e.mode, e.uid, e.gid) for p, e in snapshot_tree("/dev").items()}
    changed = {p for p in dev_before.keys() & dev_after.keys() if dev_before[p] != dev_after[p]}
    assert changed == set()
    assert dev_after.keys() <= dev_before.keys() | {
        p for p in dev_after if p.startswith("/dev/loop")
    }


def test_bench_few_rounds(capsys: pytest.CaptureFixture[str]) -> None:
    before = _state()
    code = _load("bench_vs_util_linux").main(["--rounds", "3", "--warmup", "1", "--no-lock"])
    out = capsys.readouterr().out
    assert code in (0, 2), out  # 2: ran fine, targets missed
    for cycle in ("attach+detach", "mount+umount squashfs", "mount+umount ext4"):
        assert cycle in out
    assert _state() == before
