"""Attaching: /dev/loop-control, locks, bounded jittered retry, LOOP_CONFIGURE + fallback.

The order of operations (the T-numbers name each step's reason): open and check the image; lock /dev/loop-control
(T8) and ask for a free device (or LOOP_CTL_ADD a named one, T25); open the device, check it
is a loop block device (T26), lock it on a separate fd so udev probes the finished device once
(T6/T7), re-check it is unbound (T9), LOOP_CONFIGURE (T3, fallback SET_FD + SET_STATUS64),
retry EAGAIN (T5), read back what was applied (T4); on EBUSY try another device with growing
random jitter (T1/T2), bounded (T27). A device whose configure failed is never cleared (T13).
"""

from __future__ import annotations

import errno
import struct

from loopdev import abi, sysfs
from loopdev._port import fspath, resolve
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
    why,
)
from loopdev.loopctl import open_control
from loopdev.notices import DirectIOWarning, ReadOnlyFallbackWarning, SizeWarning, warn
from loopdev.settle import MAX_EAGAIN_RETRIES, Backoff, retry_eagain
from loopdev.status import _INFO_HEAD, get_block_size

TYPE_CHECKING = False
if TYPE_CHECKING:
    import os
    from collections.abc import Callable
    from typing import TypeVar

    from loopdev.kernel import Kernel

    T = TypeVar("T")

__all__ = ["ReadOnlyFallbackWarning", "attach", "attach_image", "open_control"]

#: EBUSY/ENXIO on a fresh device: try another one, at most this many times (systemd: 64).
MAX_DEVICE_ATTEMPTS = 64
#: A fresh node missing or not yet accessible (udev creating it): retry for this long.
FRESH_NODE_TIMEOUT = 1.0
PARTITION_TIMEOUT = 5.0

# struct loop_config (abi.LoopConfig) in one pack: fd, block_size, then struct loop_info64
# (device, inode, rdevice, offset, sizelimit, number, encrypt type, key size, flags, file name,
# crypt name, key, init[2]) and __reserved[8]. tests/unit checks it against abi.LoopConfig.
_LOOP_CONFIG = struct.Struct("=II5Q4I64s64s32s2Q64x")


