"""mount_image, umount and mounted(): loop mounts that stay correct under async teardown.

mount_image reuses a device already bound to the same image only by opening it first and
re-checking it on that fd (T10), keeps the device fd open across mount(2) and closes it after;
new devices are AUTOCLEAR, as mount(8) makes them. umount returns only once the loop device
it used is really detached, so ``umount inner; umount outer`` is safe; EBUSY with no process
holding the mount (io_uring after kill -9, delayed fput) is waited out, bounded and jittered.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from loopdev import abi, sysfs
from loopdev._port import resolve, why
from loopdev.control import attach_image
from loopdev.device import LoopDevice, wait_until_detached
from loopdev.errors import (
    BusyError,
    Holder,
    LoopdevError,
    MountError,
    NotMountedError,
    NotPermittedError,
    TeardownTimeoutError,
)
from loopdev.fsdetect import block_filesystems, detect
from loopdev.kernel import Kernel
from loopdev.mountinfo import mount_at, mounts_of_device
from loopdev.query import open_existing
from loopdev.settle import Backoff, is_detached, path_holders

DEFAULT_UMOUNT_TIMEOUT = 5.0

_FLAG_OPTIONS = {
    "ro": abi.MS_RDONLY,
    "rw": 0,
    "nosuid": abi.MS_NOSUID,
    "nodev": abi.MS_NODEV,
    "noexec": abi.MS_NOEXEC,
    "sync": abi.MS_SYNCHRONOUS,
    "noatime": abi.MS_NOATIME,
    "nodiratime": abi.MS_NODIRATIME,
    "relatime": abi.MS_RELATIME,
    "defaults": 0,
}


@dataclass(frozen=True)
class Mount:
    """A filesystem image mounted through a loop device."""

    image: str
    target: str
    device: str
    fstype: str
    read_only: bool
    loop_number: int
    diskseq: int | None
    reused: bool


def parse_options(options: str) -> tuple[int, str]:
    """mount(8)-style ``-o`` options → (MS_* flags, data string for the filesystem)."""
    flags = 0
    data = []
    for opt in filter(None, (o.strip() for o in options.split(","))):
        if opt in _FLAG_OPTIONS:
            flags |= _FLAG_OPTIONS[opt]
        else:
            data.append(opt)
    return flags, ",".join(data)


def _check_target(k: Kernel, target: str) -> str:
    """The canonical path of the directory ``target``; MountError unless it is a directory
    that is not a mount point yet."""
    try:
        st = k.stat(target)
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise MountError(
                f"mount point {target} does not exist", hint=f"create it: mkdir -p {target}"
            ) from None
        raise MountError(f"mount point {target}: {why(e)}") from None
    if not st.is_dir:
        raise MountError(f"mount point {target} is not a directory", hint="mount on a directory")
    canonical = k.realpath(target)
    if st.mount_root is False:
        return canonical  # statx says so: no need to read the mount table
    existing = mount_at(k, canonical)
    if existing is not None:
        raise MountError(
            f"{target} is already a mount point ({existing.source}, {existing.fstype})",
            hint=f"umount {target} first, or choose another directory",
        )
    if st.mount_root:
        raise MountError(
            f"{target} is already a mount point",
            hint=f"umount {target} first, or choose another directory",
        )
    return canonical


def _mount_error(image: str, target: str, fstype: str, e: OSError, explicit: bool) -> LoopdevError:
    if e.errno in (errno.EPERM, errno.EACCES):
        return NotPermittedError(f"mounting {image} on {target}: {why(e)}", hint="run as root")
    if e.errno == errno.ENODEV:
        return MountError(
            f"cannot mount {image}: unknown filesystem type {fstype!r}",
            hint="check the type name (see /proc/filesystems)",
        )
    if e.errno == errno.EBUSY:
        return MountError(f"cannot mount {image} on {target}: {why(e)}", hint="is it in use?")
    if e.errno == errno.EIO:
        return MountError(
            f"cannot mount {image}: I/O error reading its superblock",
            hint="the image may be damaged, or its loop device was torn down under the mount",
        )
    if explicit:
        return MountError(
            f"cannot mount {image} as {fstype}: wrong filesystem type or bad superblock ({why(e)})",
            hint="check the filesystem type, or omit it to detect it",
        )
    return MountError(f"cannot mount {image} as {fstype}: {why(e)}")


def mount_image(
    image: str,
    target: str,
    *,
    fstype: str | None = None,
    read_only: bool = False,
    options: str = "",
    reuse: bool = True,
    offset: int = 0,
    sizelimit: int = 0,
    kernel: Kernel | None = None,
) -> Mount:
    """Mount the filesystem image ``image`` on the directory ``target`` via a loop device.

    Nothing is left attached or mounted when it fails.
    """
    k = resolve(kernel)
    canonical = _check_target(k, target)
    flags, data = parse_options(options) if options else (0, "")
    read_only = read_only or bool(flags & abi.MS_RDONLY)
    dev: LoopDevice | None = None
    found: str | None = None
    if reuse:
        dev = open_existing(
            image,
            offset=offset,
            sizelimit=sizelimit,
            read_only=read_only,
            clear_autoclear=False,
            kernel=k,
        )
        if dev is not None and not fstype:
            # Through the device: its page cache may hold what its user wrote.
            found = detect(k, dev.fileno())
    if dev is None:
        # A new AUTOCLEAR device, as mount(8) makes them. The superblock is read from the
        # image file right after LOOP_CONFIGURE: a fresh device shows exactly those bytes
        # (the kernel drops a loop disk's page cache when its binding changes), and a
        # page-cache read of the file costs a fraction of an I/O round trip through the loop
        # worker. No write baseline: the handle is only detached if the mount fails, and then
        # an fsync is fine.
        dev, found = attach_image(
            k,
            image,
            offset=offset,
            sizelimit=sizelimit,
            read_only=read_only,
            flags=abi.LO_FLAGS_AUTOCLEAR,
            write_baseline=False,
            inspect=None if fstype else detect,
        )
    mounted_ok = False
    try:
        if dev.read_only:
            flags |= abi.MS_RDONLY
        if fstype:
            candidates, explicit = [fstype], True
        else:
            candidates = [found] if found else block_filesystems(k)
            explicit = found is not None
        last: LoopdevError | None = None
        for t in candidates:
            try:
                k.mount(dev.path, canonical, t, flags, data)
            except OSError as e:
                last = _mount_error(image, target, t, e, explicit)
                if explicit or e.errno not in (errno.EINVAL, errno.ENODEV, errno.EIO):
                    raise last from None
                continue
            mounted_ok = True
            return Mount(
                image=image,
                target=canonical,
                device=dev.path,
                fstype=t,
                read_only=bool(flags & abi.MS_RDONLY),
                loop_number=dev.number,
                diskseq=dev.diskseq,
                reused=dev.reused,
            )
        raise MountError(
            f"cannot mount {image}: unknown filesystem (no known superblock found, and none "
            f"of {', '.join(candidates) or 'the kernel filesystems'} accepted it)",
            hint="is it a filesystem image? pass fstype= if the kernel supports it",
        )
    finally:
        if mounted_ok or dev.reused:
            dev.relinquish()  # the mount (or the other user) holds the device now
        else:
            dev.detach(wait=True)  # ours and unused: leave nothing behind


def umount(
    target: str, *, timeout: float = DEFAULT_UMOUNT_TIMEOUT, kernel: Kernel | None = None
) -> None:
    """Unmount ``target``; if it was an AUTOCLEAR loop mount, return only once that loop
    device is detached.

    EBUSY while a process uses the mount → BusyError naming it (pid and command) at once.
    EBUSY with no process holding it → transient kernel references, waited out with growing
    jitter for at most ``timeout`` (then TeardownTimeoutError).
    """
    k = resolve(kernel)
    try:
        st = k.stat(target)
    except OSError as e:
        raise NotMountedError(f"{target}: {why(e)}", hint="nothing to unmount") from None
    if st.mount_root is False:
        raise NotMountedError(f"{target} is not a mount point", hint="nothing to unmount")
    # The filesystem's device, from the stat of the mount's root (st_dev is the MAJ:MIN the
    # mount table shows). The loop device's diskseq is read before the umount: it tells our
    # binding from a new one made right after the teardown.
    dev = st.dev
    number: int | None = None
    seq: int | None = None
    if abi.major(dev) == abi.LOOP_MAJOR:
        name = sysfs.block_name(k, dev)
        if name and name.startswith("loop") and name[4:].isdigit():
            number = int(name[4:])
            seq = sysfs.diskseq(k, number)
    backoff: Backoff | None = None  # made on the first EBUSY only
    while True:
        try:
            k.umount2(target, 0)
            break
        except OSError as e:
            if e.errno == errno.EINVAL:
                raise NotMountedError(
                    f"{target} is not a mount point", hint="nothing to unmount"
                ) from None
            if e.errno == errno.EPERM:
                raise NotPermittedError(
                    f"cannot unmount {target}: {why(e)}", hint="run as root"
                ) from None
            if e.errno != errno.EBUSY:
                raise LoopdevError(f"cannot unmount {target}: {why(e)}") from None
        holders = path_holders(k, k.realpath(target))
        if holders:
            raise BusyError(
                f"cannot unmount {target}: it is in use",
                holders=holders,
                hint="close those files or stop those processes (or leave the directory), then retry",
            )
        if backoff is None:
            backoff = Backoff(k, timeout=timeout, base=0.001, cap=0.05)
        if not backoff.wait():
            raise TeardownTimeoutError(
                f"cannot unmount {target}: still busy after {backoff.describe()} although no "
                "process uses it",
                holders=[
                    Holder(
                        "kernel",
                        "kernel references still pending (io_uring requests of a killed "
                        "process, delayed fput)",
                    )
                ],
                hint="retry later",
            )
    if number is None or is_detached(k, number, seq):
        return  # not a loop mount, or (6.11+, no other opener) torn down inside umount2
    if sysfs.attr(k, number, "loop/autoclear") != "1" or mounts_of_device(k, dev):
        return  # not ours to wait for: not autoclear, or still mounted elsewhere
    left = backoff.remaining() if backoff is not None else None
    wait_until_detached(k, number, seq, max(timeout if left is None else left, 0.5))


@contextmanager
def mounted(
    image: str,
    target: str,
    *,
    fstype: str | None = None,
    read_only: bool = False,
    options: str = "",
    reuse: bool = True,
    timeout: float = DEFAULT_UMOUNT_TIMEOUT,
    kernel: Kernel | None = None,
) -> Iterator[Mount]:
    """``with mounted(image, dir) as m:`` mounts, and unmounts (waiting for the loop device
    to go) on exit."""
    m = mount_image(
        image,
        target,
        fstype=fstype,
        read_only=read_only,
        options=options,
        reuse=reuse,
        kernel=kernel,
    )
    try:
        yield m
    finally:
        umount(m.target, timeout=timeout, kernel=kernel)
