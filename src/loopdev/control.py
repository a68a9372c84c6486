"""Attaching: /dev/loop-control, locks, bounded jittered retry, LOOP_CONFIGURE + fallback.

The order of operations (RESEARCH.md §4): open and check the image; lock /dev/loop-control
(T8) and ask for a free device (or LOOP_CTL_ADD a named one, T25); open the device, check it
is a loop block device (T26), lock it on a separate fd so udev probes the finished device once
(T6/T7), re-check it is unbound (T9), LOOP_CONFIGURE (T3, fallback SET_FD + SET_STATUS64),
retry EAGAIN (T5), read back what was applied (T4); on EBUSY try another device with growing
random jitter (T1/T2), bounded (T27). A device whose configure failed is never cleared (T13).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import re
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from loopdev import abi, sysfs
from loopdev._port import resolve, why
from loopdev.device import LoopDevice, _require_loop, loop_number
from loopdev.errors import (
    BusyError,
    Holder,
    ImageError,
    InvalidArgumentError,
    LoopdevError,
    NoFreeDeviceError,
    NotALoopDeviceError,
    NotPermittedError,
)
from loopdev.kernel import Kernel
from loopdev.settle import Backoff
from loopdev.status import (
    LoopStatus,
    get_block_size,
    get_diskseq,
    get_status_fields,
    new_status,
)

log = logging.getLogger("loopdev")

LOOP_CONTROL = "/dev/loop-control"
#: EBUSY/ENXIO on a fresh device: try another one, at most this many times (systemd: 64).
MAX_DEVICE_ATTEMPTS = 64
#: EAGAIN from the kernel while configuring (util-linux: 10).
MAX_EAGAIN_RETRIES = 10
#: A fresh node missing or not yet accessible (udev creating it): retry for this long.
FRESH_NODE_TIMEOUT = 1.0
PARTITION_TIMEOUT = 5.0
BLOCK_SIZES = (512, 1024, 2048, 4096)

T = TypeVar("T")

# struct loop_config (abi.LoopConfig) in one pack: fd, block_size, then struct loop_info64
# (device, inode, rdevice, offset, sizelimit, number, encrypt type, key size, flags, file name,
# crypt name, key, init[2]) and __reserved[8]. tests/unit checks it against abi.LoopConfig.
_LOOP_CONFIG = struct.Struct("=II5Q4I64s64s32s2Q64x")


class ReadOnlyFallbackWarning(UserWarning):
    """A read-write attach fell back to read-only because the image is write-protected."""


class _TryAnother(Exception):
    """This device is taken (bound meanwhile, EBUSY, going away): try another one."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class _Backing:
    """The opened image."""

    fd: int
    image: str  # as given
    path: str  # canonical
    dev: int
    ino: int
    size: int
    read_only: bool
    fallback: bool


def attach(
    image: str,
    *,
    offset: int = 0,
    sizelimit: int = 0,
    read_only: bool = False,
    partscan: bool = False,
    direct_io: bool = False,
    block_size: int | None = None,
    autoclear: bool = False,
    loop_ref: str | None = None,
    device: str | int | None = None,
    wait_partitions: bool = False,
    kernel: Kernel | None = None,
) -> LoopDevice:
    """Attach ``image`` to a free loop device (or ``device``) and return a handle holding it.

    A read-write request on a write-protected image falls back to read-only with a
    :class:`ReadOnlyFallbackWarning` and ``read_only_fallback=True`` on the handle.
    ``loop_ref`` is stored in lo_file_name, as util-linux 2.39+ ``losetup --loop-ref`` does.
    """
    k = resolve(kernel)
    flags = (
        (abi.LO_FLAGS_AUTOCLEAR if autoclear else 0)
        | (abi.LO_FLAGS_PARTSCAN if partscan else 0)
        | (abi.LO_FLAGS_DIRECT_IO if direct_io else 0)
    )
    dev, _ = attach_image(
        k,
        image,
        offset=offset,
        sizelimit=sizelimit,
        read_only=read_only,
        flags=flags,
        block_size=block_size,
        loop_ref=loop_ref,
        device=device,
    )
    if wait_partitions:
        try:
            _wait_partitions(k, dev)
        except BaseException:
            dev.detach(wait=True)
            raise
    return dev


