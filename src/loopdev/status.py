"""What a bound loop device reports: LOOP_GET_STATUS64 on an open fd, plus sysfs extras."""

from __future__ import annotations

from dataclasses import dataclass

from loopdev import abi, sysfs
from loopdev.kernel import Kernel


@dataclass(frozen=True)
class LoopStatus:
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
    info = get_status64(kernel, fd)
    backing = (sysfs.backing_file(kernel, number) if extras else None) or info.lo_file_name
    return LoopStatus(
        number=number,
        backing_dev=info.lo_device,
        backing_ino=info.lo_inode,
        offset=info.lo_offset,
        sizelimit=info.lo_sizelimit,
        flags=info.lo_flags,
        ref=info.lo_file_name,
        backing_file=backing,
        diskseq=get_diskseq(kernel, fd) if extras else None,
        block_size=get_block_size(kernel, fd) if extras else None,
    )
