"""Filesystem image layouts: where each filesystem keeps its superblock magic.

One table for the lab's image creators (``mkfs.*``-like port programs) and its blkid-like
probe. The offsets and values are the real on-disk ones:

* ext2/3/4: ``struct ext4_super_block`` at byte 1024; ``s_magic`` (le16 0xEF53) at 1024+56.
  ext3 adds ``COMPAT_HAS_JOURNAL``, ext4 ``INCOMPAT_EXTENTS`` (``s_feature_*`` at 1024+92..100).
* xfs: ``struct xfs_dsb`` at 0; ``sb_magicnum`` b"XFSB", big-endian fields.
* squashfs: ``struct squashfs_super_block`` at 0; ``s_magic`` b"hsqs" (le32 0x73717368).
* erofs: ``struct erofs_super_block`` at 1024; ``magic`` le32 0xE0F5E1E2.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

EXT_SUPER_OFFSET = 1024
EXT_MAGIC = 0xEF53
EXT3_FEATURE_COMPAT_HAS_JOURNAL = 0x4
EXT4_FEATURE_INCOMPAT_FILETYPE = 0x2
EXT4_FEATURE_INCOMPAT_EXTENTS = 0x40
XFS_MAGIC = b"XFSB"
SQUASHFS_MAGIC = b"hsqs"
EROFS_SUPER_OFFSET = 1024
EROFS_MAGIC = 0xE0F5E1E2

#: How many leading bytes a probe must read to see every magic in :data:`MAGICS`.
PROBE_SIZE = 4096


@dataclass(frozen=True)
class Magic:
    """A filesystem's identifying bytes at an absolute byte offset."""

    fstype: str
    offset: int
    value: bytes


#: Probe order: the more specific first (erofs and ext share the 1024 area, not the bytes).
MAGICS: tuple[Magic, ...] = (
    Magic("xfs", 0, XFS_MAGIC),
    Magic("squashfs", 0, SQUASHFS_MAGIC),
    Magic("erofs", EROFS_SUPER_OFFSET, struct.pack("<I", EROFS_MAGIC)),
    Magic("ext", EXT_SUPER_OFFSET + 56, struct.pack("<H", EXT_MAGIC)),
)

#: The filesystem types the image creators make.
FSTYPES = ("ext2", "ext3", "ext4", "xfs", "squashfs", "erofs")


def _ext_superblock(fstype: str, size: int) -> bytes:
    """The first 1024 bytes of an ext2/3/4 superblock (1 KiB blocks)."""
    sb = bytearray(1024)
    blocks = size // 1024
    struct.pack_into(
        "<II", sb, 0, max(blocks // 8, 16), blocks
    )  # s_inodes_count, s_blocks_count_lo
    struct.pack_into("<I", sb, 20, 1)  # s_first_data_block (1 KiB blocks)
    struct.pack_into("<I", sb, 24, 0)  # s_log_block_size: 1024 << 0
    struct.pack_into("<H", sb, 56, EXT_MAGIC)  # s_magic
    struct.pack_into("<H", sb, 58, 1)  # s_state: cleanly unmounted
    struct.pack_into("<I", sb, 76, 1)  # s_rev_level: EXT2_DYNAMIC_REV
    compat = EXT3_FEATURE_COMPAT_HAS_JOURNAL if fstype in ("ext3", "ext4") else 0
    incompat = EXT4_FEATURE_INCOMPAT_FILETYPE
    if fstype == "ext4":
        incompat |= EXT4_FEATURE_INCOMPAT_EXTENTS
    struct.pack_into("<III", sb, 92, compat, incompat, 0)  # s_feature_{compat,incompat,ro_compat}
    return bytes(sb)


def superblock(fstype: str, size: int) -> list[tuple[int, bytes]]:
    """The (offset, bytes) writes that make a ``size``-byte file an image of ``fstype``."""
    if size < PROBE_SIZE:
        raise ValueError(f"an image needs at least {PROBE_SIZE} bytes, not {size}")
    if fstype in ("ext2", "ext3", "ext4"):
        return [(EXT_SUPER_OFFSET, _ext_superblock(fstype, size))]
    if fstype == "xfs":
        block = 4096
        # sb_magicnum, sb_blocksize, sb_dblocks (big-endian)
        return [(0, XFS_MAGIC + struct.pack(">IQ", block, size // block))]
    if fstype == "squashfs":
        # s_magic, inodes, mkfs_time, block_size, fragments, compression, block_log, flags,
        # no_ids, s_major, s_minor, root_inode, bytes_used
        head = SQUASHFS_MAGIC + struct.pack(
            "<IIIIHHHHHHQQ", 1, 0, 131072, 0, 1, 17, 0, 1, 4, 0, 0, size
        )
        return [(0, head)]
    if fstype == "erofs":
        # magic, checksum, feature_compat, blkszbits (4 KiB)
        return [(EROFS_SUPER_OFFSET, struct.pack("<IIIB", EROFS_MAGIC, 0, 0, 12))]
    raise ValueError(f"unknown filesystem type {fstype!r}")


def identify(head: bytes) -> str | None:
    """The filesystem whose magic the first bytes of a device carry (blkid's superblock
    probe), or None. ext2/3/4 are told apart by their feature flags, as blkid does."""
    for m in MAGICS:
        if head[m.offset : m.offset + len(m.value)] == m.value:
            if m.fstype != "ext":
                return m.fstype
            compat, incompat = struct.unpack_from("<II", head, EXT_SUPER_OFFSET + 92)
            if incompat & EXT4_FEATURE_INCOMPAT_EXTENTS:
                return "ext4"
            return "ext3" if compat & EXT3_FEATURE_COMPAT_HAS_JOURNAL else "ext2"
    return None
