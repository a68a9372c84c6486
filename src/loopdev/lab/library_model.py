"""The loopdev library itself, run on the model kernel with the modelled udevd.

Two user processes of one model machine call the real library (``loopdev.control.attach``,
``LoopDevice.detach``, ``loopdev.mount.mount_image``, ``loopdev.mount.umount``, with
``kernel=`` the :class:`~loopdev.sim.kernel.SimKernel`) while the modelled systemd-udevd
probes every device they bind:

* ``attacher``: attach an ext4 image, write a block through the device, detach; the device
  must really be unbound when detach returns, and the block must be in the image file.
* ``mounter``: mount_image an xfs image read-write, write a file into it, umount; mount it
  again read-only, read the file back, umount. After each umount the loop device must be
  gone (mount_image makes AUTOCLEAR devices and umount waits for their teardown).

A run fails when a library call raises, when one of those observations does not hold, or when
the model's end state shows a leak (a bound loop device, a mounted superblock, an open
device). Deadlocks, step limits and lockdep reports are failures of the run itself (see
:func:`check`).
"""

from __future__ import annotations

from collections.abc import Callable

from loopdev import abi, settle
from loopdev.control import attach
from loopdev.errors import LoopdevError
from loopdev.lab.userspace.mkfs import make_image
from loopdev.lab.userspace.udevd import start_udevd
from loopdev.mount import mount_image, umount
from loopdev.sim.kernel import SimKernel
from loopdev.sim.loop.base import Lo_unbound
from loopdev.sim.machine import machine_of
from loopdev.sim.sched import RunOutcome, Scheduler

VARIANT = "v6.11"
#: registry key: the list of what went wrong, as a user would report it
PROBLEMS = "library.problems"
#: registry key: names of the user processes that finished their script
FINISHED = "library.finished"
#: registry key: names of the user processes the run started
EXPECTED = "library.expected"
#: registry key: the modelled udevd's statistics (UdevStats) once it stopped
UDEV = "library.udev"

BLOCK = bytes(range(256)) * 16  # 4 KiB the attacher writes through the device
BLOCK_AT = 8192
FILE_DATA = b"written through the loop mount\n"


def _note(sched: Scheduler, who: str, what: str) -> None:
    sched.registry.setdefault(PROBLEMS, []).append(f"{who}: {what}")


def attacher(k: SimKernel, sched: Scheduler) -> None:
    """attach + write + detach; the binding must be gone and the data in the image."""
    make_image(k, "/tmp/a.img", "ext4", 64 << 10)
    dev = attach("/tmp/a.img", kernel=k)
    number, seq = dev.number, dev.diskseq
    k.pwrite(dev.fileno(), BLOCK, BLOCK_AT)
    dev.detach()
    if not settle.is_detached(k, number, seq):
        _note(sched, "attacher", f"/dev/loop{number} (diskseq {seq}) still bound after detach")
    fd = k.open("/tmp/a.img", abi.O_RDONLY)
    try:
        if k.pread(fd, len(BLOCK), BLOCK_AT) != BLOCK:
            _note(sched, "attacher", "the block written through the device is not in the image")
    finally:
        k.close(fd)


def mounter(k: SimKernel, sched: Scheduler) -> None:
    """mount_image rw + write + umount, mount_image ro + read + umount."""
    make_image(k, "/tmp/m.img", "xfs", 64 << 10)
    k.mkdir("/mnt/m")
    m = mount_image("/tmp/m.img", "/mnt/m", kernel=k)
    fd = k.open("/mnt/m/hello", abi.O_WRONLY | abi.O_CREAT, 0o644)
    try:
        k.write(fd, FILE_DATA)
    finally:
        k.close(fd)
    umount("/mnt/m", kernel=k)
    if not settle.is_detached(k, m.loop_number, m.diskseq):
        _note(sched, "mounter", f"{m.device} still bound after umount (rw)")
    m = mount_image("/tmp/m.img", "/mnt/m", read_only=True, kernel=k)
    if not m.read_only:
        _note(sched, "mounter", "the read-only mount is read-write")
    data = k.readfile("/mnt/m/hello")
    if data != FILE_DATA:
        _note(sched, "mounter", f"read back {data!r} instead of the file written")
    umount("/mnt/m", kernel=k)
    if not settle.is_detached(k, m.loop_number, m.diskseq):
        _note(sched, "mounter", f"{m.device} still bound after umount (ro)")


Script = Callable[[SimKernel, Scheduler], None]
#: the user processes of the scenario
USERS: tuple[tuple[str, Script], ...] = (("attacher", attacher), ("mounter", mounter))


def program(
    variant: str = VARIANT, *, udev: bool = True, users: tuple[tuple[str, Script], ...] = USERS
) -> Callable[[Scheduler], None]:
    """A model program: udevd (optional) and the ``users`` scripts as concurrent processes."""

    def setup(sched: Scheduler) -> None:
        k = SimKernel.boot(variant, sched, nr_loop=4)
        sched.registry[PROBLEMS] = []
        sched.registry[FINISHED] = []
        sched.registry[EXPECTED] = [name for name, _ in users]

        def user(name: str, script: Script) -> Callable[[], None]:
            def body() -> None:
                try:
                    script(k, sched)
                except (OSError, LoopdevError) as e:
                    _note(sched, name, f"{type(e).__name__}: {e}")
                sched.registry[FINISHED].append(name)

            return body

        def init() -> None:
            d = start_udevd(k) if udev else None
            try:
                procs = [k.spawn(user(name, script), name) for name, script in users]
                for p in procs:
                    p.wait()
            finally:
                if d is not None:
                    d.stop()
                    sched.registry[UDEV] = d.stats

        k.spawn(init, "init")

    return setup


def leaks(sched: Scheduler) -> list[str]:
    """What the finished run left behind in the model: bound loop devices, mounted block
    filesystems, open block devices."""
    m = machine_of(sched)
    found = [
        f"loop{n} left in state {lo.lo_state}"
        for n, lo in sorted(m.loop.loop_index_idr.items())
        if lo.lo_state != Lo_unbound
    ]
    found += [f"superblock of device {dev:#x} still mounted" for dev in sorted(m.super_blocks)]
    for n, lo in sorted(m.loop.loop_index_idr.items()):
        openers = m.block.disk_openers(lo.lo_disk)
        if openers:
            found.append(f"loop{n} still open {openers} time(s)")
    return found


def check(sched: Scheduler, out: RunOutcome) -> str | None:
    """A failure message for a run a user would call failed, else None (for ``ok`` runs;
    :func:`verdict` covers every outcome)."""
    problems: list[str] = list(sched.registry.get(PROBLEMS, []))
    finished = sched.registry.get(FINISHED, [])
    for who in sched.registry.get(EXPECTED, []):
        if who not in finished:
            problems.append(f"{who}: did not finish")
    problems += leaks(sched)
    problems += [f"lockdep: {r.title}" for r in out.lockdep]
    return "; ".join(problems) if problems else None


def verdict(sched: Scheduler, out: RunOutcome) -> str | None:
    """Like :func:`check`, and any outcome but ``ok`` (deadlock, step limit, model error) is
    a failure too."""
    if not out.ok:
        first = out.describe().splitlines()
        return f"{out.kind}: " + " | ".join(first[1:4])
    return check(sched, out)


__all__ = [
    "EXPECTED",
    "FINISHED",
    "PROBLEMS",
    "UDEV",
    "USERS",
    "VARIANT",
    "Script",
    "attacher",
    "check",
    "leaks",
    "mounter",
    "program",
    "verdict",
]
