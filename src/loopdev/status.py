"""What a bound loop device reports: LOOP_GET_STATUS64 on an open fd, plus sysfs extras."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from loopdev import abi, sysfs
from loopdev.kernel import Kernel


class LoopFlags:
    """The ``lo_flags`` bits as properties, for anything with a ``flags`` attribute."""

    __slots__ = ()
    flags: int

    @property
    def read_only(self) -> bool:
        return bool(self.flags & abi.LO_FLAGS_READ_ONLY)

    @property
    def autoclear(self) -> bool:
        return bool(self.flags & abi.LO_FLAGS_AUTOCLEAR)

    @property
    def partscan(self) -> bool:
        return bool(self.flags & abi.LO_FLAGS_PARTSCAN)

    @property
    def direct_io(self) -> bool:
        return bool(self.flags & abi.LO_FLAGS_DIRECT_IO)


@dataclass(frozen=True)
class LoopStatus(LoopFlags):
    """A snapshot of one bound loop device."""

    number: int
    backing_dev: int
    backing_ino: int
    offset: int
    sizelimit: int
    flags: int
    #: lo_file_name: the loop-ref if one was set (util-linux 2.39+ semantics), else the
    #: (possibly truncated) backing file path given at attach time.
    ref: str
    backing_file: str
    diskseq: int | None = None
    block_size: int | None = None

    @property
    def path(self) -> str:
        return f"/dev/loop{self.number}"



def new_status(
    number: int,
    backing_dev: int,
    backing_ino: int,
    offset: int,
    sizelimit: int,
    flags: int,
    ref: str,
    backing_file: str,
    diskseq: int | None,
    block_size: int | None,
) -> LoopStatus:
    """A :class:`LoopStatus` built without the frozen dataclass's per-field
    ``object.__setattr__`` (about 3x cheaper; every attach and list builds some)."""
    st = LoopStatus.__new__(LoopStatus)
    st.__dict__.update(
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
    )
    return st


# The leading fields of struct loop_info64 (the rest is crypto and init data nobody reads).
_INFO_HEAD = struct.Struct("=QQQQQIIII64s")


def get_status_fields(kernel: Kernel, fd: int) -> tuple[int, int, int, int, int, str]:
    """LOOP_GET_STATUS64 on ``fd`` (ENXIO: not bound), decoded to just
    (lo_device, lo_inode, lo_offset, lo_sizelimit, lo_flags, lo_file_name)."""
    buf = bytearray(abi.LoopInfo64.SIZE)
    kernel.ioctl(fd, abi.LOOP_GET_STATUS64, buf)
    dev, ino, _rdev, offset, limit, _n, _et, _eks, flags, name = _INFO_HEAD.unpack_from(buf)
    return dev, ino, offset, limit, flags, decode_name(name)


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
    """Status of the device open as ``fd``; ``extras`` adds sysfs path, diskseq, block size."""
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
    )