def attach_image(
    k: Kernel,
    image: str,
    *,
    offset: int = 0,
    sizelimit: int = 0,
    read_only: bool = False,
    flags: int = 0,
    block_size: int | None = None,
    loop_ref: str | None = None,
    device: str | int | None = None,
    write_baseline: bool = True,
    inspect: Callable[[Kernel, int, int, int], T] | None = None,
) -> tuple[LoopDevice, T | None]:
    """:func:`attach` for the library's own callers. ``flags``: LO_FLAGS_* besides READ_ONLY.

    ``inspect(k, fd, offset, size)`` is run on the image's fd once it is attached, with the
    byte range the device shows (mount_image reads the superblock there: a page-cache read of
    the file instead of an I/O round trip through the fresh device). Without
    ``write_baseline`` the handle's detach always fsyncs (read-write devices).
    """
    if offset or sizelimit or block_size:
        _check_numbers(offset, sizelimit, block_size)
    backing = _open_image(k, image, read_only)
    try:
        size = _check_range(backing, offset, sizelimit)
        if backing.read_only:
            flags |= abi.LO_FLAGS_READ_ONLY
        config = _LOOP_CONFIG.pack(
            backing.fd,
            block_size or 0,
            0,
            0,
            0,
            offset,
            sizelimit,
            0,
            0,
            0,
            flags,
            _file_name(loop_ref if loop_ref is not None else backing.path),
            b"",
            b"",
            0,
            0,
        )
        want = _Wanted(flags, offset, sizelimit, block_size or 0, write_baseline)
        if device is None:
            dev = _attach_free(k, backing, config, want)
        else:
            dev = _attach_named(k, device, backing, config, want)
        if inspect is None:
            return dev, None
        # After LOOP_CONFIGURE, not before: a read before it can dirty the image's inode
        # (relatime atime update) that the fsync inside LOOP_CONFIGURE (6.18) then commits.
        try:
            return dev, inspect(k, backing.fd, offset, size)
        except BaseException:
            with contextlib.suppress(LoopdevError):
                dev.detach(wait=True)
            raise
    finally:
        k.close(backing.fd)


@dataclass(slots=True)
class _Wanted:
    """What the caller asked for, to check against what the kernel applied (T4)."""

    flags: int  # LO_FLAGS_* as passed to the kernel
    offset: int
    sizelimit: int
    block_size: int  # 0: the kernel's default
    write_baseline: bool


def _file_name(name: str) -> bytes:
    """lo_file_name: at most 63 bytes (NUL-terminated; the pack pads with zeros)."""
    return name.encode("utf-8", "surrogateescape")[: abi.LO_NAME_SIZE - 1]


# --- validation ------------------------------------------------------------------------------


def _check_numbers(offset: int, sizelimit: int, block_size: int | None) -> None:
    for name, value in (("offset", offset), ("sizelimit", sizelimit)):
        if value < 0:
            raise InvalidArgumentError(
                f"{name} must not be negative (got {value})", hint=f"give a {name} >= 0"
            )
        if value % abi.SECTOR_SIZE:
            raise InvalidArgumentError(
                f"{name} {value} is not a multiple of {abi.SECTOR_SIZE} bytes",
                hint=f"round the {name} to a multiple of {abi.SECTOR_SIZE}",
            )
    if block_size not in (None, 0, *BLOCK_SIZES):
        raise InvalidArgumentError(
            f"block size {block_size} is not supported",
            hint=f"use one of {', '.join(map(str, BLOCK_SIZES))}",
        )


def _check_range(b: _Backing, offset: int, sizelimit: int) -> int:
    """The device's size in bytes (what the kernel computes: whole 512-byte sectors)."""
    if offset >= b.size:
        raise InvalidArgumentError(
            f"offset {offset} is past the end of {b.image} ({b.size} bytes)"
            if b.size
            else f"{b.image} is empty (0 bytes)",
            hint="give an offset inside the image" if b.size else "use a non-empty image",
        )
    if sizelimit and offset + sizelimit > b.size:
        raise InvalidArgumentError(
            f"offset {offset} + sizelimit {sizelimit} goes past the end of {b.image} "
            f"({b.size} bytes)",
            hint=f"give a sizelimit <= {b.size - offset}",
        )
    return (sizelimit or b.size - offset) & ~(abi.SECTOR_SIZE - 1)


_KINDS = {
    abi.S_IFDIR: "a directory",
    abi.S_IFCHR: "a character device",
    abi.S_IFIFO: "a FIFO",
    abi.S_IFSOCK: "a socket",
}


