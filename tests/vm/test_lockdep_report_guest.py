"""Claim 6 on the real lockdep kernel, v5.16 against v6.11: the resume-chain scenario in a guest
(benchmarks/lockdep_resume_chain.py runs all five variants beside the model). Runs when the
lockdep kernel is built on this machine (it is not built here: 9-18 minutes)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from loopdev.vm import kbuild

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from lockdep_resume_chain import real_side


@pytest.fixture(scope="module")
def kernel() -> kbuild.KernelBuild:
    if os.geteuid() != 0:
        pytest.skip("guests need root")
    for tool in ("qemu-system-x86_64", "make", "patch"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    build = kbuild.find_lockdep_kernel()
    if build is None:
        pytest.skip("the lockdep kernel is not built here (loopdev vm build-kernel --lockdep)")
    return build


def _gone(pid: int) -> bool:
    """The guest's QEMU has exited and been reaped (checked by its own PID: other people's
    guests may run at the same time)."""
    return pid > 0 and not os.path.exists(f"/proc/{pid}")


def test_v5_16_closes_a_cycle_through_open_mutex(kernel: kbuild.KernelBuild) -> None:
    side, _console = real_side(kernel, "v5.16", 1)
    assert _gone(side.pid)
    assert list(side.outcomes) == [side.label and f"lockdep: {side.label}"], side.outcomes
    assert "&disk->open_mutex" in side.classes and "&of->mutex" in side.classes
    assert side.held == ("&disk->open_mutex", "&lo->lo_mutex")
    assert side.closing[:3] == ("__flush_workqueue", "drain_workqueue", "destroy_workqueue")


def test_v6_11_shows_no_cycle(kernel: kbuild.KernelBuild) -> None:
    side, _console = real_side(kernel, "v6.11", 2)
    assert _gone(side.pid)
    assert side.outcomes == {"pass": 2}
    assert side.classes == ()