class _TryAnother(Exception):
    """This device is taken (bound meanwhile, EBUSY, going away): try another one."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def attach(
    image: str | os.PathLike[str],
    *,
    offset: int = 0,
    sizelimit: int = 0,
    read_only: bool = False,
    partscan: bool = False,
    direct_io: bool = False,
    block_size: int | None = None,
    autoclear: bool = False,
    loop_ref: str | None = None,
    device: str | os.PathLike[str] | int | None = None,
    wait_partitions: bool | None = None,
    kernel: Kernel | None = None,
) -> LoopDevice:
    """Attach ``image`` to a free loop device (or ``device``) and return a handle holding it.

    A read-write request on a write-protected image falls back to read-only with a
    :class:`ReadOnlyFallbackWarning` and ``read_only_fallback=True`` on the handle. An
    offset or size limit that leaves a device of less than 512 bytes, or not a whole number
    of 512-byte sectors, is accepted (as losetup does) with a :class:`SizeWarning`.
    ``loop_ref`` is stored in lo_file_name, as util-linux 2.39+ ``losetup --loop-ref`` does.
    With ``partscan`` the call returns once the partitions the kernel found have their
    /dev nodes (``wait_partitions=False`` returns at once).
    """
    k = resolve(kernel)
    if wait_partitions is None:
        wait_partitions = partscan
    flags = (
        (abi.LO_FLAGS_AUTOCLEAR if autoclear else 0)
        | (abi.LO_FLAGS_PARTSCAN if partscan else 0)
        | (abi.LO_FLAGS_DIRECT_IO if direct_io else 0)
    )
    dev, _ = attach_image(
        k,
        fspath(image),
        offset=offset,
        sizelimit=sizelimit,
        read_only=read_only,
        flags=flags,
        block_size=block_size,
        loop_ref=loop_ref,
        device=device if device is None or isinstance(device, int) else fspath(device),
    )
    if wait_partitions:
        try:
            wait_partition_nodes(k, dev.number)
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
    bfd, bpath, bdev, bino, size, refused, is_file = _open_image(k, image, read_only)
    fallback = refused is not None
    try:
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
        if refused is not None:
            warn(
                f"{image}: write-protected ({refused}): {dev.path} is attached read-only",
                ReadOnlyFallbackWarning,
                stacklevel=3,
            )
        if (offset or sizelimit or size % abi.SECTOR_SIZE or size < abi.SECTOR_SIZE) and (
            is_file or sizelimit
        ):
            _warn_size(image, size, offset, sizelimit)
        if inspect is None:
            return dev, None
        # After LOOP_CONFIGURE, not before: a read before it can dirty the image's inode
        # (relatime atime update) that the fsync inside LOOP_CONFIGURE (6.18) then commits.
        try:
            return dev, inspect(k, bfd, offset, device_bytes(size, offset, sizelimit))
        except BaseException:
            try:  # noqa: SIM105 - contextlib would cost start-up time
                dev.detach(wait=True)
            except LoopdevError:
                pass  # the first error is the one to report
            raise
    finally:
        k.close(bfd)


#: What the caller asked for, checked against what the kernel applied (T4), and what the
#: handle needs from the image: (backing st_dev, st_ino, offset, sizelimit, LO_FLAGS_* as
#: passed to the kernel, block size (0: the kernel's default), write_baseline, canonical
#: image path, read-only fallback). A tuple: attach makes one per call.
_Wanted = tuple[int, int, int, int, int, int, bool, str, bool]

_SECTOR_MASK = ~(abi.SECTOR_SIZE - 1)


def device_bytes(size: int, offset: int, sizelimit: int) -> int:
    """The size of a loop device over ``size`` bytes of image from ``offset``, at most
    ``sizelimit`` (0: no limit), as the kernel computes it (whole 512-byte sectors)."""
    length = max(0, size - offset)
    if sizelimit and sizelimit < length:
        length = sizelimit
    return length & _SECTOR_MASK


def _warn_size(image: str, size: int, offset: int, sizelimit: int) -> None:
    """losetup's warnings for a device that is tiny or not whole sectors (it attaches such
    devices all the same), and one for an offset past the end of the image (which losetup's
    unsigned arithmetic misses)."""
    if not sizelimit and offset > size:
        warn(
            f"{image}: Warning: offset {offset} is past the end of the file "
            f"({size} bytes); the loop device is empty.",
            SizeWarning,
            stacklevel=4,
        )
        return
    length = sizelimit or size - offset
    if length < abi.SECTOR_SIZE:
        warn(
            f"{image}: Warning: file is smaller than 512 bytes; the loop device may be "
            "useless or invisible for system tools.",
            SizeWarning,
            stacklevel=4,
        )
    elif length % abi.SECTOR_SIZE:
        warn(
            f"{image}: Warning: file does not fit into a 512-byte sector; the end of the "
            "file will be ignored.",
            SizeWarning,
            stacklevel=4,
        )


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
    if block_size:
        check_block_size(block_size)


_KINDS = {
    abi.S_IFDIR: "a directory",
    abi.S_IFCHR: "a character device",
    abi.S_IFIFO: "a FIFO",
    abi.S_IFSOCK: "a socket",
}


def _open_image(
    k: Kernel, image: str, read_only: bool
) -> tuple[int, str, int, int, int, str | None, bool]:
    """Open the image: (fd, canonical path, st_dev, st_ino, size in bytes, read-only
    fallback: why read-write was refused, or None; a regular file).

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
            errno=errno.EISDIR if kind == abi.S_IFDIR else None,
            filename=image,
        )
    refused: str | None = None
    try:
        fd = k.open(image, abi.O_RDONLY if read_only else abi.O_RDWR)
    except OSError as e:
        fd = _open_read_only_instead(k, image, read_only, e)
        refused = why(e)
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
        return fd, path, st.dev, st.ino, size, refused, kind == abi.S_IFREG
    except BaseException:
        k.close(fd)
        raise


def _stat_error(image: str, e: OSError) -> ImageError:
    if e.errno == errno.ENOENT:
        return ImageError(
            f"{image}: no such file", hint="check the image path", errno=e.errno, filename=image
        )
    return ImageError(f"{image}: cannot access it: {why(e)}", errno=e.errno, filename=image)


def _open_read_only_instead(k: Kernel, image: str, read_only: bool, e: OSError) -> int:
    """A read-write open failed with ``e``: open read-only if the image is write-protected
    (with a :class:`ReadOnlyFallbackWarning`), else raise."""
    if read_only or e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ETXTBSY):
        raise _image_open_error(image, e) from None
    try:
        return k.open(image, abi.O_RDONLY)
    except OSError as e2:
        raise _image_open_error(image, e2) from None


