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
from typing import TypeVar

from loopdev import abi, sysfs
from loopdev._port import resolve, why
from loopdev.device import (
    LoopDevice,
    _require_loop,
    check_block_size,
    loop_number,
    new_handle,
)
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
from loopdev.settle import MAX_EAGAIN_RETRIES, Backoff, retry_eagain
from loopdev.status import _INFO_HEAD, get_block_size

log = logging.getLogger("loopdev")

LOOP_CONTROL = "/dev/loop-control"
#: EBUSY/ENXIO on a fresh device: try another one, at most this many times (systemd: 64).
MAX_DEVICE_ATTEMPTS = 64
#: A fresh node missing or not yet accessible (udev creating it): retry for this long.
FRESH_NODE_TIMEOUT = 1.0
PARTITION_TIMEOUT = 5.0

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
    bfd, bpath, bdev, bino, size, fallback = _open_image(k, image, read_only)
    try:
        if offset >= size or (sizelimit and offset + sizelimit > size):
            raise _range_error(image, size, offset, sizelimit)
        if read_only or fallback:
            flags |= abi.LO_FLAGS_READ_ONLY
        bs = block_size or 0
        config = _LOOP_CONFIG.pack(
            bfd,
            bs,
            0,
            0,
            0,
            offset,
            sizelimit,
            0,
            0,
            0,
            flags,
            _file_name(loop_ref if loop_ref is not None else bpath),
            b"",
            b"",
            0,
            0,
        )
        want = (bdev, bino, offset, sizelimit, flags, bs, write_baseline, bpath, fallback)
        if device is None:
            dev = _attach_free(k, image, bfd, config, want)
        else:
            dev = _attach_named(k, device, image, bfd, config, want)
        if inspect is None:
            return dev, None
        # After LOOP_CONFIGURE, not before: a read before it can dirty the image's inode
        # (relatime atime update) that the fsync inside LOOP_CONFIGURE (6.18) then commits.
        try:
            return dev, inspect(k, bfd, offset, (sizelimit or size - offset) & _SECTOR_MASK)
        except BaseException:
            with contextlib.suppress(LoopdevError):
                dev.detach(wait=True)
            raise
    finally:
        k.close(bfd)


#: What the caller asked for, checked against what the kernel applied (T4), and what the
#: handle needs from the image: (backing st_dev, st_ino, offset, sizelimit, LO_FLAGS_* as
#: passed to the kernel, block size (0: the kernel's default), write_baseline, canonical
#: image path, read-only fallback). A tuple: attach makes one per call.
_Wanted = tuple[int, int, int, int, int, int, bool, str, bool]

_SECTOR_MASK = ~(abi.SECTOR_SIZE - 1)


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
    if block_size:
        check_block_size(block_size)


def _range_error(image: str, size: int, offset: int, sizelimit: int) -> InvalidArgumentError:
    """The byte range does not fit in the image (the device would be empty or too short)."""
    if offset >= size:
        return InvalidArgumentError(
            f"offset {offset} is past the end of {image} ({size} bytes)"
            if size
            else f"{image} is empty (0 bytes)",
            hint="give an offset inside the image" if size else "use a non-empty image",
        )
    return InvalidArgumentError(
        f"offset {offset} + sizelimit {sizelimit} goes past the end of {image} ({size} bytes)",
        hint=f"give a sizelimit <= {size - offset}",
    )


_KINDS = {
    abi.S_IFDIR: "a directory",
    abi.S_IFCHR: "a character device",
    abi.S_IFIFO: "a FIFO",
    abi.S_IFSOCK: "a socket",
}


