"""Detach semantics per variant: LOOP_CLR_FD, autoclear on last close, opens during rundown.

Outcomes come from the modelled drivers; the assertions state what a user observes."""

from __future__ import annotations

import errno
from typing import Any

import pytest
from simkit import SYNC_RELEASE, VARIANTS, attach, errno_of, is_bound, make_image, run_model

from loopdev import abi
from loopdev.sim.kernel import SimKernel

SEEDS = range(12)


@pytest.mark.parametrize("variant", VARIANTS)
def test_clr_fd_as_sole_opener(variant: str) -> None:
    def main(k: SimKernel, notes: dict[str, Any]) -> None:
        make_image(k, "/tmp/a.img")
        n, lfd = attach(k, "/tmp/a.img")
        k.ioctl(lfd, abi.LOOP_CLR_FD)
        notes["bound_before_close"] = is_bound(k, n)
        k.close(lfd)
        notes["bound_after_close"] = is_bound(k, n)

    run = run_model(variant, main)
    assert run.ok, run.outcome.describe()
    # 18048c1af783 (6.11) defers the detach to the last close; before, the ioctl detached
    assert run.notes["bound_before_close"] is (variant in ("v6.11", "post-release-2026"))
    assert run.notes["bound_after_close"] is False


@pytest.mark.parametrize("variant", VARIANTS)
def test_clr_fd_with_another_opener_only_sets_autoclear(variant: str) -> None:
    def main(k: SimKernel, notes: dict[str, Any]) -> None:
        make_image(k, "/tmp/a.img")
        n, lfd = attach(k, "/tmp/a.img")
        other = k.open(f"/dev/loop{n}", abi.O_RDONLY)
        k.ioctl(lfd, abi.LOOP_CLR_FD)
        notes["autoclear"] = k.readfile(f"/sys/block/loop{n}/loop/autoclear").strip()
        k.close(lfd)
        notes["bound_one_left"] = is_bound(k, n)
        k.close(other)
        notes["bound_none_left"] = is_bound(k, n)

    for seed in SEEDS:
        run = run_model(variant, main, seed=seed)
        assert run.ok, run.outcome.describe()
        assert run.notes["autoclear"] == b"1"
        assert run.notes["bound_one_left"] is True
        if variant in SYNC_RELEASE:
            assert run.notes["bound_none_left"] is False, seed


@pytest.mark.parametrize("variant", SYNC_RELEASE)
def test_autoclear_teardown_done_when_last_close_returns(variant: str) -> None:
    def main(k: SimKernel, notes: dict[str, Any]) -> None:
        make_image(k, "/tmp/a.img")
        n, lfd = attach(k, "/tmp/a.img", flags=abi.LO_FLAGS_AUTOCLEAR)
        k.close(lfd)
        notes["bound"] = is_bound(k, n)
        notes["backing_busy"] = errno_of(lambda: k.umount2("/tmp"))

    for seed in SEEDS:
        run = run_model(variant, main, seed=seed)
        assert run.ok, run.outcome.describe()
        assert run.notes["bound"] is False, seed
        assert run.notes["backing_busy"] is None, seed  # the backing file is released too


def test_async_autoclear_may_outlive_the_last_close_on_v5_17_rc1() -> None:
    def main(k: SimKernel, notes: dict[str, Any]) -> None:
        make_image(k, "/tmp/a.img")
        n, lfd = attach(k, "/tmp/a.img", flags=abi.LO_FLAGS_AUTOCLEAR)
        k.close(lfd)
        notes["bound"] = is_bound(k, n)
        k.sleep(0.1)
        notes["bound_later"] = is_bound(k, n)

    seen = set()
    for seed in range(10):
        run = run_model("v5.17-rc1", main, seed=seed)
        assert run.ok, run.outcome.describe()
        assert run.notes["bound_later"] is False
        seen.add(run.notes["bound"])
    assert True in seen  # close() returned while the device was still bound


@pytest.mark.parametrize("variant", ["v6.11", "post-release-2026"])
def test_open_during_rundown_fails_with_enxio(variant: str) -> None:
    def holder(k: SimKernel, notes: dict[str, Any]) -> None:
        make_image(k, "/tmp/a.img")
        n, lfd = attach(k, "/tmp/a.img")
        k.ioctl(lfd, abi.LOOP_CLR_FD)  # sole opener: Lo_rundown until we close
        notes["n"] = n
        k.sleep(0.01)
        k.close(lfd)

    def main(k: SimKernel, notes: dict[str, Any]) -> None:
        k.sleep(0.005)
        n = notes["n"]
        notes["during"] = errno_of(lambda: k.open(f"/dev/loop{n}", abi.O_RDONLY))
        k.sleep(0.05)  # the teardown's queue freeze waits an RCU grace period (12-16 ms)
        fd = k.open(f"/dev/loop{n}", abi.O_RDONLY)
        notes["after"] = errno_of(
            lambda: k.ioctl(fd, abi.LOOP_GET_STATUS64, abi.LoopInfo64.buffer())
        )
        k.close(fd)

    run = run_model(variant, main, helpers=(("holder", holder),))
    assert run.ok, run.outcome.describe()
    assert run.notes["during"] == errno.ENXIO
    assert run.notes["after"] == errno.ENXIO  # unbound now


@pytest.mark.parametrize("variant", ["v5.16", "v5.17", "v5.19"])
def test_open_during_deferred_detach_succeeds_before_6_11(variant: str) -> None:
    def holder(k: SimKernel, notes: dict[str, Any]) -> None:
        make_image(k, "/tmp/a.img")
        n, lfd = attach(k, "/tmp/a.img")
        other = k.open(f"/dev/loop{n}", abi.O_RDONLY)
        k.ioctl(lfd, abi.LOOP_CLR_FD)  # another opener: autoclear only
        notes["n"] = n
        k.close(other)
        k.sleep(0.01)
        k.close(lfd)

    def main(k: SimKernel, notes: dict[str, Any]) -> None:
        k.sleep(0.005)
        fd = k.open(f"/dev/loop{notes['n']}", abi.O_RDONLY)
        notes["during"] = errno_of(
            lambda: k.ioctl(fd, abi.LOOP_GET_STATUS64, abi.LoopInfo64.buffer())
        )
        k.close(fd)

    run = run_model(variant, main, helpers=(("holder", holder),))
    assert run.ok, run.outcome.describe()
    assert run.notes["during"] is None  # still bound: the opener got a live device


@pytest.mark.parametrize("variant", VARIANTS)
def test_io_fails_with_eio_once_unbound(variant: str) -> None:
    def main(k: SimKernel, notes: dict[str, Any]) -> None:
        make_image(k, "/tmp/a.img")
        n, lfd = attach(k, "/tmp/a.img")
        notes["read"] = k.pread(lfd, 4, 1080)
        k.pwrite(lfd, b"data", 8192)
        fd = k.open("/tmp/a.img", abi.O_RDONLY)
        notes["backing"] = k.pread(fd, 4, 8192)
        k.close(fd)
        k.ioctl(lfd, abi.LOOP_CLR_FD)
        k.close(lfd)
        fd = k.open(f"/dev/loop{n}", abi.O_RDONLY)
        notes["after"] = k.pread(fd, 4, 0)  # capacity 0: nothing to read
        k.close(fd)

    run = run_model(variant, main)
    assert run.ok, run.outcome.describe()
    assert run.notes["read"] == b"\x53\xef\x00\x00"
    assert run.notes["backing"] == b"data"
    assert run.notes["after"] == b""