def _image_open_error(image: str, e: OSError) -> ImageError:
    if e.errno in (errno.EACCES, errno.EPERM):
        return ImageError(
            f"{image}: cannot read it: permission denied",
            hint="check the file's permissions (or run as root)",
            errno=e.errno,
            filename=image,
        )
    return ImageError(f"{image}: cannot open it: {why(e)}", errno=e.errno, filename=image)


# --- allocation ---------------------------------------------------------------------------


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
                    filename=image,
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
                    filename=image,
                )
    finally:
        k.close(ctl)  # also drops the lock


def _attach_named(
    k: Kernel, device: str | int, image: str, bfd: int, config: bytes, want: _Wanted
) -> LoopDevice:
    """Attach to the device the caller named (creating /dev/loopN if it does not exist)."""
    path = device if isinstance(device, str) else f"/dev/loop{device}"
    ctl = open_control(k)
    try:
        k.flock(ctl, abi.LOCK_EX)
        try:
            st = k.stat(path)
        except OSError as e:
            digits = path.removeprefix("/dev/loop")
            if e.errno != errno.ENOENT or not path.startswith("/dev/loop") or not digits.isdigit():
                raise NotALoopDeviceError(
                    f"{path}: {why(e)}",
                    hint="give /dev/loopN or omit the device",
                    errno=e.errno,
                    device=path,
                ) from None
            number = int(digits)
            try:
                k.ioctl(ctl, abi.LOOP_CTL_ADD, number)  # T25
            except OSError as e2:
                if e2.errno != errno.EEXIST:
                    raise LoopdevError(
                        f"cannot create {path}: {why(e2)}", errno=e2.errno, device=path
                    ) from None
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
                device=path,
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
                raise NotPermittedError(
                    f"{path}: permission denied", hint="run as root", errno=e.errno, device=path
                )
            raise LoopdevError(
                f"cannot open {path}: {why(e)} ({backoff.describe()})", errno=e.errno, device=path
            )
        try:
            return k.open(path, abi.O_RDWR)
        except OSError as again:
            e = again


_RO = abi.LO_FLAGS_READ_ONLY
_DIO = abi.LO_FLAGS_DIRECT_IO
_INFO_SIZE = abi.LOOP_INFO64_SIZE


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
    try:
        k.ioctl(fd, abi.LOOP_CLR_FD)
    except OSError:
        return  # gone already: nothing to undo


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
    if e.errno in (errno.EPERM, errno.EACCES):
        return NotPermittedError(
            f"{path}: not permitted to attach {image}",
            hint="run as root",
            errno=e.errno,
            filename=image,
            device=path,
        )
    if e.errno == errno.EAGAIN:
        return BusyError(
            f"{path}: the kernel kept answering EAGAIN while attaching {image} "
            f"({MAX_EAGAIN_RETRIES} retries)",
            hint="retry later",
            filename=image,
            device=path,
        )
    if e.errno == errno.EINVAL:
        return InvalidArgumentError(
            f"{path}: the kernel refused to attach {image}: {why(e)}",
            hint="check offset, sizelimit and block size (a loop device cannot back itself)",
            filename=image,
            device=path,
        )
    return LoopdevError(
        f"{path}: attaching {image} failed: {why(e)}", errno=e.errno, filename=image, device=path
    )


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
        filename=image,
        device=path,
    )


def _warn_no_direct_io(path: str, image: str) -> None:
    msg = f"{path}: direct I/O not supported for {image}; using buffered I/O"
    warn(msg, DirectIOWarning, stacklevel=6)


def wait_partition_nodes(k: Kernel, number: int) -> list[str]:
    """Wait until the partitions the kernel found on loopN (sysfs ``loopNpM``) have their
    /dev nodes (devtmpfs makes them; a udev-managed /dev may lag); returns their paths."""
    backoff: Backoff | None = None
    while True:
        names = sysfs.partitions(k, number)
        missing = []
        for name in names:
            try:
                if not k.stat(f"/dev/{name}").is_blk:
                    missing.append(name)
            except OSError:
                missing.append(name)
        if not missing:
            return [f"/dev/{name}" for name in names]
        if backoff is None:
            backoff = Backoff(k, timeout=PARTITION_TIMEOUT, base=0.0005, cap=0.05)
        if not backoff.wait():
            path = f"/dev/loop{number}"
            raise LoopdevError(
                f"{path}: partition nodes {', '.join(missing)} did not appear "
                f"({backoff.describe()})",
                hint="is devtmpfs mounted on /dev?",
                device=path,
            )
