"""Detaching a bound loop device through an open fd: flush, ask the kernel to tear it down in
the way that is safe on its loop-driver design, close, and wait honestly until it is unbound.

How the teardown is asked for depends on the kernel (RESEARCH §4 T28):

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
kernels that backported 18048c1af783 to an older release take the safe way too.
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
