"""The Linux loop and block ioctl ABI: request numbers, flags and structs.

One definition for both sides of the port: the library packs these bytes and the real kernel
(or the model's loop driver) unpacks them with the same code. Layouts follow
``include/uapi/linux/loop.h`` and ``include/uapi/linux/fs.h``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# --- include/uapi/linux/loop.h -------------------------------------------------------------
LOOP_SET_FD = 0x4C00
LOOP_CLR_FD = 0x4C01
LOOP_SET_STATUS = 0x4C02
LOOP_GET_STATUS = 0x4C03
LOOP_SET_STATUS64 = 0x4C04
LOOP_GET_STATUS64 = 0x4C05
LOOP_CHANGE_FD = 0x4C06
LOOP_SET_CAPACITY = 0x4C07
LOOP_SET_DIRECT_IO = 0x4C08
LOOP_SET_BLOCK_SIZE = 0x4C09
LOOP_CONFIGURE = 0x4C0A

LOOP_CTL_ADD = 0x4C80
LOOP_CTL_REMOVE = 0x4C81
LOOP_CTL_GET_FREE = 0x4C82

LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4
LO_FLAGS_PARTSCAN = 8
LO_FLAGS_DIRECT_IO = 16

#: Flags LOOP_SET_STATUS64 may change on a bound device (LOOP_SET_STATUS_SETTABLE_FLAGS).
LOOP_SET_STATUS_SETTABLE_FLAGS = LO_FLAGS_AUTOCLEAR | LO_FLAGS_PARTSCAN
#: Flags LOOP_SET_STATUS64 may clear (LOOP_SET_STATUS_CLEARABLE_FLAGS).
LOOP_SET_STATUS_CLEARABLE_FLAGS = LO_FLAGS_AUTOCLEAR
#: Flags LOOP_CONFIGURE accepts (LOOP_CONFIGURE_SETTABLE_FLAGS).
LOOP_CONFIGURE_SETTABLE_FLAGS = (
    LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR | LO_FLAGS_PARTSCAN | LO_FLAGS_DIRECT_IO
)

LO_NAME_SIZE = 64
LO_KEY_SIZE = 32

LOOP_MAJOR = 7
BLOCK_EXT_MAJOR = 259  # partitions of loop devices beyond the minor range get this major
SECTOR_SIZE = 512

# --- include/uapi/linux/fs.h (block ioctls) -------------------------------------------------
BLKROSET = 0x125D
BLKROGET = 0x125E
BLKRRPART = 0x125F
BLKGETSIZE = 0x1260
BLKFLSBUF = 0x1261
BLKSSZGET = 0x1268
BLKPG = 0x1269
BLKGETSIZE64 = 0x80081272
BLKGETDISKSEQ = 0x80081280

# include/uapi/linux/blkpg.h
BLKPG_ADD_PARTITION = 1
BLKPG_DEL_PARTITION = 2
BLKPG_RESIZE_PARTITION = 3

# --- mount(2) / umount2(2) / flock(2) ------------------------------------------------------
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_SILENT = 32768
MS_RELATIME = 1 << 21

MNT_FORCE = 1
MNT_DETACH = 2
MNT_EXPIRE = 4
UMOUNT_NOFOLLOW = 8

LOCK_SH = 1
LOCK_EX = 2
LOCK_NB = 4
LOCK_UN = 8

# open(2) flags (x86_64 / generic values)
O_RDONLY = 0o0
O_WRONLY = 0o1
O_RDWR = 0o2
O_CREAT = 0o100
O_EXCL = 0o200
O_NOCTTY = 0o400
O_TRUNC = 0o1000
O_APPEND = 0o2000
O_NONBLOCK = 0o4000
O_DIRECT = 0o40000
O_DIRECTORY = 0o200000
O_NOFOLLOW = 0o400000
O_CLOEXEC = 0o2000000
O_PATH = 0o10000000

# stat(2) mode bits
S_IFMT = 0o170000
S_IFSOCK = 0o140000
S_IFLNK = 0o120000
S_IFREG = 0o100000
S_IFBLK = 0o060000
S_IFDIR = 0o040000
S_IFCHR = 0o020000
S_IFIFO = 0o010000


def major(dev: int) -> int:
    """Major number of a ``dev_t`` (glibc's ``gnu_dev_major``)."""
    return ((dev >> 8) & 0xFFF) | ((dev >> 32) & ~0xFFF)


def minor(dev: int) -> int:
    """Minor number of a ``dev_t`` (glibc's ``gnu_dev_minor``)."""
    return (dev & 0xFF) | ((dev >> 12) & ~0xFF)


def makedev(major_: int, minor_: int) -> int:
    """A ``dev_t`` from major and minor (glibc's ``gnu_dev_makedev``)."""
    return (
        ((major_ & 0xFFF) << 8)
        | ((major_ & ~0xFFF) << 32)
        | (minor_ & 0xFF)
        | ((minor_ & ~0xFF) << 12)
    )


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


def u64_buffer() -> bytearray:
    """An 8-byte buffer for ioctls that return a ``__u64`` (BLKGETSIZE64, BLKGETDISKSEQ)."""
    return bytearray(8)


def read_u64(buf: bytes | bytearray) -> int:
    return int(struct.unpack_from("=Q", buf)[0])


def write_u64(buf: bytearray, value: int) -> None:
    struct.pack_into("=Q", buf, 0, value)
