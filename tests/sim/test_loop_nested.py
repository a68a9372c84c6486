"""RESEARCH §3 claim 2 (xfstests xfs/049): an ext2 image on an xfs loop mount; ``umount inner;
umount outer``. The outer umount is EBUSY while the inner device's backing file (a file on the
outer filesystem) is still open. Whether it is depends only on where the modelled driver
releases it: nothing here encodes a variant's result."""

from __future__ import annotations

import errno
from typing import Any

import pytest
from simkit import attach, errno_of, make_image, run_model

from loopdev import abi
from loopdev.sim.kernel import SimKernel
from loopdev.sim.rcu import JIFFY


def mount_loop(k: SimKernel, image: str, target: str, fstype: str) -> int:
    """What mount(8) -o loop does: attach with autoclear, mount, close the device fd."""
    n, lfd = attach(k, image, flags=abi.LO_FLAGS_AUTOCLEAR)
    try:
        k.mount(f"/dev/loop{n}", target, fstype)
    finally:
        k.close(lfd)
    return n


def nested(k: SimKernel, notes: dict[str, Any]) -> None:
    make_image(k, "/tmp/xfs.img", "xfs", 256 << 10)
    k.mkdir("/mnt/outer")
    mount_loop(k, "/tmp/xfs.img", "/mnt/outer", "xfs")
    make_image(k, "/mnt/outer/ext2.img", "ext2", 64 << 10)
    k.mkdir("/mnt/outer/inner")
    mount_loop(k, "/mnt/outer/ext2.img", "/mnt/outer/inner", "ext2")
    k.umount2("/mnt/outer/inner")
    notes["outer"] = errno_of(lambda: k.umount2("/mnt/outer"))


def outcomes(variant: str, seeds: range) -> list[int | None]:
    results = []
    for seed in seeds:
        run = run_model(variant, nested, seed=seed, trace=False)
        assert run.ok, run.outcome.describe()
        results.append(run.notes["outer"])
    return results


@pytest.mark.parametrize("variant", ["v5.16", "v5.17", "taskwork", "v5.19", "v6.11"])
def test_umount_inner_then_outer_succeeds(variant: str) -> None:
    assert outcomes(variant, range(30)) == [None] * 30


def test_umount_outer_can_fail_with_ebusy_on_v5_17_rc1() -> None:
    results = outcomes("v5.17-rc1", range(30))
    assert errno.EBUSY in results
    assert set(results) <= {None, errno.EBUSY}


def test_ebusy_clears_once_the_delayed_fput_ran_on_v5_17_rc1() -> None:
    def main(k: SimKernel, notes: dict[str, Any]) -> None:
        nested(k, notes)
        if notes["outer"] is not None:
            k.sleep(0.05)
            notes["outer"] = errno_of(lambda: k.umount2("/mnt/outer"))

    for seed in range(10):
        run = run_model("v5.17-rc1", main, seed=seed, trace=False)
        assert run.ok, run.outcome.describe()
        assert run.notes["outer"] is None


def test_delayed_fput_runs_one_to_two_jiffies_later() -> None:
    """fs/file_table.c: the last fput from a kthread (v5.17-rc1's rundown work dropping the
    backing file) is ``schedule_delayed_work(&delayed_fput_work, 1)``, and the timer wheel
    rounds the expiry up to the next jiffy: released one to two jiffies after the fput."""

    def main(k: SimKernel, notes: dict[str, Any]) -> None:
        nested(k, notes)
        k.sleep(0.1)  # the teardown and its delayed fput finish meanwhile

    for seed in range(5):
        run = run_model("v5.17-rc1", main, seed=seed)
        assert run.ok, run.outcome.describe()
        events = run.kernel.sched.trace.events
        queued = [e.time for e in events if e.kind == "point" and e.name == "queue_work"
                  and e.detail.startswith("delayed_fput ")]  # fmt: skip
        drained = [e.time for e in events if e.kind == "enter" and e.name == "delayed_fput"]
        assert queued and drained
        delay = drained[0] - queued[0]
        assert JIFFY < delay <= 2 * JIFFY + 1e-9, delay