def _open_image(k: Kernel, image: str, read_only: bool) -> _Backing:
    try:
        st = k.stat(image)
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise ImageError(f"{image}: no such file", hint="check the image path") from None
        raise ImageError(f"{image}: cannot access it: {why(e)}") from None
    if not (st.is_reg or st.is_blk):
        raise ImageError(
            f"{image} is {_KINDS.get(st.kind, 'not a regular file')}, not an image file",
            hint="give a regular file (or a block device) holding a disk image",
        )
    fallback = False
    try:
        fd = k.open(image, abi.O_RDONLY if read_only else abi.O_RDWR)
    except OSError as e:
        if read_only or e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ETXTBSY):
            raise _image_open_error(image, e) from None
        try:
            fd = k.open(image, abi.O_RDONLY)
        except OSError as e2:
            raise _image_open_error(image, e2) from None
        fallback = True
        msg = f"{image}: write-protected ({why(e)}), attaching read-only"
        warnings.warn(msg, ReadOnlyFallbackWarning, stacklevel=4)
        log.warning(msg)
    try:
        fst = k.fstat(fd)
        size = fst.size
        if fst.is_blk:
            buf = abi.u64_buffer()
            k.ioctl(fd, abi.BLKGETSIZE64, buf)
            size = abi.read_u64(buf)
        return _Backing(
            fd,
            image,
            _canonical(k, image, fd),
            fst.dev,
            fst.ino,
            size,
            read_only or fallback,
            fallback,
        )
    except BaseException:
        k.close(fd)
        raise


def _canonical(k: Kernel, image: str, fd: int) -> str:
    """The canonical path of the opened image: /proc/self/fd/N (one syscall), else realpath."""
    try:
        path = k.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        path = ""
    return path if path.startswith("/") and not path.endswith(" (deleted)") else k.realpath(image)


def _image_open_error(image: str, e: OSError) -> ImageError:
    if e.errno in (errno.EACCES, errno.EPERM):
        return ImageError(
            f"{image}: cannot read it: permission denied",
            hint="check the file's permissions (or run as root)",
        )
    return ImageError(f"{image}: cannot open it: {why(e)}")


# --- allocation ---------------------------------------------------------------------------


def open_control(k: Kernel) -> int:
    """Open /dev/loop-control, mapping errors to what users can act on."""
    try:
        return k.open(LOOP_CONTROL, abi.O_RDWR)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM):
            raise NotPermittedError(
                f"cannot open {LOOP_CONTROL}: permission denied",
                hint="loop devices need root (or CAP_SYS_ADMIN); run with sudo",
            ) from None
        if e.errno == errno.ENOENT:
            raise LoopdevError(
                f"{LOOP_CONTROL} does not exist: the loop driver is not loaded",
                hint="run `modprobe loop`",
            ) from None
        raise LoopdevError(f"cannot open {LOOP_CONTROL}: {why(e)}") from None


def _attach_free(k: Kernel, b: _Backing, config: bytes, want: _Wanted) -> LoopDevice:
    ctl = open_control(k)
    try:
        k.flock(ctl, abi.LOCK_EX)
        backoff: Backoff | None = None  # made on the first retry only
        last = ""
        while True:
            try:
                number = k.ioctl(ctl, abi.LOOP_CTL_GET_FREE)
            except OSError as e:
                raise NoFreeDeviceError(
                    f"no free loop device for {b.image}: LOOP_CTL_GET_FREE failed: {why(e)}",
                    hint="detach unused devices (`loopdev -a` lists them)",
                ) from None
            try:
                return _configure(k, number, b, config, want)
            except _TryAnother as t:
                last = f"/dev/loop{number}: {t.reason}"
            if backoff is None:
                backoff = Backoff(k, attempts=MAX_DEVICE_ATTEMPTS, base=0.001, cap=0.1)
            if not backoff.wait():
                raise NoFreeDeviceError(
                    f"no free loop device for {b.image} after {backoff.describe()}; last: {last}",
                    hint="other programs keep taking the free devices; retry later",
                )
    finally:
        k.close(ctl)  # also drops the lock


def _attach_named(
    k: Kernel, device: str | int, b: _Backing, config: bytes, want: _Wanted
) -> LoopDevice:
    path = device if isinstance(device, str) else f"/dev/loop{device}"
    ctl = open_control(k)
    try:
        k.flock(ctl, abi.LOCK_EX)
        try:
            st = k.stat(path)
        except OSError as e:
            m = re.fullmatch(r"/dev/loop(\d+)", path)
            if e.errno != errno.ENOENT or m is None:
                raise NotALoopDeviceError(
                    f"{path}: {why(e)}", hint="give /dev/loopN or omit the device"
                ) from None
            number = int(m.group(1))
            try:
                k.ioctl(ctl, abi.LOOP_CTL_ADD, number)  # T25
            except OSError as e2:
                if e2.errno != errno.EEXIST:
                    raise LoopdevError(f"cannot create {path}: {why(e2)}") from None
        else:
            _require_loop(k, path, st.mode, st.rdev)
            number = loop_number(k, path, st.rdev)
        try:
            return _configure(k, number, b, config, want, path=path)
        except _TryAnother as t:
            bound_to = sysfs.backing_file(k, number)
            raise BusyError(
                f"{path} is already in use ({t.reason})",
                holders=[Holder("holder", f"{path} is attached to {bound_to}")] if bound_to else [],
                hint="pick another device, or omit the device to use a free one",
            ) from None
    finally:
        k.close(ctl)


