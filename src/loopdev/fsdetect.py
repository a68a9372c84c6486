"""Filesystem detection the way mount(8) does it: read the superblock magics ourselves, else
try the kernel's block filesystems from /proc/filesystems."""

from __future__ import annotations

import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from loopdev.kernel import Kernel


#: filesystems that are read-only by design: their images are attached and mounted read-only
READ_ONLY_FILESYSTEMS = frozenset({"squashfs", "erofs", "iso9660", "cramfs", "romfs"})

# ext feature bits (fs/ext4/ext4.h) that ext2/ext3 do not have
_EXT_JOURNAL = 0x4  # compat: has_journal
_EXT4_INCOMPAT = 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x1000 | 0x2000 | 0x8000 | 0x10000
_EXT4_RO_COMPAT = 0x8 | 0x20 | 0x40 | 0x100 | 0x200 | 0x400 | 0x1000 | 0x2000
_EXT3_INCOMPAT_OK = 0x2 | 0x4  # filetype, recover


def _ext(sb: bytes) -> str | None:
    if len(sb) < 1024 + 104 or sb[1024 + 56 : 1024 + 58] != b"\x53\xef":
        return None
    compat, incompat, ro_compat = struct.unpack_from("<III", sb, 1024 + 92)
    if incompat & _EXT4_INCOMPAT or ro_compat & _EXT4_RO_COMPAT:
        return "ext4"
    if incompat & ~_EXT3_INCOMPAT_OK:
        return "ext4"
    return "ext3" if compat & _EXT_JOURNAL else "ext2"


def detect_bytes(head: bytes, btrfs_area: bytes = b"") -> str | None:
    """The filesystem whose magic ``head`` (the first 4 KiB) carries; ``btrfs_area`` is
    the 8 bytes at 0x10040."""
    if head[:4] == b"XFSB":
        return "xfs"
    if head[:4] == b"hsqs":
        return "squashfs"
    if len(head) >= 1028 and struct.unpack_from("<I", head, 1024)[0] == 0xE0F5E1E2:
        return "erofs"
    ext = _ext(head)
    if ext:
        return ext
    if btrfs_area[:8] == b"_BHRfS_M":
        return "btrfs"
    return None


def detect(kernel: Kernel, fd: int, offset: int = 0, size: int | None = None) -> str | None:
    """Detect the filesystem on the open block device or image ``fd``; with ``offset`` and
    ``size``, in the ``size`` bytes from ``offset`` (what a loop device over it shows)."""
    end = offset + size if size is not None else None

    def read(count: int, at: int) -> bytes:
        if end is not None:
            count = max(0, min(count, end - (offset + at)))
        return kernel.pread(fd, count, offset + at) if count else b""

    try:
        head = read(4096, 0)
    except OSError:
        return None
    found = detect_bytes(head)
    if found:
        return found
    try:
        return detect_bytes(head, read(8, 0x10040))
    except OSError:
        return None


def block_filesystems(kernel: Kernel) -> list[str]:
    """Filesystems in /proc/filesystems that need a block device (no ``nodev``), in order;
    fuseblk is left out (it needs a helper)."""
    try:
        text = kernel.readfile("/proc/filesystems").decode()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 1 and parts[0] != "fuseblk":
            out.append(parts[0])
    return out
