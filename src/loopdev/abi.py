"""The Linux loop and block ioctl ABI: request numbers, flags and structs.

One definition for both sides of the port: the library packs these bytes and the real kernel
(or the model's loop driver) unpacks them with the same code. Layouts follow
``include/uapi/linux/loop.h`` and ``include/uapi/linux/fs.h``.
"""

from __future__ import annotations

import struct

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
#: sizeof(struct loop_info64): the buffer LOOP_GET_STATUS64 fills (== LoopInfo64.SIZE)
LOOP_INFO64_SIZE = 5 * 8 + 4 * 4 + 2 * LO_NAME_SIZE + LO_KEY_SIZE + 2 * 8

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


# The structs (LoopInfo64, LoopConfig, BlkpgPartition, BlkpgRequest) live in
# loopdev.abi_structs and are loaded on first use: they are dataclasses, and importing
# dataclasses costs more than a whole `loopdev -a`.
_STRUCTS = frozenset({"LoopInfo64", "LoopConfig", "BlkpgPartition", "BlkpgRequest"})

TYPE_CHECKING = False
if TYPE_CHECKING:
    from loopdev.abi_structs import BlkpgPartition as BlkpgPartition
    from loopdev.abi_structs import BlkpgRequest as BlkpgRequest
    from loopdev.abi_structs import LoopConfig as LoopConfig
    from loopdev.abi_structs import LoopInfo64 as LoopInfo64


def __getattr__(name: str) -> object:
    if name not in _STRUCTS:
        raise AttributeError(f"module 'loopdev.abi' has no attribute {name!r}")
    from loopdev import abi_structs

    value = getattr(abi_structs, name)
    globals()[name] = value
    return value


def u64_buffer() -> bytearray:
    """An 8-byte buffer for ioctls that return a ``__u64`` (BLKGETSIZE64, BLKGETDISKSEQ)."""
    return bytearray(8)


def read_u64(buf: bytes | bytearray) -> int:
    return int(struct.unpack_from("=Q", buf)[0])


def write_u64(buf: bytearray, value: int) -> None:
    struct.pack_into("=Q", buf, 0, value)
