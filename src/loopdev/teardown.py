"""Detaching a bound loop device through an open fd: flush, ask the kernel to tear it down in
the way that is safe on its loop-driver design, close, and wait honestly until it is unbound.

How the teardown is asked for depends on the kernel (T28; docs/library.md, "Why this way, measured"):

* 6.11 and later: LOOP_CLR_FD. It never tears down by itself: it marks the device AUTOCLEAR
  (and Lo_rundown when we are the only opener) and the teardown runs in the last close, under
  ``disk->open_mutex``, while ``lo_open`` refuses new opens with ENXIO.
* Before 6.11: set AUTOCLEAR with LOOP_SET_STATUS64 and close. LOOP_CLR_FD by the only opener
  would tear the device down inside the ioctl, outside ``open_mutex`` (5.19-6.10) or before
  ``lo_open`` can refuse anything (5.17), so a concurrent opener (udev, blkid) gets a
  half-dead device and reads EIO. With AUTOCLEAR the teardown runs in ``->release`` under
  ``open_mutex``, where a concurrent open waits for it. It costs a queue freeze (one RCU
  grace period) unless the device is AUTOCLEAR already, so it is used only where needed.

The design is told by the kernel release (``uname -r``): a wrong guess costs time (a freeze
on 6.11+), never correctness, since AUTOCLEAR + close is safe on every design. Distribution
kernels that backported 18048c1af783 to an older release take the safe way too. (Measured in
docs/library.md: on 5.19-6.10 the two ways cost the same, one freeze, since LOOP_CLR_FD's
teardown in the ioctl freezes too; on 5.16 and 5.17 AUTOCLEAR costs a second one.)

A partition-scanned device first has its partitions deleted (BLKPG_DEL_PARTITION), on every
design, while it is still bound. The teardown would drop them anyway (``bdev_disk_changed``),
but then late: an opener that looked a partition up before that and waits for ``open_mutex``
meanwhile gets the deleted partition of an unbound device and reads EIO (6.1's block layer
opens it), and where the teardown runs outside ``open_mutex`` (5.17-rc1, task_work) an open
partition makes the drop fail and the partitions stay behind (18048c1af783's report).
Deleted while the device is bound, a late opener of a partition still reads its data, and a
partition that is open (EBUSY) is tried again briefly; one that stays open (a mount) is left
to the teardown.
"""

from __future__ import annotations

import errno

from loopdev import abi, settle, sysfs
from loopdev.errors import BusyError, LoopdevError, NotPermittedError, TeardownTimeoutError, why
from loopdev.status import set_autoclear

TYPE_CHECKING = False
if TYPE_CHECKING:
    from loopdev.kernel import Kernel

DEFAULT_DETACH_TIMEOUT = 5.0
#: ``lazy`` detach: how long to wait for openers that are only probing (udev, blkid) before
#: calling the teardown deferred
PROBE_GRACE = 0.5
#: the first release whose LOOP_CLR_FD defers the teardown to the last close (18048c1af783)
CLR_FD_DEFERS = (6, 11)
#: pauses between attempts to delete a partition that is open (EBUSY): a prober's open lasts
#: a read; a mount stays, and costs these 7 ms before its partition is left to the teardown
DROP_RETRIES = (0.001, 0.002, 0.004)

_EXCL_PROBE = abi.O_RDONLY | abi.O_EXCL | abi.O_NONBLOCK

#: kernel name → whether detach sets AUTOCLEAR and closes instead of LOOP_CLR_FD
_GENTLE: dict[str, bool] = {}


def release_numbers(release: str) -> tuple[int, int] | None:
    """(major, minor) of a ``uname -r`` string (``6.1.0-25-amd64`` → (6, 1)); None if it does
    not start with two numbers."""
    parts = release.split(".", 2)
    if len(parts) < 2:
        return None
    minor = ""
    for ch in parts[1]:
        if not ch.isdigit():
            break
        minor += ch
    if not parts[0].isdigit() or not minor:
        return None
    return int(parts[0]), int(minor)


def autoclear_detach(kernel: Kernel) -> bool:
    """True when detach must set AUTOCLEAR and close (kernels before 6.11, or a release we
    cannot read); False when LOOP_CLR_FD already defers the teardown to the last close."""
    gentle = _GENTLE.get(kernel.name)
    if gentle is None:
        numbers = release_numbers(kernel.uname_release())
        gentle = _GENTLE[kernel.name] = numbers is None or numbers < CLR_FD_DEFERS
    return gentle


