"""Filesystem types of the model and mount(2) / umount2(2).

Block filesystems (ext2/3/4, xfs, squashfs, erofs, btrfs) are recognised by their real
superblock magic at its real offset, read through the block layer at mount time
(``sb_bread`` → ``submit_bio`` → the driver's ``queue_rq``): a device that is detached or
being torn down fails the read with EIO and the mount fails. The files of a mounted model
filesystem live in memory, kept on the machine under the device's media identity, so a later
mount of the same image sees them again.

Flow as in fs/super.c and fs/namespace.c: ``get_tree_bdev`` opens the device exclusively with
the filesystem type as holder (EBUSY if someone else claims it), reuses an existing superblock
of that device (``sget``), else ``fill_super``; ``do_umount`` refuses (EBUSY) while files are
open on the mount or mounts sit below it, unless MNT_DETACH; the last ``mntput`` shuts the
superblock down through task_work (``__cleanup_mnt`` → ``deactivate_super`` →
``kill_block_super`` → ``blkdev_put``).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from loopdev import abi
from loopdev.sim.sched import kfunc, point
from loopdev.sim.vfs import (
    FMODE_EXCL,
    FMODE_READ,
    FMODE_WRITE,
    Inode,
    Mount,
    SuperBlock,
    Vfs,
    err,
    mntput,
)

if TYPE_CHECKING:
    from loopdev.sim.block import BlockDevice
    from loopdev.sim.machine import Machine

#: how many bytes fill_super reads from the start of the device
SUPER_READ = 4096


class FsType:
    """``struct file_system_type``."""

    name = ""
    requires_dev = False
    read_only = False
    #: (offset, magic bytes) pairs, any of which identifies the filesystem
    magics: tuple[tuple[int, bytes], ...] = ()
    #: bytes to read at mount (covers every magic)
    read_size = SUPER_READ
    #: what fill_super returns when the superblock cannot be read (the device is shorter than
    #: the superblock: "attempt to access beyond end of device", or the read failed), as a
    #: 0-byte loop device shows on a real kernel: squashfs, xfs, ext2/3/4 give EIO ("can't
    #: read superblock"), erofs and btrfs EINVAL ("wrong fs type, bad option, bad superblock").
    unreadable_errno = errno.EIO

    def __init__(self, machine: Machine) -> None:
        self.machine = machine

    def __repr__(self) -> str:
        return f"<fstype {self.name}>"

    def recognise(self, raw: bytes) -> bool:
        return any(raw[off : off + len(m)] == m for off, m in self.magics)

    @kfunc
    def kill_sb(self, sb: SuperBlock) -> None:
        """``kill_anon_super`` for pseudo filesystems."""
        return None


class BlockFsType(FsType):
    """A block filesystem: ``get_tree_bdev`` + ``kill_block_super``."""

    requires_dev = True

    @kfunc
    def get_tree_bdev(self, source: str, flags: int) -> SuperBlock:
        vfs = self.machine.vfs
        block = self.machine.block
        _mnt, inode, _canon = vfs.walk(source)  # lookup_bdev
        if not inode.is_blk():
            raise err(errno.ENOTBLK, source)
        rdonly = bool(flags & abi.MS_RDONLY) or self.read_only
        mode = FMODE_READ | FMODE_EXCL | (0 if rdonly else FMODE_WRITE)
        bdev = block.blkdev_get_by_dev(inode.rdev, mode, self)
        try:
            if not rdonly and block.bdev_read_only(bdev):
                raise err(errno.EACCES, f"{source} is write-protected")
            existing = self.machine.super_blocks.get(bdev.bd_dev)
            if existing is not None and existing.s_type is self:  # sget: reuse
                point("atomic", "s_active")
                existing.s_active += 1
                block.blkdev_put(bdev, mode, self)
                return existing
            if existing is not None:
                raise err(errno.EBUSY, source)
            sb = SuperBlock(self.name, bdev.bd_dev, bdev=bdev, fs=self, rdonly=rdonly)
            self.fill_super(sb, bdev, mode)
        except BaseException:
            block.blkdev_put(bdev, mode, self)
            raise
        self.machine.super_blocks[bdev.bd_dev] = sb
        return sb

    @kfunc
    def fill_super(self, sb: SuperBlock, bdev: BlockDevice, mode: int) -> None:
        """Read the superblock through the block layer and check the magic."""
        raw = self.machine.block.bdev_read(bdev, 0, self.read_size)  # EIO: a failed read
        if len(raw) < self.read_size:  # sb_bread beyond the end of the device
            raise err(self.unreadable_errno, f"{self.name}: unable to read superblock")
        if not self.recognise(raw):
            raise err(errno.EINVAL, f"{self.name}: no valid superblock")
        sb.mode_opened = mode
        key = (bdev.bd_disk.media_key(), raw[: self.read_size])
        tree = self.machine.fs_store.get(key)
        if tree is not None:
            sb.s_root = tree
            _reparent(tree, sb)
        else:
            self.machine.fs_store[key] = sb.s_root
        sb.store_key = key

    @kfunc
    def kill_sb(self, sb: SuperBlock) -> None:
        """``kill_block_super``: shut the fs down and release the device."""
        bdev = sb.s_bdev
        assert bdev is not None
        self.machine.super_blocks.pop(bdev.bd_dev, None)
        self.machine.block.blkdev_put(bdev, sb.mode_opened, self)


def _reparent(root: Inode, sb: SuperBlock) -> None:
    """A remounted tree belongs to the new superblock (st_dev follows the device)."""
    stack = [root]
    while stack:
        node = stack.pop()
        node.i_sb = sb
        if node.children:
            stack.extend(node.children.values())


def _magic(value: int, size: int) -> bytes:
    return value.to_bytes(size, "little")


class Ext2(BlockFsType):
    name = "ext2"
    magics = ((1080, _magic(0xEF53, 2)),)


class Ext3(Ext2):
    name = "ext3"


class Ext4(Ext2):
    name = "ext4"


class Xfs(BlockFsType):
    name = "xfs"
    magics = ((0, b"XFSB"),)


class Squashfs(BlockFsType):
    name = "squashfs"
    read_only = True
    magics = ((0, b"hsqs"),)


class Erofs(BlockFsType):
    name = "erofs"
    unreadable_errno = errno.EINVAL
    read_only = True
    magics = ((1024, _magic(0xE0F5E1E2, 4)),)


class Btrfs(BlockFsType):
    name = "btrfs"
    unreadable_errno = errno.EINVAL
    magics = ((0x10040, b"_BHRfS_M"),)
    read_size = 0x10040 + 8


class Tmpfs(FsType):
    name = "tmpfs"


BLOCK_FS_TYPES: tuple[type[BlockFsType], ...] = (Ext2, Ext3, Ext4, Xfs, Squashfs, Erofs, Btrfs)


def register_filesystems(machine: Machine) -> dict[str, FsType]:
    types: dict[str, FsType] = {cls.name: cls(machine) for cls in BLOCK_FS_TYPES}
    types["tmpfs"] = Tmpfs(machine)
    return types


# -- mount(2) / umount2(2) ----------------------------------------------------------------------


@kfunc
def do_mount(
    machine: Machine, source: str, target: str, fstype: str, flags: int, data: str
) -> None:
    vfs = machine.vfs
    pmnt, mountpoint, _canon = vfs.walk(target)
    if not mountpoint.is_dir():
        raise err(errno.ENOTDIR, target)
    if flags & abi.MS_REMOUNT:
        top = vfs.lookup_mnt(pmnt, mountpoint) if mountpoint is not pmnt.mnt_root else pmnt
        if top is None or mountpoint is not top.mnt_root:
            raise err(errno.EINVAL, target)
        top.mnt_sb.rdonly = bool(flags & abi.MS_RDONLY) or top.mnt_sb.rdonly
        return
    if flags & abi.MS_BIND:
        raise err(errno.EINVAL, "bind mounts are not modelled")
    fs = machine.fs_types.get(fstype)
    if fs is None:
        raise err(errno.ENODEV, f"unknown filesystem type {fstype!r}")
    if isinstance(fs, BlockFsType):
        sb = fs.get_tree_bdev(source, flags)
    else:
        sb = SuperBlock(fs.name, vfs.anon_dev(), fs=fs, rdonly=bool(flags & abi.MS_RDONLY))
    options = "ro" if sb.rdonly else "rw"
    mnt = Mount(vfs, sb, source, options)
    do_add_mount(vfs, mnt, pmnt, mountpoint)


@kfunc
def do_add_mount(vfs: Vfs, mnt: Mount, parent: Mount, mountpoint: Inode) -> None:
    point("mutex", "namespace_sem")
    # mount on top of whatever is already mounted there (the walk crossed into it)
    vfs.attach_mnt(mnt, parent, mountpoint)


def _mount_busy(mnt: Mount) -> bool:
    """``propagate_mount_busy``: references beyond the tree's own, or mounts below."""
    return mnt.mnt_count > 1 or bool(mnt.children)