def _open_image(k: Kernel, image: str, read_only: bool) -> tuple[int, str, int, int, int, bool]:
    """Open the image: (fd, canonical path, st_dev, st_ino, size in bytes, read-only fallback).

    The stat comes before the open: it refuses what must not be opened at all (a FIFO blocks
    a read-only open, a character device may act on open) and gives identity and size. No
    fstat of the fd: if the path were replaced between the stat and the open, the T4
    read-back (lo_device/lo_inode of the file the kernel bound, i.e. this fd) differs from
    this stat and the attach is undone with an error, so nothing is attached on a stale
    size or identity.
    """
    try:
        st = k.stat(image)
    except OSError as e:
        raise _stat_error(image, e) from None
    kind = st.mode & abi.S_IFMT
    if kind != abi.S_IFREG and kind != abi.S_IFBLK:
        raise ImageError(
            f"{image} is {_KINDS.get(kind, 'not a regular file')}, not an image file",
            hint="give a regular file (or a block device) holding a disk image",
        )
    fallback = False
    try:
        fd = k.open(image, abi.O_RDONLY if read_only else abi.O_RDWR)
    except OSError as e:
        fd = _open_read_only_instead(k, image, read_only, e)
        fallback = True
    try:
        size = st.size
        if kind == abi.S_IFBLK:
            buf = abi.u64_buffer()
            k.ioctl(fd, abi.BLKGETSIZE64, buf)
            size = abi.read_u64(buf)
        # The canonical path (what losetup stores in lo_file_name): /proc/self/fd/N names
        # the opened file in one system call; realpath only if /proc cannot tell.
        try:
            path = k.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            path = ""
        if not path.startswith("/") or path.endswith(" (deleted)"):
            path = k.realpath(image)
        return fd, path, st.dev, st.ino, size, fallback
    except BaseException:
        k.close(fd)
        raise


def _stat_error(image: str, e: OSError) -> ImageError:
    if e.errno == errno.ENOENT:
        return ImageError(f"{image}: no such file", hint="check the image path")
    return ImageError(f"{image}: cannot access it: {why(e)}")


def _open_read_only_instead(k: Kernel, image: str, read_only: bool, e: OSError) -> int:
    """A read-write open failed with ``e``: open read-only if the image is write-protected
    (with a :class:`ReadOnlyFallbackWarning`), else raise."""
    if read_only or e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ETXTBSY):
        raise _image_open_error(image, e) from None
    try:
        fd = k.open(image, abi.O_RDONLY)
    except OSError as e2:
        raise _image_open_error(image, e2) from None
    msg = f"{image}: write-protected ({why(e)}), attaching read-only"
    warnings.warn(msg, ReadOnlyFallbackWarning, stacklevel=5)
    log.warning(msg)
    return fd


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


def _attach_free(k: Kernel, image: str, bfd: int, config: bytes, want: _Wanted) -> LoopDevice:
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
                    f"no free loop device for {image}: LOOP_CTL_GET_FREE failed: {why(e)}",
                    hint="detach unused devices (`loopdev -a` lists them)",
                ) from None
            try:
                return _configure(k, number, None, image, bfd, config, want)
            except _TryAnother as t:
                last = f"/dev/loop{number}: {t.reason}"
            if backoff is None:
                backoff = Backoff(k, attempts=MAX_DEVICE_ATTEMPTS, base=0.001, cap=0.1)
            if not backoff.wait():
                raise NoFreeDeviceError(
                    f"no free loop device for {image} after {backoff.describe()}; last: {last}",
                    hint="other programs keep taking the free devices; retry later",
                )
    finally:
        k.close(ctl)  # also drops the lock