def _open_fresh_node(k: Kernel, path: str) -> int:
    """Open a loop node that may have just been created (T23: short ENOENT/EACCES retry)."""
    backoff: Backoff | None = None
    while True:
        try:
            return k.open(path, abi.O_RDWR)
        except OSError as e:
            if e.errno == errno.ENXIO:
                raise _TryAnother("being torn down (ENXIO)") from None
            if e.errno == errno.EROFS:
                return k.open(path, abi.O_RDONLY)
            if backoff is None:
                backoff = Backoff(k, timeout=FRESH_NODE_TIMEOUT, base=0.0005, cap=0.05)
            if e.errno not in (errno.ENOENT, errno.EACCES) or not backoff.wait():
                if e.errno == errno.EACCES:
                    raise NotPermittedError(
                        f"{path}: permission denied", hint="run as root"
                    ) from None
                raise LoopdevError(f"cannot open {path}: {why(e)} ({backoff.describe()})") from None


def _configure(
    k: Kernel,
    number: int,
    b: _Backing,
    config: bytes,
    want: _Wanted,
    *,
    path: str | None = None,
) -> LoopDevice:
    path = path or f"/dev/loop{number}"
    fd = _open_fresh_node(k, path)
    try:
        fst = k.fstat(fd)
        _require_loop(k, path, fst.mode, fst.rdev)  # T26
        # T6/T7: LOCK_EX while we set the device up: udev skips (and requeues) a locked
        # device, so it probes the finished one. Released with LOCK_UN below, which is what
        # closing a second fd would do, one open+close cheaper.
        k.flock(fd, abi.LOCK_EX)
        try:
            # T9: no separate "still unbound?" probe: LOOP_CONFIGURE (and LOOP_SET_FD) check
            # it atomically under lo_mutex and answer EBUSY, which means "try another".
            _bind(k, fd, path, b, config, want)
            try:
                status = _read_back(k, fd, number, path, b, want)
            except BaseException:
                # Ours: the bind succeeded under our lock. Undo it.
                _clear_quietly(k, fd)
                raise
        finally:
            k.flock(fd, abi.LOCK_UN)
    except BaseException:
        k.close(fd)
        raise
    return LoopDevice(
        k,
        fd,
        status,
        read_only_fallback=b.fallback,
        # a read-only device has nothing to write back: no baseline needed (see device._flush)
        write_baseline=sysfs.write_counter(k, number)
        if want.write_baseline and not status.read_only
        else None,
    )


def _clear_quietly(k: Kernel, fd: int) -> None:
    with contextlib.suppress(OSError):
        k.ioctl(fd, abi.LOOP_CLR_FD)


def _retry_eagain(k: Kernel, fn: Callable[[], object]) -> None:
    """Run ``fn``; on EAGAIN retry with growing jitter, bounded (T5)."""
    backoff: Backoff | None = None
    while True:
        try:
            fn()
            return
        except OSError as e:
            if e.errno != errno.EAGAIN:
                raise
            if backoff is None:
                backoff = Backoff(k, attempts=MAX_EAGAIN_RETRIES, base=0.01, cap=0.25)
            if not backoff.wait():
                raise


#: Whether LOOP_CONFIGURE works here (None: not tried yet). A kernel that refused it once
#: (< 5.8) refuses it always; the model kernel always has it.
_configure_supported: dict[str, bool] = {}