@kfunc
def path_umount(machine: Machine, target: str, flags: int) -> None:
    vfs = machine.vfs
    if flags & ~(abi.MNT_FORCE | abi.MNT_DETACH | abi.MNT_EXPIRE | abi.UMOUNT_NOFOLLOW):
        raise err(errno.EINVAL, target)
    mnt, inode, _canon = vfs.walk(target, follow=not flags & abi.UMOUNT_NOFOLLOW)
    if inode is not mnt.mnt_root or mnt.mnt_parent is None:
        raise err(errno.EINVAL, f"{target} is not a mount point")
    do_umount(vfs, mnt, flags)


@kfunc
def do_umount(vfs: Vfs, mnt: Mount, flags: int) -> None:
    point("mutex", "namespace_sem")
    if flags & abi.MNT_DETACH:
        doomed = list(vfs.iter_tree(mnt))
    else:
        if _mount_busy(mnt):
            raise err(errno.EBUSY, vfs.mount_path(mnt))
        doomed = [mnt]
    for m in doomed:
        vfs.umount_one(m)
    # namespace_unlock: drop the tree's reference of each unmounted mount
    for m in doomed:
        mntput(m)


__all__ = [
    "BLOCK_FS_TYPES", "BlockFsType", "FsType", "do_mount", "path_umount", "register_filesystems",
]  # fmt: skip
