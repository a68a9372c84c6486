"""detach-open: blktests loop/010's shape — a detach racing with opens and probes.

Who does what: the row's userspace detaches the device (util-linux: ``losetup -d``, i.e.
LOOP_CLR_FD; loopdev: the library's detach); two raw openers run meanwhile: a prober that
opens the device and reads its first block with ``O_DIRECT``, again and again (a scanner in a
loop, as in the reproducer of 18048c1af783 "loop: Fix a race between loop detach and loop
open", which ran blkid against ``losetup -d``), and a verifier that opens it, checks it with
LOOP_GET_STATUS64 and then reads through the page cache.

How the race starts: the three children are forked first and released together through a
start gate (a flock the parent holds until every child is ready, see ``common.StartGate``),
and the prober keeps probing until the detach has returned and the device is unbound, rather
than a fixed number of times. Both are port calls, so the model and a real kernel run the same
code, and neither a slow fork (a guest's emulated CPU: ~50x hardware) nor a slow detacher
lets the prober finish before the teardown starts.

Why the prober reads ``O_DIRECT``: blkid (libblkid opens ``O_RDONLY|O_CLOEXEC|O_NONBLOCK``)
reads through the page cache, and a page-cache read that fails in the teardown is retried
once (``filemap_read_folio``); by then ``invalidate_disk`` has usually set the capacity to 0,
so the retry zero-fills the page and the read returns EOF, which looks exactly like a device
that was already unbound (real 6.1 with the v5.19 design: no EIO in 30 trials). A direct read
is not retried: it reads EIO from the half-dead device (7 of 20 trials on real v5.19 code,
never on v6.11), the symptom 18048c1af783 reports (its I/O errors came from blkid on stale
partitions, whose size the failed rescan left in place, so the retry fails as well).

Before 6.11 a LOOP_CLR_FD by the only opener tears the device down inside the ioctl, and an
open that lands during that teardown succeeds and then reads EIO; 6.11 refuses opens during
the rundown and tears down only at the last close. The library detaches with AUTOCLEAR and
close before 6.11 (docs/library.md), so the teardown runs in ->release under open_mutex, where
the open waits; that cannot help where the teardown runs outside open_mutex anyway (5.17-rc1's
worker, task_work). A user must never get a device that opened (or verified) fine and then
fails its reads with EIO, and the device must really be gone after the detach.

``detach-open[held]`` (:class:`DetachOpenHeld`, run when named) holds 18048c1af783's window
open: the detacher keeps its fd across LOOP_CLR_FD while an opener opens and reads.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from loopdev import abi
from loopdev.lab.scenarios.base import Env, ScenarioFailure, errname
from loopdev.lab.scenarios.common import (
    detach_backed_by,
    exists,
    loop_bound,
    remove,
    run_children,
    wait_unbound,
    wait_until,
    write_file,
)


def open_and_read(env: Env, dev: str, verify: bool, flags: int | None = None) -> None:
    """Open the device (the verifier plainly, the prober with O_DIRECT, or with ``flags``),
    read its first block; a clean refusal passes, a read that fails after the open (or verify)
    succeeded does not."""
    k = env.kernel
    if flags is None:
        flags = abi.O_RDONLY if verify else abi.O_RDONLY | abi.O_DIRECT
    try:
        fd = k.open(dev, flags)
    except OSError as e:
        if e.errno in (errno.ENXIO, errno.ENODEV, errno.ENOENT):
            return  # refused cleanly: the device is going away
        raise ScenarioFailure("open", errno.errorcode.get(e.errno or 0, "?"), str(e)) from e
    try:
        if verify:
            try:
                k.ioctl(fd, abi.LOOP_GET_STATUS64, abi.LoopInfo64.buffer())
            except OSError:
                return  # not bound (any more): the verifier does not use it
        try:
            data = k.pread(fd, 4096, 0)
        except OSError as e:
            what = "after verify" if verify else "after open"
            name = errno.errorcode.get(e.errno or 0, "?")
            raise ScenarioFailure(
                f"read {what}", name, f"{dev}: opened{' and verified' if verify else ''} fine, "
                f"then read failed: {e.strerror or name}"
            ) from e
        if verify and len(data) == 0:
            raise ScenarioFailure(
                "read after verify", "EOF", f"{dev}: verified as bound, then read 0 bytes"
            )
    finally:
        k.close(fd)


#: the longest pause between two probes (18048c1af783's reproducer runs ``blkid`` in a loop
#: against ``losetup -d``: one probe per fork + exec, 1-2 ms apart), and the probes of a
#: prober that is given a count instead of a detacher to outlast
PROBE_GAP = 0.002
PROBES = 8
#: the longest a prober keeps probing while it waits for the detacher to finish (a guard: a
#: detacher that hangs is reported as a hang by the trial, not outrun by its prober)
PROBE_LIMIT = 2.0


def probe(
    env: Env,
    dev: str | Sequence[str],
    times: int = PROBES,
    until: Callable[[], bool] | None = None,
    read: Callable[[str], None] | None = None,
) -> None:
    """Open and read (``O_DIRECT``) repeatedly, as a scanner in a loop does, a random pause of
    up to :data:`PROBE_GAP` between two probes: ``times`` probes, or, given ``until``, probes
    until it returns True (checked after each probe; at most :data:`PROBE_LIMIT` seconds).
    ``dev`` a list: one node after the other, in turn; ``read``: one probe of a node instead
    of :func:`open_and_read`'s ``O_DIRECT`` one."""
    k = env.kernel
    nodes = [dev] if isinstance(dev, str) else list(dev)
    t0 = k.monotonic()
    i = 0
    while True:
        if i:
            k.sleep(PROBE_GAP * k.random())
        node = nodes[i % len(nodes)]
        if read is None:
            open_and_read(env, node, verify=False)
        else:
            read(node)
        i += 1
        if until is None:
            if i >= times:
                return
        elif until() or k.monotonic() - t0 >= PROBE_LIMIT:
            return


