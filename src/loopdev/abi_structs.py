"""The ioctl structs of :mod:`loopdev.abi`: ``struct loop_info64``, ``struct loop_config`` and
``struct blkpg_partition``/``blkpg_ioctl_arg``, packed and unpacked with the same code on both
sides of the port. Reach them as ``abi.LoopInfo64`` etc.; this module is loaded on first use.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from loopdev.abi import LO_KEY_SIZE, LO_NAME_SIZE


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _fixed(text: str, size: int) -> bytes:
    data = text.encode("utf-8", "surrogateescape")[: size - 1]
    return data + b"\0" * (size - len(data))


# struct loop_info64: 5xu64, 4xu32, name[64], crypt_name[64], key[32], 2xu64
_LOOP_INFO64 = struct.Struct("=QQQQQIIII64s64s32sQQ")
# struct loop_config: u32 fd, u32 block_size, struct loop_info64, u64 __reserved[8]
_LOOP_CONFIG_HEAD = struct.Struct("=II")
_LOOP_CONFIG_RESERVED = 8 * 8


@dataclass
class LoopInfo64:
    """``struct loop_info64`` as LOOP_GET_STATUS64 / LOOP_SET_STATUS64 exchange it."""

    lo_device: int = 0
    lo_inode: int = 0
    lo_rdevice: int = 0
    lo_offset: int = 0
    lo_sizelimit: int = 0
    lo_number: int = 0
    lo_encrypt_type: int = 0
    lo_encrypt_key_size: int = 0
    lo_flags: int = 0
    lo_file_name: str = ""
    lo_crypt_name: str = ""
    lo_encrypt_key: bytes = field(default=b"", repr=False)
    lo_init: tuple[int, int] = (0, 0)

    SIZE = _LOOP_INFO64.size

    def pack(self) -> bytearray:
        """The struct's bytes, ready to pass as an ioctl argument."""
        return bytearray(
            _LOOP_INFO64.pack(
                self.lo_device,
                self.lo_inode,
                self.lo_rdevice,
                self.lo_offset,
                self.lo_sizelimit,
                self.lo_number,
                self.lo_encrypt_type,
                self.lo_encrypt_key_size,
                self.lo_flags,
                _fixed(self.lo_file_name, LO_NAME_SIZE),
                _fixed(self.lo_crypt_name, LO_NAME_SIZE),
                self.lo_encrypt_key.ljust(LO_KEY_SIZE, b"\0")[:LO_KEY_SIZE],
                *self.lo_init,
            )
        )

    @classmethod
    def unpack(cls, raw: bytes | bytearray | memoryview) -> LoopInfo64:
        """Decode the struct from ioctl bytes (extra trailing bytes are ignored)."""
        f = _LOOP_INFO64.unpack_from(raw)
        return cls(
            lo_device=f[0],
            lo_inode=f[1],
            lo_rdevice=f[2],
            lo_offset=f[3],
            lo_sizelimit=f[4],
            lo_number=f[5],
            lo_encrypt_type=f[6],
            lo_encrypt_key_size=f[7],
            lo_flags=f[8],
            lo_file_name=_cstr(f[9]),
            lo_crypt_name=_cstr(f[10]),
            lo_encrypt_key=bytes(f[11]).rstrip(b"\0"),
            lo_init=(f[12], f[13]),
        )

    @staticmethod
    def buffer() -> bytearray:
        """A zeroed buffer for LOOP_GET_STATUS64 to fill."""
        return bytearray(_LOOP_INFO64.size)


@dataclass
class LoopConfig:
    """``struct loop_config`` for LOOP_CONFIGURE (5.8+)."""

    fd: int
    block_size: int = 0
    info: LoopInfo64 = field(default_factory=LoopInfo64)

    SIZE = _LOOP_CONFIG_HEAD.size + _LOOP_INFO64.size + _LOOP_CONFIG_RESERVED

    def pack(self) -> bytearray:
        return bytearray(
            _LOOP_CONFIG_HEAD.pack(self.fd, self.block_size)
            + bytes(self.info.pack())
            + b"\0" * _LOOP_CONFIG_RESERVED
        )

    @classmethod
    def unpack(cls, raw: bytes | bytearray | memoryview) -> LoopConfig:
        fd, block_size = _LOOP_CONFIG_HEAD.unpack_from(raw)
        info = LoopInfo64.unpack(bytes(raw)[_LOOP_CONFIG_HEAD.size :])
        return cls(fd=fd, block_size=block_size, info=info)


# struct blkpg_partition: long long start, length; int pno; char devname[64], volname[64]
_BLKPG_PARTITION = struct.Struct("=qqi64s64s")


@dataclass
class BlkpgPartition:
    """``struct blkpg_partition``; byte offsets and lengths, partition number ``pno``."""

    start: int
    length: int
    pno: int

    SIZE = _BLKPG_PARTITION.size

    def pack(self) -> bytes:
        return _BLKPG_PARTITION.pack(self.start, self.length, self.pno, b"", b"")

    @classmethod
    def unpack(cls, raw: bytes | bytearray) -> BlkpgPartition:
        start, length, pno, _d, _v = _BLKPG_PARTITION.unpack_from(raw)
        return cls(start, length, pno)


@dataclass
class BlkpgRequest:
    """``struct blkpg_ioctl_arg`` with its partition payload.

    The C struct carries a pointer to the payload; across the port it travels as this
    ``op`` + ``partition`` pair packed by :meth:`pack` (``op``, ``flags`` then the partition),
    and each port implementation builds the pointer form it needs.
    """

    op: int
    partition: BlkpgPartition

    _HEAD = struct.Struct("=ii")

    def pack(self) -> bytearray:
        return bytearray(self._HEAD.pack(self.op, 0) + self.partition.pack())

    @classmethod
    def unpack(cls, raw: bytes | bytearray) -> BlkpgRequest:
        op, _flags = cls._HEAD.unpack_from(raw)
        return cls(op, BlkpgPartition.unpack(bytes(raw)[cls._HEAD.size :]))
