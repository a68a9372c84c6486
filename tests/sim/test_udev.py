"""The modelled systemd-udevd on the model kernel: what it opens, when, and that it stops."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from simkit import attach

from loopdev import abi
from loopdev.lab.userspace.mkfs import make_image
from loopdev.lab.userspace.udevd import UdevConfig, Udevd, start_udevd
from loopdev.sim.kernel import SimKernel
from loopdev.sim.sched import Scheduler
from loopdev.sim.strategy import RandomWalk


def run(body: Callable[[SimKernel, Udevd], None], seed: int = 0, variant: str = "v6.11") -> Udevd:
    sched = Scheduler(RandomWalk(seed), trace=True)
    k = SimKernel.boot(variant, sched, nr_loop=2)
    box: list[Udevd] = []

    def sh() -> None:
        d = start_udevd(k, UdevConfig(rules_max=0.0005, hold_max=0.0005))
        box.append(d)
        try:
            body(k, d)
        finally:
            d.stop()
        assert d.process is not None
        assert d.process.wait() == 0  # exits cleanly once asked

    k.spawn(sh, "sh")
    out = sched.run()
    assert out.ok, out.describe()
    return box[0]


def settle(k: SimKernel, d: Udevd, events: int) -> None:
    """Wait (virtual time) until udevd has read and finished ``events`` events."""
    for _ in range(200):
        if d.stats.events >= events and d.stats.processed + d.stats.stale >= events:
            return
        k.sleep(0.01)
    raise AssertionError(f"udevd did not settle: {d.stats}")


@pytest.mark.parametrize("seed", range(5))
def test_probes_an_attached_device(seed: int) -> None:
    def body(k: SimKernel, d: Udevd) -> None:
        make_image(k, "/tmp/img", "ext4", 1 << 16)
        _n, fd = attach(k, "/tmp/img", flags=abi.LO_FLAGS_READ_ONLY)
        settle(k, d, 1)
        k.close(fd)

    d = run(body, seed)
    assert d.stats.probed == {"/dev/loop0": "ext4"}


def test_stale_events_of_a_detached_device_are_skipped() -> None:
    def body(k: SimKernel, d: Udevd) -> None:
        make_image(k, "/tmp/img", "xfs", 1 << 16)
        _n, fd = attach(k, "/tmp/img")
        settle(k, d, 1)
        k.ioctl(fd, abi.LOOP_CLR_FD, 0)
        k.close(fd)
        settle(k, d, 3)  # attach: one change; detach: two, with the old DISKSEQ

    d = run(body)
    assert d.stats.events == 3
    assert d.stats.stale == 2  # BLKGETDISKSEQ no longer matches: not probed again
    assert d.stats.probed == {"/dev/loop0": "xfs"}


def test_an_exclusive_flock_makes_udevd_wait() -> None:
    """systemd's block device locking: udevd requeues the event until LOCK_EX is gone."""
    seen: dict[str, object] = {}

    def body(k: SimKernel, d: Udevd) -> None:
        make_image(k, "/tmp/img", "squashfs", 1 << 16)
        lock = k.open("/dev/loop0", abi.O_RDONLY | abi.O_CLOEXEC)
        k.flock(lock, abi.LOCK_EX)
        _n, fd = attach(k, "/tmp/img", flags=abi.LO_FLAGS_READ_ONLY)
        k.sleep(0.5)  # udevd retries every 200 ms meanwhile
        seen["probed while locked"] = dict(d.stats.probed)
        seen["requeued"] = d.stats.locked
        k.close(lock)
        settle(k, d, 1)
        k.close(fd)

    d = run(body)
    assert seen["probed while locked"] == {}
    assert isinstance(seen["requeued"], int) and seen["requeued"] >= 2
    assert d.stats.probed == {"/dev/loop0": "squashfs"}
