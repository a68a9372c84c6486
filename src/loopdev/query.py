"""Listing and finding loop devices (sysfs first, verified by ioctl on an open fd), reuse-safe
opening of an existing device (T10-T12), detach_all by loop-ref, and LOOP_CTL_REMOVE."""

from __future__ import annotations

import errno

from loopdev import abi, sysfs
from loopdev._port import resolve, why
from loopdev.control import open_control
from loopdev.device import DEFAULT_DETACH_TIMEOUT, LoopDevice, detach
from loopdev.errors import (
    BusyError,
    Holder,
    ImageError,
    LoopdevError,
    NotALoopDeviceError,
    NotAttachedError,
)
from loopdev.kernel import Kernel
from loopdev.settle import Backoff, device_holders
from loopdev.status import LoopStatus, get_status64, get_status_fields, read_status

REMOVE_TIMEOUT = 2.0


def _status_of(k: Kernel, number: int) -> LoopStatus | None:
    """Status of a bound loopN, or None if it is unbound or going away (T11)."""
    try:
        fd = k.open(f"/dev/loop{number}", abi.O_RDONLY | abi.O_NONBLOCK)
    except OSError:
        return None
    try:
        return read_status(k, fd, number)
    except OSError:
        return None
    finally:
        k.close(fd)


def list_devices(*, kernel: Kernel | None = None) -> list[LoopStatus]:
    """Every bound loop device, in number order. Devices that vanish while we look are
    skipped: an error while scanning means the device is going away (T11)."""
    k = resolve(kernel)
    found = []
    for n in sysfs.loop_numbers(k):
        if not sysfs.is_bound(k, n):
            continue
        status = _status_of(k, n)
        if status is not None:
            found.append(status)
    return found


def _identity(k: Kernel, image: str) -> tuple[int, int]:
    try:
        st = k.stat(image)
    except OSError as e:
        raise ImageError(f"{image}: cannot access it: {why(e)}", hint="check the path") from None
    return st.dev, st.ino


def find(
    backing_file: str, *, offset: int | None = None, kernel: Kernel | None = None
) -> list[LoopStatus]:
    """Bound devices backed by ``backing_file`` (same st_dev/st_ino; same offset if given)."""
    k = resolve(kernel)
    ident = _identity(k, backing_file)
    return [
        s
        for s in list_devices(kernel=k)
        if (s.backing_dev, s.backing_ino) == ident and (offset is None or s.offset == offset)
    ]


def open_existing(
    image: str,
    *,
    offset: int = 0,
    sizelimit: int = 0,
    read_only: bool | None = None,
    clear_autoclear: bool = True,
    kernel: Kernel | None = None,
) -> LoopDevice | None:
    """A handle on a device already bound to ``image`` at ``offset``/``sizelimit``, or None.

    Reuse-safe (util-linux 2.38): the device is opened first (which blocks an autoclear
    teardown), then LOOP_GET_STATUS64 on that fd must still show the same backing dev/ino,
    offset and size limit (T10). ``read_only`` False needs a writable device, True a
    read-only one, None either. With ``clear_autoclear`` the device's AUTOCLEAR is cleared
    so it outlives the other user (T12).
    """
    k = resolve(kernel)
    ident = _identity(k, image)
    for n in sysfs.sized_loop_numbers(k):
        path = f"/dev/loop{n}"
        try:
            fd = k.open(path, abi.O_RDWR if read_only is False else abi.O_RDONLY)
        except OSError:
            continue  # going away (ENXIO in rundown) or not ours to open
        try:
            dev, ino, off, limit, flags, _ref = get_status_fields(k, fd)
            if (
                (dev, ino) != ident
                or off != offset
                or limit != sizelimit
                or (read_only is not None and bool(flags & abi.LO_FLAGS_READ_ONLY) != read_only)
            ):
                k.close(fd)
                continue
            if clear_autoclear and flags & abi.LO_FLAGS_AUTOCLEAR:
                info = get_status64(k, fd)
                info.lo_flags &= ~abi.LO_FLAGS_AUTOCLEAR
                k.ioctl(fd, abi.LOOP_SET_STATUS64, info.pack())
            status = read_status(k, fd, n)
        except OSError:
            k.close(fd)
            continue  # T11: the device is going away
        return LoopDevice(k, fd, status, reused=True)
    return None


def detach_all(
    loop_ref: str | None = None,
    *,
    wait: bool = True,
    timeout: float = DEFAULT_DETACH_TIMEOUT,
    kernel: Kernel | None = None,
) -> list[str]:
    """Detach every device whose loop-ref (lo_file_name) is ``loop_ref`` (every device when
    None, like ``losetup -D``). Returns the paths detached; raises the first failure after
    trying them all."""
    k = resolve(kernel)
    done: list[str] = []
    failures: list[LoopdevError] = []
    for s in list_devices(kernel=k):
        if loop_ref is not None and s.ref != loop_ref:
            continue
        try:
            detach(s.path, wait=wait, timeout=timeout, kernel=k)
            done.append(s.path)
        except NotAttachedError:
            continue  # detached by someone else meanwhile
        except LoopdevError as e:
            failures.append(e)
    if failures:
        first = failures[0]
        if len(failures) > 1:
            first.message += f" (and {len(failures) - 1} more devices failed)"
        raise first
    return done


def remove(number: int, *, timeout: float = REMOVE_TIMEOUT, kernel: Kernel | None = None) -> None:
    """Delete /dev/loopN (LOOP_CTL_REMOVE), retrying EBUSY while a teardown or a prober
    finishes, bounded by ``timeout``."""
    k = resolve(kernel)
    path = f"/dev/loop{number}"
    ctl = open_control(k)
    try:
        backoff = Backoff(k, timeout=timeout, base=0.001, cap=0.05)
        while True:
            try:
                k.ioctl(ctl, abi.LOOP_CTL_REMOVE, number)
                return
            except OSError as e:
                if e.errno == errno.ENODEV:
                    raise NotALoopDeviceError(
                        f"{path} does not exist", hint="list devices with `loopdev -a`"
                    ) from None
                if e.errno != errno.EBUSY:
                    raise LoopdevError(f"cannot remove {path}: {why(e)}") from None
                if sysfs.is_bound(k, number):
                    raise BusyError(
                        f"cannot remove {path}: it is attached",
                        holders=[
                            Holder(
                                "holder",
                                f"{path} is attached to {sysfs.backing_file(k, number)}",
                            )
                        ],
                        hint="detach it first",
                    ) from None
                if not backoff.wait():
                    raise BusyError(
                        f"cannot remove {path}: still open after {backoff.describe()}",
                        holders=device_holders(k, number),
                        hint="close it first",
                    ) from None
    finally:
        k.close(ctl)
