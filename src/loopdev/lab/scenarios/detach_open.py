"""detach-open: blktests loop/010's shape — a detach racing with opens and probes.

Who does what: the row's userspace detaches the device (util-linux: ``losetup -d``, i.e.
LOOP_CLR_FD; loopdev: the library's detach); two raw openers run meanwhile: a prober that
opens the device and reads its first block with ``O_DIRECT``, again and again (a scanner in a
loop, as in the reproducer of 18048c1af783 "loop: Fix a race between loop detach and loop
open", which ran blkid against ``losetup -d``), and a verifier that opens it, checks it with
LOOP_GET_STATUS64 and then reads through the page cache.

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
close before 6.11 (RESEARCH T28), so the teardown runs in ->release under open_mutex, where
the open waits; that cannot help where the teardown runs outside open_mutex anyway (5.17-rc1's
worker, task_work). A user must never get a device that opened (or verified) fine and then
fails its reads with EIO, and the device must really be gone after the detach.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from loopdev import abi
from loopdev.lab.scenarios.base import Env, ScenarioFailure
from loopdev.lab.scenarios.common import (
    detach_backed_by,
    remove,
    run_children,
    wait_unbound,
)


def open_and_read(env: Env, dev: str, verify: bool) -> None:
    """Open the device (the verifier plainly, the prober with O_DIRECT), read its first block;
    a clean refusal passes, a read that fails after the open (or verify) succeeded does not."""
    k = env.kernel
    try:
        fd = k.open(dev, abi.O_RDONLY if verify else abi.O_RDONLY | abi.O_DIRECT)
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


#: probes per trial and the longest pause between two (18048c1af783's reproducer runs
#: ``blkid`` in a loop against ``losetup -d``: one probe per fork + exec, 1-2 ms apart)
PROBES = 8
PROBE_GAP = 0.002


def probe(env: Env, dev: str, times: int = PROBES) -> None:
    """Open and read (``O_DIRECT``) repeatedly, as a scanner in a loop does, a random pause of
    up to :data:`PROBE_GAP` between two probes."""
    k = env.kernel
    for i in range(times):
        if i:
            k.sleep(PROBE_GAP * k.random())
        open_and_read(env, dev, verify=False)


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
        children = {
            "prober": lambda: probe(env, dev),
            "verifier": lambda: open_and_read(env, dev, verify=True),
            "detacher": lambda: env.userspace.detach(dev, step="detach"),
        }
        for failure in run_children(env, children):
            raise failure
        if wait_unbound(env, dev, 2.0) is None:
            raise ScenarioFailure(
                "after detach", "still bound", f"{dev} is still attached after detach returned"
            )

    def cleanup(self, env: Env) -> None:
        image = env.path("detach.img")
        detach_backed_by(env, image)
        remove(env, image)