def detacher(env: Env, dev: str, marker: str) -> Callable[[], None]:
    """The detacher child: the row's userspace detaches ``dev``, then (also when it failed)
    creates ``marker``, so probers know the detach has returned."""

    def body() -> None:
        try:
            env.userspace.detach(dev, step="detach")
        finally:
            write_file(env, marker, "")

    return body


def detach_over(env: Env, dev: str, marker: str) -> Callable[[], bool]:
    """The probers' ``until``: the detach returned (:func:`detacher` created ``marker``) and
    the device is unbound (a teardown it started or left to the last close is over)."""
    return lambda: exists(env, marker) and not loop_bound(env, dev)


def gone_after(env: Env, dev: str, what: str) -> None:
    """The device must be unbound (within 2 s) once the detach is over."""
    if wait_unbound(env, dev, 2.0) is None:
        raise ScenarioFailure("after detach", "still bound", f"{dev} is still attached after {what}")


@dataclass
class DetachOpen:
    """Detach a loop device while a prober and a verifier open it."""

    udev: bool = False
    model_only: bool = False
    name: str = "detach-open"
    title: str = "a detach racing with opens and probes"
    source: str = "blktests tests/loop/010"

    def row_label(self, userspace: str) -> str:
        """The matrix row says who detaches and who opens."""
        return f"{userspace} detaches; prober+verifier open"

    def prepare(self, env: Env) -> None:
        env.make_image("ext2", env.path("detach.img"), size_mib=8)

    def trial(self, env: Env) -> None:
        image = env.path("detach.img")
        dev = env.userspace.attach(image, step="attach")
        # the attached device reads before the race: a check, and on a real kernel the
        # children (forks) start with this code path warm (its first pread on an O_DIRECT fd
        # imports mmap: under emulation tens of milliseconds with the device held open)
        open_and_read(env, dev, verify=True)
        open_and_read(env, dev, verify=False)
        detached = env.path(".detached")
        remove(env, detached)
        children = {
            "prober": lambda: probe(env, dev, until=detach_over(env, dev, detached)),
            "verifier": lambda: open_and_read(env, dev, verify=True),
            "detacher": detacher(env, dev, detached),
        }
        try:
            for failure in run_children(env, children, together=True):
                raise failure
        finally:
            remove(env, detached)
        gone_after(env, dev, "detach returned")

    def cleanup(self, env: Env) -> None:
        image = env.path("detach.img")
        detach_backed_by(env, image)
        remove(env, image)


