"""Reusing a device already bound to an image, safely (util-linux 2.38's way, T10-T12): open
it first, which holds off an autoclear teardown, then check on that fd that it is still bound
to the same image."""

from __future__ import annotations

import errno

from loopdev import abi, sysfs
from loopdev._port import fspath, resolve
from loopdev.device import LoopDevice
from loopdev.errors import NotPermittedError
from loopdev.query import image_identity
from loopdev.status import get_status_fields, read_status, set_autoclear

TYPE_CHECKING = False
if TYPE_CHECKING:
    import os

    from loopdev.kernel import Kernel


def open_existing(
    image: str | os.PathLike[str],
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
    so it outlives the other user (T12). A device that cannot be read (going away) is
    skipped (T11); one the caller may not open raises NotPermittedError.
    """
    k = resolve(kernel)
    path_text = fspath(image)
    ident = image_identity(k, path_text)
    for n in sysfs.sized_loop_numbers(k):
        path = f"/dev/loop{n}"
        try:
            fd = k.open(path, abi.O_RDWR if read_only is False else abi.O_RDONLY)
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EPERM) and sysfs.is_bound(k, n):
                raise NotPermittedError(
                    f"cannot open {path} to check whether it can be reused: permission denied",
                    hint="run as root",
                    errno=e.errno,
                    device=path,
                ) from None
            continue  # going away (ENXIO in rundown) or gone
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
                set_autoclear(k, fd, False)
            status = read_status(k, fd, n)
        except OSError:
            k.close(fd)
            continue  # T11: the device is going away
        return LoopDevice(k, fd, status, reused=True)
    return None
