"""Listing and finding bound loop devices: sysfs says which are bound, LOOP_GET_STATUS64 on an
open fd says what they are."""

from __future__ import annotations

import errno

from loopdev import abi, sysfs
from loopdev._port import fspath, resolve
from loopdev.errors import ImageError, NotPermittedError, why
from loopdev.status import LoopStatus, read_status

TYPE_CHECKING = False
if TYPE_CHECKING:
    import os

    from loopdev.kernel import Kernel

_DENIED = (errno.EACCES, errno.EPERM)


def _status_of(k: Kernel, number: int, sysfs_fallback: bool) -> LoopStatus | None:
    """Status of a bound loopN, or None if it is unbound or going away (T11). A device we
    may not open is described from sysfs (``sysfs_fallback``) or refused."""
    path = f"/dev/loop{number}"
    try:
        fd = k.open(path, abi.O_RDONLY | abi.O_NONBLOCK)
    except OSError as e:
        if e.errno not in _DENIED:
            return None  # going away (ENXIO in rundown, ENOENT removed)
        if sysfs_fallback:
            return sysfs_status(k, number)
        raise NotPermittedError(
            f"cannot open {path} to read its status: permission denied",
            hint="listing loop devices needs root (`loopdev -a` shows what sysfs tells)",
            errno=e.errno,
            device=path,
        ) from None
    try:
        return read_status(k, fd, number)
    except OSError:
        return None
    finally:
        k.close(fd)


def list_devices(*, sysfs_fallback: bool = False, kernel: Kernel | None = None) -> list[LoopStatus]:
    """Every bound loop device, in number order, each verified with LOOP_GET_STATUS64 on an
    open fd. Devices that vanish while we look are skipped (T11).

    A device the caller may not open (not root) raises NotPermittedError, or, with
    ``sysfs_fallback``, is described from sysfs alone (as ``losetup -a`` shows it to users:
    backing_dev and backing_ino 0, no loop-ref).
    """
    k = resolve(kernel)
    found = []
    for n in sysfs.loop_numbers(k):
        if not sysfs.is_bound(k, n):
            continue
        status = _status_of(k, n, sysfs_fallback)
        if status is not None:
            found.append(status)
    return found


def _sysfs_int(k: Kernel, number: int, name: str) -> int:
    raw = sysfs.attr(k, number, name)
    return int(raw) if raw and raw.isdigit() else 0


_SYSFS_FLAGS = (
    ("loop/autoclear", abi.LO_FLAGS_AUTOCLEAR),
    ("loop/partscan", abi.LO_FLAGS_PARTSCAN),
    ("loop/dio", abi.LO_FLAGS_DIRECT_IO),
    ("ro", abi.LO_FLAGS_READ_ONLY),
)


def sysfs_status(k: Kernel, number: int) -> LoopStatus | None:
    """What sysfs alone tells about a bound loopN (for callers who may not open the device):
    no backing dev/ino, no loop-ref. None if it is not bound."""
    backing = sysfs.backing_file(k, number)
    if backing is None:
        return None
    return LoopStatus(
        number=number,
        backing_dev=0,
        backing_ino=0,
        offset=_sysfs_int(k, number, "loop/offset"),
        sizelimit=_sysfs_int(k, number, "loop/sizelimit"),
        flags=sum(bit for name, bit in _SYSFS_FLAGS if sysfs.attr(k, number, name) == "1"),
        ref="",
        backing_file=backing,
        diskseq=sysfs.diskseq(k, number),
        block_size=_sysfs_int(k, number, "queue/logical_block_size") or None,
        rdev=sysfs.rdev(k, number),
    )


def image_identity(k: Kernel, image: str) -> tuple[int, int]:
    """(st_dev, st_ino) of ``image``; ImageError if it cannot be stat'ed."""
    try:
        st = k.stat(image)
    except OSError as e:
        raise ImageError(
            f"{image}: cannot access it: {why(e)}",
            hint="check the path",
            errno=e.errno,
            filename=image,
        ) from None
    return st.dev, st.ino


def find(
    backing_file: str | os.PathLike[str],
    *,
    offset: int | None = None,
    kernel: Kernel | None = None,
) -> list[LoopStatus]:
    """Bound devices backed by ``backing_file`` (same st_dev/st_ino; same offset if given)."""
    k = resolve(kernel)
    ident = image_identity(k, fspath(backing_file))
    return [
        s
        for s in list_devices(kernel=k)
        if (s.backing_dev, s.backing_ino) == ident and (offset is None or s.offset == offset)
    ]