#: how long one side of detach-open[held] waits for the other's step before giving up
HELD_WAIT = 5.0


def wait_for(env: Env, path: str, timeout: float) -> bool:
    """Wait (bounded) until ``path`` exists; False if it does not within ``timeout``."""
    return wait_until(env, lambda: exists(env, path), timeout, 0.0005)


@dataclass
class DetachOpenHeld:
    """detach-open[held]: 18048c1af783's window held open. A holder opens the device, detaches
    it with LOOP_CLR_FD and keeps its fd open; only then does an opener open the device and
    read its first block (``O_DIRECT``); then the holder closes. ``losetup -d`` does the same
    (open, LOOP_CLR_FD, close) with microseconds between the ioctl and the close; here the
    opener always lands in between.

    What the opener sees depends only on the design: before 6.11 LOOP_CLR_FD by the sole
    opener tears the device down inside the ioctl, so the opener finds an unbound device (its
    read returns 0 bytes, as on any free loop device); 6.11's ``lo_open`` refuses opens during
    the rundown (ENXIO) and the teardown waits for the last close. A design that defers the
    teardown to the last close but lets the open in (6.11 without that ``lo_open``) hands the
    opener a half-dead device: the open succeeds, the read fails with EIO. That is the failure;
    a clean refusal or an unbound device is not. Afterwards the device must be gone."""

    udev: bool = False
    model_only: bool = False
    name: str = "detach-open[held]"
    title: str = "an open and a read while the detacher holds its fd across LOOP_CLR_FD"
    source: str = "18048c1af783 (loop: Fix a race between loop detach and loop open)"
    #: the row's userspace only attaches; the holder's ioctl is the same for every row
    userspaces: tuple[str, ...] = ("loopdev",)

    def row_label(self, userspace: str) -> str:
        return f"{userspace} attaches; holder LOOP_CLR_FD, fd open; opener opens+reads"

    def prepare(self, env: Env) -> None:
        env.make_image("ext2", env.path("held.img"), size_mib=8)

    def trial(self, env: Env) -> None:
        dev = env.userspace.attach(env.path("held.img"), step="attach")
        open_and_read(env, dev, verify=True)
        cleared, opened = env.path(".cleared"), env.path(".opened")
        remove(env, cleared, opened)

        def holder() -> None:
            k = env.kernel
            fd = k.open(dev, abi.O_RDONLY)
            try:
                try:
                    k.ioctl(fd, abi.LOOP_CLR_FD)
                except OSError as e:
                    raise ScenarioFailure("detach", errname(e), f"{dev}: LOOP_CLR_FD: {e}") from e
                write_file(env, cleared, "")
                wait_for(env, opened, HELD_WAIT)
            finally:
                k.close(fd)

        def opener() -> None:
            if not wait_for(env, cleared, HELD_WAIT):
                return  # the holder's detach failed: its failure is the trial's
            try:
                open_and_read(env, dev, verify=False)
            finally:
                write_file(env, opened, "")

        try:
            for failure in run_children(env, {"holder": holder, "opener": opener}):
                raise failure
        finally:
            remove(env, cleared, opened)
        gone_after(env, dev, "the last close")

    def cleanup(self, env: Env) -> None:
        image = env.path("held.img")
        detach_backed_by(env, image)
        remove(env, image)
