"""What a bound loop device reports: LOOP_GET_STATUS64 on an open fd, plus sysfs extras."""

from __future__ import annotations

import struct

from loopdev import abi, sysfs
from loopdev.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from loopdev.kernel import Kernel


class LoopFlags:
    """The ``lo_flags`` bits as properties, for anything with a ``flags`` attribute."""

    __slots__ = ()
    flags: int

    @property
    def read_only(self) -> bool:
        """The device is read-only (LO_FLAGS_READ_ONLY)."""
        return bool(self.flags & abi.LO_FLAGS_READ_ONLY)

    @property
    def autoclear(self) -> bool:
        """The device is torn down at its last close (LO_FLAGS_AUTOCLEAR)."""
        return bool(self.flags & abi.LO_FLAGS_AUTOCLEAR)

    @property
    def partscan(self) -> bool:
        """The kernel scans the device for partitions (LO_FLAGS_PARTSCAN)."""
        return bool(self.flags & abi.LO_FLAGS_PARTSCAN)

    @property
    def direct_io(self) -> bool:
        """I/O to the backing file bypasses its page cache (LO_FLAGS_DIRECT_IO)."""
        return bool(self.flags & abi.LO_FLAGS_DIRECT_IO)


_STATUS_FIELDS = (
    "number",
    "backing_dev",
    "backing_ino",
    "offset",
    "sizelimit",
    "flags",
    "ref",
    "backing_file",
    "diskseq",
    "block_size",
    "rdev",
)


class LoopStatus(LoopFlags, Record):
    """A snapshot of one bound loop device (immutable, compared by value).

    ``ref`` is lo_file_name: the loop-ref if one was set (util-linux 2.39+ semantics), else
    the (possibly truncated) backing file path given at attach time. ``diskseq`` and
    ``block_size`` are None when unknown, as is ``rdev`` (the loop device's own device
    number, MAJ:MIN).
    """

    _fields = _STATUS_FIELDS

    number: int
    backing_dev: int
    backing_ino: int
    offset: int
    sizelimit: int
    flags: int
    ref: str
    backing_file: str
    diskseq: int | None
    block_size: int | None
    rdev: int | None

    def __init__(
        self,
        number: int,
        backing_dev: int,
        backing_ino: int,
        offset: int,
        sizelimit: int,
        flags: int,
        ref: str,
        backing_file: str,
        diskseq: int | None = None,
        block_size: int | None = None,
        rdev: int | None = None,
    ) -> None:
        self.__dict__.update(
            number=number,
            backing_dev=backing_dev,
            backing_ino=backing_ino,
            offset=offset,
            sizelimit=sizelimit,
            flags=flags,
            ref=ref,
            backing_file=backing_file,
            diskseq=diskseq,
            block_size=block_size,
            rdev=rdev,
        )

    def replace(self, **changes: object) -> LoopStatus:
        """A copy with some fields changed."""
        st = _new(LoopStatus)
        st.__dict__.update(self.__dict__, **changes)
        return st

    @property
    def path(self) -> str:
        """/dev/loopN."""
        return f"/dev/loop{self.number}"


_new = object.__new__


#: build a LoopStatus from positional fields (the hot paths call it so)
new_status = LoopStatus


# The leading fields of struct loop_info64 (the rest is crypto and init data nobody reads).
_INFO_HEAD = struct.Struct("=QQQQQIIII64s")


def get_status_fields(kernel: Kernel, fd: int) -> tuple[int, int, int, int, int, str]:
    """LOOP_GET_STATUS64 on ``fd`` (ENXIO: not bound), decoded to just
    (lo_device, lo_inode, lo_offset, lo_sizelimit, lo_flags, lo_file_name)."""
    buf = bytearray(abi.LOOP_INFO64_SIZE)
    kernel.ioctl(fd, abi.LOOP_GET_STATUS64, buf)
    dev, ino, _rdev, offset, limit, _n, _et, _eks, flags, name = _INFO_HEAD.unpack_from(buf)
    return dev, ino, offset, limit, flags, decode_name(name)


#: byte offset of lo_flags in struct loop_info64 (after five u64 and three u32)
_FLAGS_AT = 5 * 8 + 3 * 4
_U32 = struct.Struct("=I")


def set_autoclear(kernel: Kernel, fd: int, on: bool) -> bool:
    """Set (``on``) or clear LO_FLAGS_AUTOCLEAR of the bound device open as ``fd``: read its
    loop_info64, change that one bit and write it back with LOOP_SET_STATUS64 (retrying
    EAGAIN, T5), so offset, size limit and loop-ref stay as they are. Returns False without
    a write when the flag is already so (SET_STATUS64 freezes the queue: one RCU grace
    period). OSError from the kernel (ENXIO: not bound) propagates."""
    from loopdev.settle import retry_eagain

    buf = bytearray(abi.LOOP_INFO64_SIZE)
    kernel.ioctl(fd, abi.LOOP_GET_STATUS64, buf)
    (flags,) = _U32.unpack_from(buf, _FLAGS_AT)
    if bool(flags & abi.LO_FLAGS_AUTOCLEAR) == on:
        return False
    flags = flags | abi.LO_FLAGS_AUTOCLEAR if on else flags & ~abi.LO_FLAGS_AUTOCLEAR
    _U32.pack_into(buf, _FLAGS_AT, flags)
    retry_eagain(kernel, lambda: kernel.ioctl(fd, abi.LOOP_SET_STATUS64, buf))
    return True


def decode_name(raw: bytes) -> str:
    """lo_file_name (NUL-padded bytes) as text."""
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def get_status64(kernel: Kernel, fd: int) -> abi.LoopInfo64:
    """LOOP_GET_STATUS64 on ``fd`` (ENXIO: not bound)."""
    buf = abi.LoopInfo64.buffer()
    kernel.ioctl(fd, abi.LOOP_GET_STATUS64, buf)
    return abi.LoopInfo64.unpack(buf)


def get_diskseq(kernel: Kernel, fd: int) -> int | None:
    buf = abi.u64_buffer()
    try:
        kernel.ioctl(fd, abi.BLKGETDISKSEQ, buf)
    except OSError:
        return None
    return abi.read_u64(buf)


def get_block_size(kernel: Kernel, fd: int) -> int | None:
    buf = bytearray(4)
    try:
        kernel.ioctl(fd, abi.BLKSSZGET, buf)
    except OSError:
        return None
    return int.from_bytes(buf, "little")


def read_status(kernel: Kernel, fd: int, number: int, *, extras: bool = True) -> LoopStatus:
    """Status of the device open as ``fd``; ``extras`` adds sysfs path, diskseq, block size
    and device number."""
    dev, ino, offset, sizelimit, flags, ref = get_status_fields(kernel, fd)
    backing = (sysfs.backing_file(kernel, number) if extras else None) or ref
    return new_status(
        number,
        dev,
        ino,
        offset,
        sizelimit,
        flags,
        ref,
        backing,
        get_diskseq(kernel, fd) if extras else None,
        get_block_size(kernel, fd) if extras else None,
        sysfs.rdev(kernel, number) if extras else None,
    )