def _bind(k: Kernel, fd: int, path: str, b: _Backing, config: bytes, want: _Wanted) -> None:
    if _configure_supported.get(k.name, True):
        buf = bytearray(config)
        try:
            try:
                k.ioctl(fd, abi.LOOP_CONFIGURE, buf)
            except OSError as e:
                if e.errno != errno.EAGAIN:
                    raise
                _retry_eagain(k, lambda: k.ioctl(fd, abi.LOOP_CONFIGURE, buf))
            return
        except OSError as e:
            if e.errno == errno.EBUSY:
                raise _TryAnother("already bound (EBUSY)") from None
            if e.errno not in (errno.EINVAL, errno.ENOTTY, errno.ENOSYS):
                raise _configure_error(path, b, e) from None
            if e.errno != errno.EINVAL:  # EINVAL may be about the configuration itself
                _configure_supported[k.name] = False
    # T3 fallback: kernels without LOOP_CONFIGURE (< 5.8).
    try:
        k.ioctl(fd, abi.LOOP_SET_FD, b.fd)
    except OSError as e:
        if e.errno == errno.EBUSY:
            raise _TryAnother("already bound (EBUSY)") from None
        raise _configure_error(path, b, e) from None
    try:
        info = abi.LoopConfig.unpack(config).info
        info.lo_flags &= abi.LOOP_SET_STATUS_SETTABLE_FLAGS
        raw = info.pack()
        _retry_eagain(k, lambda: k.ioctl(fd, abi.LOOP_SET_STATUS64, raw))
        if want.flags & abi.LO_FLAGS_DIRECT_IO:
            k.ioctl(fd, abi.LOOP_SET_DIRECT_IO, 1)
        if want.block_size:
            _retry_eagain(k, lambda: k.ioctl(fd, abi.LOOP_SET_BLOCK_SIZE, want.block_size))
    except OSError as e:
        _clear_quietly(k, fd)  # we bound it with SET_FD a moment ago
        raise _configure_error(path, b, e) from None


def _configure_error(path: str, b: _Backing, e: OSError) -> LoopdevError:
    if e.errno == errno.EPERM:
        return NotPermittedError(f"{path}: not permitted to attach {b.image}", hint="run as root")
    if e.errno == errno.EAGAIN:
        return BusyError(
            f"{path}: the kernel kept answering EAGAIN while attaching {b.image} "
            f"({MAX_EAGAIN_RETRIES} retries)",
            hint="retry later",
        )
    if e.errno == errno.EINVAL:
        return InvalidArgumentError(
            f"{path}: the kernel refused to attach {b.image}: {why(e)}",
            hint="check offset, sizelimit and block size (a loop device cannot back itself)",
        )
    return LoopdevError(f"{path}: attaching {b.image} failed: {why(e)}")


def _read_back(
    k: Kernel, fd: int, number: int, path: str, b: _Backing, want: _Wanted
) -> LoopStatus:
    """T4: check that what the kernel applied is what we asked for."""
    dev, ino, offset, sizelimit, flags, ref = get_status_fields(k, fd)
    actual_bs = get_block_size(k, fd)
    must = want.flags & ~abi.LO_FLAGS_DIRECT_IO
    if (
        (dev, ino) != (b.dev, b.ino)
        or offset != want.offset
        or sizelimit != want.sizelimit
        or flags & must != must
        or (want.block_size and actual_bs != want.block_size)
    ):
        problems = []
        if (dev, ino) != (b.dev, b.ino):
            problems.append("backing file differs")
        if offset != want.offset:
            problems.append(f"offset {offset} instead of {want.offset}")
        if sizelimit != want.sizelimit:
            problems.append(f"sizelimit {sizelimit} instead of {want.sizelimit}")
        if flags & must != must:
            problems.append(f"flags {flags:#x} lack {must & ~flags:#x}")
        if want.block_size and actual_bs != want.block_size:
            problems.append(f"block size {actual_bs} instead of {want.block_size}")
        raise LoopdevError(
            f"{path}: the kernel did not apply the configuration for {b.image}: "
            + "; ".join(problems),
            hint="this kernel may not support these options",
        )
    if want.flags & abi.LO_FLAGS_DIRECT_IO and not flags & abi.LO_FLAGS_DIRECT_IO:
        msg = f"{path}: direct I/O not supported for {b.image}; using buffered I/O"
        warnings.warn(msg, UserWarning, stacklevel=5)
        log.warning(msg)
    return new_status(
        number, dev, ino, offset, sizelimit, flags, ref, b.path, get_diskseq(k, fd), actual_bs
    )


def _wait_partitions(k: Kernel, dev: LoopDevice) -> None:
    """Wait until the partitions the kernel found have their /dev nodes."""
    backoff = Backoff(k, timeout=PARTITION_TIMEOUT, base=0.0005, cap=0.05)
    while True:
        missing = []
        for name in sysfs.partitions(k, dev.number):
            try:
                if not k.stat(f"/dev/{name}").is_blk:
                    missing.append(name)
            except OSError:
                missing.append(name)
        if not missing:
            return
        if not backoff.wait():
            raise LoopdevError(
                f"{dev.path}: partition nodes {', '.join(missing)} did not appear "
                f"({backoff.describe()})",
                hint="is devtmpfs mounted on /dev?",
            )
