"""Helpers for the model-kernel tests: boot a machine, run port-level tasks, attach images.

Everything goes through the port (``SimKernel``), the way the library and the lab use it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loopdev import abi
from loopdev.sim import loop
from loopdev.sim.kernel import SimKernel
from loopdev.sim.sched import RunOutcome, Scheduler
from loopdev.sim.strategy import RandomWalk

#: every registered loop variant, in history order
VARIANTS = tuple(loop.VARIANTS)
#: variants whose autoclear teardown finishes before the last closer returns to user space
SYNC_RELEASE = tuple(v for v in VARIANTS if v != "v5.17-rc1")

#: (offset, magic) of the model's filesystem types, as the real mkfs tools write them
MAGIC = {
    "ext2": (1080, b"\x53\xef"),
    "ext4": (1080, b"\x53\xef"),
    "xfs": (0, b"XFSB"),
    "squashfs": (0, b"hsqs"),
    "erofs": (1024, (0xE0F5E1E2).to_bytes(4, "little")),
}


@dataclass
class Run:
    """One model run: the outcome and whatever the tasks recorded."""

    outcome: RunOutcome
    kernel: SimKernel
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome.ok


def run_model(
    variant: str,
    main: Callable[[SimKernel, dict[str, Any]], object],
    *,
    seed: int = 0,
    helpers: tuple[tuple[str, Callable[[SimKernel, dict[str, Any]], object]], ...] = (),
    trace: bool = True,
    nr_loop: int = 4,
    strategy: Any = None,
) -> Run:
    """Boot `variant`, spawn `main` (and helper tasks), run to the end."""
    sched = Scheduler(strategy if strategy is not None else RandomWalk(seed), trace=trace)
    k = SimKernel.boot(variant, sched, nr_loop=nr_loop)
    notes: dict[str, Any] = {}
    for name, fn in helpers:
        k.spawn(lambda fn=fn: fn(k, notes), name)  # type: ignore[misc]
    k.spawn(lambda: main(k, notes), "main")
    outcome = sched.run()
    return Run(outcome, k, notes)


def make_image(k: SimKernel, path: str, fstype: str = "ext2", size: int = 64 << 10) -> None:
    """An image whose superblock magic says `fstype` (what mkfs would leave)."""
    data = bytearray(size)
    off, magic = MAGIC[fstype]
    data[off : off + len(magic)] = magic
    fd = k.open(path, abi.O_RDWR | abi.O_CREAT | abi.O_TRUNC, 0o644)
    try:
        k.pwrite(fd, bytes(data), 0)
    finally:
        k.close(fd)


def attach(
    k: SimKernel,
    image: str,
    *,
    flags: int = 0,
    offset: int = 0,
    sizelimit: int = 0,
    readonly: bool = False,
) -> tuple[int, int]:
    """LOOP_CTL_GET_FREE + LOOP_CONFIGURE; returns (number, open fd of /dev/loopN)."""
    acc = abi.O_RDONLY if readonly else abi.O_RDWR
    ctl = k.open("/dev/loop-control", abi.O_RDWR)
    try:
        n = k.ioctl(ctl, abi.LOOP_CTL_GET_FREE)
    finally:
        k.close(ctl)
    lfd = k.open(f"/dev/loop{n}", acc)
    ifd = k.open(image, acc)
    try:
        info = abi.LoopInfo64(
            lo_offset=offset, lo_sizelimit=sizelimit, lo_flags=flags, lo_file_name=image
        )
        k.ioctl(lfd, abi.LOOP_CONFIGURE, abi.LoopConfig(fd=ifd, info=info).pack())
    except OSError:
        k.close(lfd)
        raise
    finally:
        k.close(ifd)
    return n, lfd


def status(k: SimKernel, fd: int) -> abi.LoopInfo64:
    buf = abi.LoopInfo64.buffer()
    k.ioctl(fd, abi.LOOP_GET_STATUS64, buf)
    return abi.LoopInfo64.unpack(buf)


def is_bound(k: SimKernel, n: int) -> bool:
    """/sys/block/loopN/loop exists only while bound."""
    try:
        return k.stat(f"/sys/block/loop{n}/loop").is_dir
    except OSError:
        return False


def u64_ioctl(k: SimKernel, fd: int, request: int) -> int:
    buf = abi.u64_buffer()
    k.ioctl(fd, request, buf)
    return abi.read_u64(buf)


def errno_of(fn: Callable[[], object]) -> int | None:
    """The errno `fn` fails with, or None if it succeeds."""
    try:
        fn()
    except OSError as e:
        return e.errno
    return None