def _attach_named(
    k: Kernel, device: str | int, image: str, bfd: int, config: bytes, want: _Wanted
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
            return _configure(k, number, path, image, bfd, config, want)
        except _TryAnother as t:
            bound_to = sysfs.backing_file(k, number)
            raise BusyError(
                f"{path} is already in use ({t.reason})",
                holders=[Holder("holder", f"{path} is attached to {bound_to}")] if bound_to else [],
                hint="pick another device, or omit the device to use a free one",
            ) from None
    finally:
        k.close(ctl)


def _open_fresh_node(k: Kernel, path: str, first: OSError) -> int:
    """Open a loop node that may have just been created, after a first open failed with
    ``first`` (T23: short ENOENT/EACCES retry)."""
    backoff: Backoff | None = None
    e = first
    while True:
        if e.errno == errno.ENXIO:
            raise _TryAnother("being torn down (ENXIO)")
        if e.errno == errno.EROFS:
            return k.open(path, abi.O_RDONLY)
        if backoff is None:
            backoff = Backoff(k, timeout=FRESH_NODE_TIMEOUT, base=0.0005, cap=0.05)
        if e.errno not in (errno.ENOENT, errno.EACCES) or not backoff.wait():
            if e.errno == errno.EACCES:
                raise NotPermittedError(f"{path}: permission denied", hint="run as root")
            raise LoopdevError(f"cannot open {path}: {why(e)} ({backoff.describe()})")
        try:
            return k.open(path, abi.O_RDWR)
        except OSError as again:
            e = again


_RO = abi.LO_FLAGS_READ_ONLY
_DIO = abi.LO_FLAGS_DIRECT_IO
_INFO_SIZE = abi.LoopInfo64.SIZE


def _configure(
    k: Kernel,
    number: int,
    path: str | None,
    image: str,
    bfd: int,
    config: bytes,
    want: _Wanted,
) -> LoopDevice:
    """Bind loopN to the image and return the handle: one straight line for the usual case,
    every error branch in a helper. ``path``: the node to open (None: /dev/loopN)."""
    devpath, stat_path, _ = sysfs.loop_paths(number)
    if path is None:
        path = devpath
    try:
        fd = k.open(path, abi.O_RDWR)
    except OSError as e:
        fd = _open_fresh_node(k, path, e)
    try:
        fst = k.fstat(fd)
        rdev = fst.rdev
        # T26: a block device of the loop major (abi.major, inlined)
        if (
            fst.mode & abi.S_IFMT != abi.S_IFBLK
            or ((rdev >> 8) & 0xFFF) | ((rdev >> 32) & ~0xFFF) != abi.LOOP_MAJOR
        ):
            _require_loop(k, path, fst.mode, rdev)
        # T6/T7: LOCK_EX while we set the device up: udev skips (and requeues) a locked
        # device, so it probes the finished one. Released with LOCK_UN below, which is what
        # closing a second fd would do, one open+close cheaper.
        k.flock(fd, abi.LOCK_EX)
        try:
            # T9: no separate "still unbound?" probe: LOOP_CONFIGURE (and LOOP_SET_FD) check
            # it atomically under lo_mutex and answer EBUSY, which means "try another".
            if _configure_supported.get(k.name, True):
                try:
                    k.ioctl(fd, abi.LOOP_CONFIGURE, bytearray(config))
                except OSError as e:
                    _configure_failed(k, fd, path, image, bfd, config, want, e)
            else:
                _set_fd(k, fd, path, image, bfd, config, want)
            # Ours now: the bind succeeded under our lock. Any failure below undoes it.
            try:
                # T4: read back what the kernel applied. lo_number, lo_device and lo_inode
                # also prove the fd is the device we bound, to the image we opened.
                buf = bytearray(_INFO_SIZE)
                k.ioctl(fd, abi.LOOP_GET_STATUS64, buf)
                dev, ino, _rdev, offset, limit, lo_number, _et, _eks, flags, name = (
                    _INFO_HEAD.unpack_from(buf)
                )
                bdev, bino, w_offset, w_limit, w_flags, w_bs, baseline, bpath, fallback = want
                must = w_flags & ~_DIO
                if (
                    dev != bdev
                    or ino != bino
                    or offset != w_offset
                    or limit != w_limit
                    or flags & must != must
                    or lo_number != number
                ):
                    raise _not_applied(k, fd, path, image, number, buf, want)
                if w_bs:
                    bs = get_block_size(k, fd)
                    if bs != w_bs:
                        raise _not_applied(k, fd, path, image, number, buf, want)
                else:
                    bs = 0  # read on first use
                if w_flags & _DIO and not flags & _DIO:
                    _warn_no_direct_io(path, image)
                seq = bytearray(8)
                try:
                    k.ioctl(fd, abi.BLKGETDISKSEQ, seq)
                    diskseq: int | None = int.from_bytes(seq, "little")
                except OSError:
                    diskseq = None  # before 5.15
            except BaseException:
                _clear_quietly(k, fd)
                raise
        finally:
            k.flock(fd, abi.LOCK_UN)
    except BaseException:
        k.close(fd)
        raise
    return new_handle(
        k,
        fd,
        number,
        path,
        dev,
        ino,
        offset,
        limit,
        flags,
        name,
        bpath,
        diskseq,
        bs,
        fallback,
        # a read-only device has nothing to write back: no baseline needed (device._flush)
        sysfs.write_baseline(k, stat_path) if baseline and not flags & _RO else None,
    )


def _clear_quietly(k: Kernel, fd: int) -> None:
    with contextlib.suppress(OSError):
        k.ioctl(fd, abi.LOOP_CLR_FD)


#: Whether LOOP_CONFIGURE works here (None: not tried yet). A kernel that refused it once
#: (< 5.8) refuses it always; the model kernel always has it.
_configure_supported: dict[str, bool] = {}


def _configure_failed(
    k: Kernel,
    fd: int,
    path: str,
    image: str,
    bfd: int,
    config: bytes,
    want: _Wanted,
    e: OSError,
) -> None:
    """The first LOOP_CONFIGURE failed with ``e``: retry EAGAIN (T5), fall back to SET_FD +
    SET_STATUS64 where the kernel lacks it (T3); returns once bound, raises otherwise."""
    if e.errno == errno.EAGAIN:
        buf = bytearray(config)
        try:
            retry_eagain(k, lambda: k.ioctl(fd, abi.LOOP_CONFIGURE, buf))
            return
        except OSError as again:
            e = again
    if e.errno == errno.EBUSY:
        raise _TryAnother("already bound (EBUSY)")
    if e.errno not in (errno.EINVAL, errno.ENOTTY, errno.ENOSYS):
        raise _configure_error(path, image, e)
    if e.errno != errno.EINVAL:  # EINVAL may be about the configuration itself
        _configure_supported[k.name] = False
    _set_fd(k, fd, path, image, bfd, config, want)


def _set_fd(
    k: Kernel, fd: int, path: str, image: str, bfd: int, config: bytes, want: _Wanted
) -> None:
    """T3 fallback: kernels without LOOP_CONFIGURE (< 5.8)."""
    try:
        k.ioctl(fd, abi.LOOP_SET_FD, bfd)
    except OSError as e:
        if e.errno == errno.EBUSY:
            raise _TryAnother("already bound (EBUSY)") from None
        raise _configure_error(path, image, e) from None
    try:
        info = abi.LoopConfig.unpack(config).info
        info.lo_flags &= abi.LOOP_SET_STATUS_SETTABLE_FLAGS
        raw = info.pack()
        retry_eagain(k, lambda: k.ioctl(fd, abi.LOOP_SET_STATUS64, raw))
        if want[4] & abi.LO_FLAGS_DIRECT_IO:
            k.ioctl(fd, abi.LOOP_SET_DIRECT_IO, 1)
        block_size = want[5]
        if block_size:
            retry_eagain(k, lambda: k.ioctl(fd, abi.LOOP_SET_BLOCK_SIZE, block_size))
    except OSError as e:
        _clear_quietly(k, fd)  # we bound it with SET_FD a moment ago
        raise _configure_error(path, image, e) from None


def _configure_error(path: str, image: str, e: OSError) -> LoopdevError:
    if e.errno == errno.EPERM:
        return NotPermittedError(f"{path}: not permitted to attach {image}", hint="run as root")
    if e.errno == errno.EAGAIN:
        return BusyError(
            f"{path}: the kernel kept answering EAGAIN while attaching {image} "
            f"({MAX_EAGAIN_RETRIES} retries)",
            hint="retry later",
        )
    if e.errno == errno.EINVAL:
        return InvalidArgumentError(
            f"{path}: the kernel refused to attach {image}: {why(e)}",
            hint="check offset, sizelimit and block size (a loop device cannot back itself)",
        )
    return LoopdevError(f"{path}: attaching {image} failed: {why(e)}")


def _not_applied(
    k: Kernel, fd: int, path: str, image: str, number: int, info: bytearray, want: _Wanted
) -> LoopdevError:
    """T4 failed: what the kernel applied (``info``, LOOP_GET_STATUS64) is not what we asked."""
    dev, ino, _rdev, offset, limit, lo_number, _et, _eks, flags, _name = _INFO_HEAD.unpack_from(
        info
    )
    bdev, bino, w_offset, w_limit, w_flags, w_bs, _, _, _ = want
    must = w_flags & ~_DIO
    problems = []
    if (dev, ino) != (bdev, bino):
        problems.append(f"backing file differs (was {image} replaced while attaching?)")
    if lo_number != number:
        problems.append(f"loop{lo_number} answered instead of loop{number}")
    if offset != w_offset:
        problems.append(f"offset {offset} instead of {w_offset}")
    if limit != w_limit:
        problems.append(f"sizelimit {limit} instead of {w_limit}")
    if flags & must != must:
        problems.append(f"flags {flags:#x} lack {must & ~flags:#x}")
    if w_bs:
        actual_bs = get_block_size(k, fd)
        if actual_bs != w_bs:
            problems.append(f"block size {actual_bs} instead of {w_bs}")
    return LoopdevError(
        f"{path}: the kernel did not apply the configuration for {image}: " + "; ".join(problems),
        hint="this kernel may not support these options",
    )


def _warn_no_direct_io(path: str, image: str) -> None:
    msg = f"{path}: direct I/O not supported for {image}; using buffered I/O"
    warnings.warn(msg, UserWarning, stacklevel=6)
    log.warning(msg)


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