def release(
    kernel: Kernel,
    fd: int,
    number: int,
    flags: int,
    write_baseline: bytes | None,
    diskseq: int | None,
    *,
    wait: bool,
    timeout: float,
    lazy: bool,
) -> bool:
    """Tear down loopN, open as ``fd`` (closed here in every case); True once it is
    unbound, False when it is still held and the caller did not ask to wait for it.

    ``wait`` False: return at once after asking. ``lazy``: do not wait for a mount or other
    exclusive holder, and wait for other openers only :data:`PROBE_GRACE` seconds. Otherwise
    wait up to ``timeout`` and raise TeardownTimeoutError naming the holders.
    """
    path, stat_path, _ = sysfs.loop_paths(number)
    try:
        claimed = _claimed(kernel, path)
        if not flags & abi.LO_FLAGS_READ_ONLY:
            _flush(kernel, fd, stat_path, write_baseline)
        if flags & abi.LO_FLAGS_PARTSCAN:
            drop_partitions(kernel, fd, number)
        try:
            if autoclear_detach(kernel):
                set_autoclear(kernel, fd, True)
            else:
                kernel.ioctl(fd, abi.LOOP_CLR_FD)
        except OSError as e:
            _request_failed(kernel, path, number, e)
    finally:
        kernel.close(fd)
    # Usually our close was the last one and ran the teardown: one check says so.
    if settle.is_detached(kernel, number, diskseq):
        return True
    if not wait or (lazy and claimed):
        return False
    if settle.wait_unbound(kernel, number, diskseq, min(timeout, PROBE_GRACE) if lazy else timeout):
        return True
    if lazy:
        return False
    raise _still_attached(kernel, number, timeout)


def drop_partitions(kernel: Kernel, fd: int, number: int) -> list[str]:
    """Delete loopN's partitions (open as ``fd``) with BLKPG_DEL_PARTITION; one that is open
    is tried again after each pause of :data:`DROP_RETRIES`. Returns those still there (open
    throughout, or refused otherwise: the teardown drops them)."""
    pending = sysfs.partitions(kernel, number)
    for pause in (*DROP_RETRIES, None):
        busy: list[str] = []
        for i, name in enumerate(pending):
            pno = int(name.rsplit("p", 1)[1])
            req = abi.BlkpgRequest(abi.BLKPG_DEL_PARTITION, abi.BlkpgPartition(0, 0, pno))
            try:
                kernel.ioctl(fd, abi.BLKPG, req.pack())
            except OSError as e:
                if e.errno == errno.EBUSY:
                    busy.append(name)
                elif e.errno != errno.ENXIO:  # ENXIO: gone already; anything else: give up
                    return busy + pending[i:]
        if not busy or pause is None:
            return busy
        kernel.sleep(pause)
        pending = busy
    return pending


def _claimed(kernel: Kernel, path: str) -> bool:
    """Whether someone holds the device exclusively (a mount, dm, md, a stacked loop): an
    O_EXCL open fails with EBUSY exactly then."""
    try:
        probe = kernel.open(path, _EXCL_PROBE)
    except OSError as e:
        return e.errno == errno.EBUSY
    kernel.close(probe)
    return False


def _flush(kernel: Kernel, fd: int, stat_path: str, baseline: bytes | None) -> None:
    """fsync a read-write device (T20) unless it provably wrote nothing since ``baseline``.

    Dirty page cache that was never submitted is written to the backing file by the final
    close anyway; the fsync adds durability for what the device wrote. Skipping it when
    nothing was written saves a round trip through the loop worker and an fsync of the
    backing file (a disk cache flush on ext4: ~50 us idle, milliseconds on a busy disk).
    A read-only device needs none (the caller skips it): write(2) to it fails (EPERM), the
    image under a device we attached read-only is open read-only too, and its queue has no
    write cache to flush.
    """
    if baseline is not None and sysfs.write_mark(kernel, stat_path) == baseline:
        return
    try:
        kernel.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.ENXIO, errno.EIO, errno.EROFS, errno.EINVAL):
            raise


def _request_failed(kernel: Kernel, path: str, number: int, e: OSError) -> None:
    """LOOP_CLR_FD / LOOP_SET_STATUS64 failed with ``e``: raise what the user can act on
    (ENXIO: already unbound or in teardown, which is what detach wanted)."""
    if e.errno in (errno.EPERM, errno.EACCES):
        raise NotPermittedError(
            f"{path}: detach not permitted", hint="run as root", errno=e.errno, device=path
        ) from None
    if e.errno == errno.EBUSY:
        raise BusyError(
            f"{path} is busy and cannot be detached",
            holders=settle.device_holders(number, kernel=kernel),
            device=path,
        ) from None
    if e.errno != errno.ENXIO:
        raise LoopdevError(f"{path}: detach failed: {why(e)}", errno=e.errno, device=path) from None


def _still_attached(kernel: Kernel, number: int, timeout: float) -> TeardownTimeoutError:
    path = f"/dev/loop{number}"
    holders = settle.device_holders(number, kernel=kernel)
    mounts = [h.target for h in holders if h.kind == "mount" and h.target]
    if mounts:
        hint = f"it is detached when {mounts[0]} is unmounted (loopdev umount {mounts[0]})"
    else:
        hint = "the device goes away when its holders close it; stop them or wait longer"
    return TeardownTimeoutError(
        f"{path} is still attached {timeout:g} s after detach",
        holders=holders,
        hint=hint,
        device=path,
    )


def wait_until_detached(kernel: Kernel, number: int, diskseq: int | None, timeout: float) -> None:
    """Return once loopN's binding ``diskseq`` is gone; TeardownTimeoutError naming the
    holders otherwise."""
    if not settle.wait_unbound(kernel, number, diskseq, timeout):
        raise _still_attached(kernel, number, timeout)
