"""/dev/loop-control: opening it, asking for a free device (LOOP_CTL_GET_FREE) and deleting
an unused one (LOOP_CTL_REMOVE)."""

from __future__ import annotations

import errno

from loopdev import abi, sysfs
from loopdev._port import resolve
from loopdev.errors import (
    BusyError,
    Holder,
    LoopdevError,
    NotALoopDeviceError,
    NotPermittedError,
    why,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from loopdev.kernel import Kernel

LOOP_CONTROL = "/dev/loop-control"
REMOVE_TIMEOUT = 2.0


def open_control(k: Kernel) -> int:
    """Open /dev/loop-control, mapping errors to what users can act on."""
    try:
        return k.open(LOOP_CONTROL, abi.O_RDWR)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM):
            raise NotPermittedError(
                f"cannot open {LOOP_CONTROL}: permission denied",
                hint="loop devices need root (or CAP_SYS_ADMIN); run with sudo",
                errno=e.errno,
                filename=LOOP_CONTROL,
            ) from None
        if e.errno == errno.ENOENT:
            raise LoopdevError(
                f"{LOOP_CONTROL} does not exist: the loop driver is not loaded",
                hint="run `modprobe loop`",
                errno=e.errno,
                filename=LOOP_CONTROL,
            ) from None
        raise LoopdevError(
            f"cannot open {LOOP_CONTROL}: {why(e)}", errno=e.errno, filename=LOOP_CONTROL
        ) from None


def find_free(*, kernel: Kernel | None = None) -> str:
    """The path of the first unused loop device (created if there is none), as
    ``losetup -f`` prints it. Another program may take it before you use it: to attach,
    call :func:`loopdev.attach`, which retries. Without the right to open loop-control, the
    first unbound device sysfs shows (none is created), as losetup does."""
    k = resolve(kernel)
    try:
        ctl = open_control(k)
    except NotPermittedError:
        # as losetup does for users who may not open loop-control: the first device sysfs
        # shows unbound (none is created)
        for n in sysfs.loop_numbers(k):
            if not sysfs.is_bound(k, n):
                return f"/dev/loop{n}"
        raise
    try:
        number = k.ioctl(ctl, abi.LOOP_CTL_GET_FREE)
    except OSError as e:
        raise LoopdevError(
            f"cannot find an unused loop device: {why(e)}",
            hint="detach unused devices (`loopdev -a` lists them)",
            errno=e.errno,
        ) from None
    finally:
        k.close(ctl)
    return f"/dev/loop{number}"


def remove(number: int, *, timeout: float = REMOVE_TIMEOUT, kernel: Kernel | None = None) -> None:
    """Delete /dev/loopN (LOOP_CTL_REMOVE), retrying EBUSY while a teardown or a prober
    finishes, bounded by ``timeout``."""
    from loopdev.settle import Backoff, device_holders

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
                        f"{path} does not exist",
                        hint="list devices with `loopdev -a`",
                        errno=e.errno,
                        device=path,
                    ) from None
                if e.errno != errno.EBUSY:
                    raise LoopdevError(
                        f"cannot remove {path}: {why(e)}", errno=e.errno, device=path
                    ) from None
            if sysfs.is_bound(k, number):
                raise BusyError(
                    f"cannot remove {path}: it is attached",
                    holders=[
                        Holder("holder", f"{path} is attached to {sysfs.backing_file(k, number)}")
                    ],
                    hint=f"detach it first (loopdev -d {path})",
                    device=path,
                )
            if not backoff.wait():
                raise BusyError(
                    f"cannot remove {path}: still open after {backoff.describe()}",
                    holders=device_holders(number, kernel=k),
                    hint="close it first",
                    device=path,
                )
    finally:
        k.close(ctl)
