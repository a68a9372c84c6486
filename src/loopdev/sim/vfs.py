"""The model's VFS: inodes, superblocks, mounts, open files with fput / delayed fput, fd
tables, path lookup with mount crossing, flock, mount(2)/umount2(2).

Modelled on fs/file_table.c (``fput``: the last reference from a user task is released by
``____fput`` as task_work before the task returns to user mode; from a kernel thread it goes
on the ``delayed_fput`` list, drained by a delayed work on ``system_wq`` one to two jiffies
later), fs/namespace.c
(``do_umount``: EBUSY while anything holds the mount; the last ``mntput`` of a detached mount
runs ``__cleanup_mnt`` as task_work, from a kthread via ``delayed_mntput``), fs/super.c
(``deactivate_super`` → ``kill_block_super`` → ``blkdev_put``) and fs/locks.c (flock).

A model filesystem keeps its files in memory; block filesystems read their superblock through
the block layer at mount (``fs.py``), so a device that is torn down fails the mount with EIO.
"""

from __future__ import annotations

import errno
import itertools
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from loopdev import abi
from loopdev.kernel import Stat
from loopdev.sim.sched import kfunc, point
from loopdev.sim.sync import PercpuRwsem, WaitQueue, wait_event, wake_up_all
from loopdev.sim.task import TWA_RESUME, Task, current, task_work_add
from loopdev.sim.workqueue import DelayedWork, flush_delayed_work, queue_work, system_wq

if TYPE_CHECKING:
    from loopdev.sim.block import BlockDevice
    from loopdev.sim.fs import FsType
    from loopdev.sim.machine import Machine

# f_mode bits (include/linux/fs.h)
FMODE_READ = 0x1
FMODE_WRITE = 0x2
FMODE_EXCL = 0x80

S_IFMT = abi.S_IFMT
S_IFDIR = abi.S_IFDIR
S_IFREG = abi.S_IFREG
S_IFLNK = abi.S_IFLNK
MAX_SYMLINKS = 40


def err(code: int, what: str = "") -> OSError:
    """An OSError with the real errno and strerror text."""
    msg = os.strerror(code)
    return OSError(code, f"{msg}: {what}" if what else msg)


# -- inodes and superblocks ----------------------------------------------------------------------


class Inode:
    """An inode: regular file (``data``), directory (``children`` or a dynamic ``dyn``),
    symlink (``target`` / ``link_fn``, magic links with ``jump_fn``), device node (``rdev``),
    or a kernfs attribute (``read_fn``)."""

    # Most inodes use few of these: class-level defaults keep creating one (a machine boots
    # ~80 of them per run) to the five fields every inode has.
    rdev = 0
    nlink = 1
    data: bytearray | None = None
    children: dict[str, Inode] | None = None
    dyn: DynDir | None = None
    target = ""
    link_fn: Callable[[], str] | None = None
    jump_fn: Callable[[], tuple[Mount, Inode, str]] | None = None
    read_fn: Callable[[], bytes] | None = None
    write_fn: Callable[[bytes], None] | None = None
    flocks: dict[File, int] | None = None
    flock_wq: WaitQueue | None = None
    #: ``inode->i_fop`` of files with their own file operations (kernfs, anon inodes)
    i_fop: FileOperations | None = None

    def __init__(
        self, sb: SuperBlock, mode: int, name: str = "", parent: Inode | None = None
    ) -> None:
        self.i_sb = sb
        self.ino = next(sb.inos)
        self.mode = mode
        self.name = name
        self.parent = parent

    @property
    def kind(self) -> int:
        return self.mode & S_IFMT

    def is_dir(self) -> bool:
        return self.mode & S_IFMT == abi.S_IFDIR

    def is_reg(self) -> bool:
        return self.mode & S_IFMT == abi.S_IFREG

    def is_lnk(self) -> bool:
        return self.mode & S_IFMT == abi.S_IFLNK

    def is_blk(self) -> bool:
        return self.mode & S_IFMT == abi.S_IFBLK

    def is_chr(self) -> bool:
        return self.mode & S_IFMT == abi.S_IFCHR

    def size(self) -> int:
        if self.data is not None:
            return len(self.data)
        if self.read_fn is not None:
            return 4096
        if self.is_lnk():
            return len(self.target)
        return 0

    def lookup(self, name: str) -> Inode | None:
        if self.dyn is not None:
            return self.dyn.lookup(self, name)
        if self.children is None:
            return None
        return self.children.get(name)

    def names(self) -> list[str]:
        if self.dyn is not None:
            return self.dyn.names(self)
        return list(self.children or ())

    def __repr__(self) -> str:
        return f"<Inode {self.i_sb.s_id}:{self.ino} {self.name!r} {oct(self.mode)}>"


class DynDir:
    """A directory whose entries are computed (procfs)."""

    def lookup(self, dir: Inode, name: str) -> Inode | None:
        raise NotImplementedError

    def names(self, dir: Inode) -> list[str]:
        raise NotImplementedError


class SuperBlock:
    """``struct super_block``: one mounted filesystem instance."""

    def __init__(
        self,
        fstype: str,
        s_dev: int,
        *,
        bdev: BlockDevice | None = None,
        fs: FsType | None = None,
        rdonly: bool = False,
    ) -> None:
        self.fstype = fstype
        self.s_dev = s_dev
        self.s_id = f"{abi.major(s_dev)}:{abi.minor(s_dev)}"
        self.s_bdev = bdev
        self.s_type = fs
        self.s_active = 1
        self.rdonly = rdonly
        self.inos = itertools.count(1 if bdev is None else 2)
        #: freeze protection (``sb->s_writers``); freeze_super would take it for writing.
        self.s_writers = PercpuRwsem(f"sb_writers:{self.s_id}", lock_class=f"sb_writers#{fstype}")
        self.s_root = Inode(self, abi.S_IFDIR | 0o755)
        self.s_root.children = {}
        self.s_root.nlink = 2
        #: the key under which the fs keeps its in-memory tree on the machine (fs.py)
        self.store_key: object = None
        #: how a block filesystem opened its device (fill_super), for the put in kill_sb
        self.mode_opened = FMODE_READ | FMODE_EXCL

    def __repr__(self) -> str:
        return f"<SuperBlock {self.fstype} {self.s_id}>"


def mknod(parent: Inode, name: str, mode: int, rdev: int = 0) -> Inode:
    """Create a child inode (regular, dir, device node) in an in-memory directory."""
    children = parent.children
    assert children is not None
    node = Inode(parent.i_sb, mode, name, parent)
    if rdev:
        node.rdev = rdev
    kind = mode & S_IFMT
    if kind == S_IFDIR:
        node.children = {}
        node.nlink = 2
    elif kind == S_IFREG:
        node.data = bytearray()
    children[name] = node
    return node


def mkdir_p(root: Inode, path: str) -> Inode:
    """Create directories along `path` (relative to `root`), returning the last."""
    node = root
    for part in path.split("/"):
        if not part:
            continue
        nxt = node.lookup(part)
        node = nxt if nxt is not None else mknod(node, part, S_IFDIR | 0o755)
    return node


def symlink(parent: Inode, name: str, target: str) -> Inode:
    node = mknod(parent, name, abi.S_IFLNK | 0o777)
    node.target = target
    return node


def attr(
    parent: Inode,
    name: str,
    read_fn: Callable[[], bytes],
    write_fn: Callable[[bytes], None] | None = None,
) -> Inode:
    """A kernfs attribute file whose content is computed on read."""
    # a kernfs attribute is no regular file with data: no mknod(S_IFREG) bytearray
    children = parent.children
    assert children is not None
    node = Inode(parent.i_sb, S_IFREG | (0o644 if write_fn else 0o444), name, parent)
    node.read_fn = read_fn
    if write_fn is not None:
        node.write_fn = write_fn
    children[name] = node
    return node


def remove(parent: Inode, name: str) -> None:
    """Unlink a child (recursively for kernfs directories)."""
    if parent.children is not None:
        parent.children.pop(name, None)


# -- mounts ----------------------------------------------------------------------------------------


class Mount:
    """``struct mount``: a filesystem attached somewhere in the tree."""

    __slots__ = (
        "children", "mnt_count", "mnt_id", "mnt_mountpoint", "mnt_parent", "mnt_root", "mnt_sb",
        "mounted", "options", "source", "vfs",
    )  # fmt: skip

    def __init__(self, vfs: Vfs, sb: SuperBlock, source: str, options: str) -> None:
        self.vfs = vfs
        self.mnt_id = next(vfs.mnt_ids)
        self.mnt_sb = sb
        self.mnt_root = sb.s_root
        self.mnt_parent: Mount | None = None
        self.mnt_mountpoint: Inode | None = None
        self.mnt_count = 1  # the reference of the mount tree
        self.children: list[Mount] = []
        self.mounted = False
        self.source = source
        self.options = options

    def __repr__(self) -> str:
        return f"<Mount {self.mnt_id} {self.mnt_sb.fstype} {self.source}>"


def mntget(mnt: Mount) -> Mount:
    mnt.mnt_count += 1
    return mnt


@kfunc
def mntput(mnt: Mount) -> None:
    """Drop a mount reference; the last one of a detached mount cleans it up."""
    point("atomic", "mnt_count")
    mnt.mnt_count -= 1
    if mnt.mnt_count > 0 or mnt.mounted:
        return
    mntput_no_expire(mnt)


@kfunc
def mntput_no_expire(mnt: Mount) -> None:
    """Last reference of an unmounted mount: cleanup as task_work, or delayed_mntput."""
    task = current()
    if not task.is_kthread and task_work_add(task, _cleanup_mnt_cb(mnt), TWA_RESUME) == 0:
        return
    mnt.vfs.delayed_mntput(mnt)


def _cleanup_mnt_cb(mnt: Mount) -> Callable[[], None]:
    def __cleanup_mnt() -> None:
        cleanup_mnt(mnt)

    return __cleanup_mnt


@kfunc
def cleanup_mnt(mnt: Mount) -> None:
    deactivate_super(mnt.mnt_sb)


@kfunc
def deactivate_super(sb: SuperBlock) -> None:
    """Drop an active reference; the last one shuts the filesystem down (kill_sb)."""
    point("atomic", "s_active")
    sb.s_active -= 1
    if sb.s_active > 0:
        return
    fs = sb.s_type
    if fs is not None:
        fs.kill_sb(sb)


# -- open files --------------------------------------------------------------------------------


class FileOperations:
    """``struct file_operations``: the defaults fail like the kernel's missing methods."""

    def open(self, inode: Inode, file: File) -> None:
        return None

    def release(self, inode: Inode, file: File) -> None:
        return None

    def read(self, file: File, size: int, pos: int) -> bytes:
        raise err(errno.EINVAL)

    def write(self, file: File, data: bytes, pos: int) -> int:
        raise err(errno.EINVAL)

    def ioctl(self, file: File, cmd: int, arg: int | bytearray) -> int:
        raise err(errno.ENOTTY)

    def fsync(self, file: File) -> None:
        return None


class File:
    """``struct file``: an open file description with its own reference count."""

    __slots__ = (
        "f_count", "f_flags", "f_inode", "f_mnt", "f_mode", "f_op", "f_path", "f_pos",
        "private_data", "vfs",
    )  # fmt: skip

    def __init__(
        self, vfs: Vfs, inode: Inode, mnt: Mount | None, path: str, flags: int, f_op: FileOperations
    ) -> None:
        self.vfs = vfs
        self.f_inode = inode
        self.f_mnt = mnt
        self.f_path = path
        self.f_flags = flags
        acc = flags & 3
        self.f_mode = (FMODE_READ if acc in (abi.O_RDONLY, abi.O_RDWR) else 0) | (
            FMODE_WRITE if acc in (abi.O_WRONLY, abi.O_RDWR) else 0
        )
        self.f_op = f_op
        self.f_pos = 0
        self.f_count = 1
        self.private_data: Any = None

    def __repr__(self) -> str:
        return f"<File {self.f_path} count={self.f_count}>"

    def fput(self) -> None:
        fput(self)


def get_file(file: File) -> File:
    """Take a reference (``get_file``)."""
    file.f_count += 1
    return file


@kfunc
def fput(file: File) -> None:
    """Drop a reference; the last one is released by ``____fput`` as task_work of a user task,
    or through the ``delayed_fput`` list from a kernel thread (fs/file_table.c)."""
    point("atomic", "f_count")
    file.f_count -= 1
    if file.f_count > 0:
        return
    task = current()
    if not task.is_kthread and task_work_add(task, _fput_cb(file), TWA_RESUME) == 0:
        return
    # After exit_task_work (or from a kthread): fall through to delayed fput.
    file.vfs.delayed_fput_add(file)


def _fput_cb(file: File) -> Callable[[], None]:
    def ____fput() -> None:
        do_fput(file)

    return ____fput


@kfunc("__fput")
def do_fput(file: File) -> None:
    """Release an open file: flocks, ``f_op->release``, then the mount reference."""
    inode = file.f_inode
    if inode.flocks:
        locks_remove_file(file)
    file.f_op.release(inode, file)
    mnt = file.f_mnt
    file.f_mnt = None
    if mnt is not None:
        mntput(mnt)


def fget(task: Task, fd: int) -> File:
    """``fget``: a new reference to the file behind `fd` (EBADF if none)."""
    f = task.files.get(fd)
    if not isinstance(f, File):
        raise err(errno.EBADF, f"fd {fd}")
    return get_file(f)


def fdget(task: Task, fd: int) -> File:
    """The file behind `fd` without a new reference (the fd table's own suffices)."""
    f = task.files.get(fd)
    if not isinstance(f, File):
        raise err(errno.EBADF, f"fd {fd}")
    return f


def fd_install(task: Task, file: File) -> int:
    """Install `file` at the lowest free descriptor (``get_unused_fd_flags`` + ``fd_install``)."""
    files = task.files
    fd = 0
    while fd in files:
        fd += 1
    files[fd] = file
    return fd


@kfunc
def filp_close(file: File) -> None:
    if file.f_inode.flocks:
        # POSIX locks would go here; flock locks belong to the open file (released at __fput).
        pass
    fput(file)


@kfunc
def close_fd(fd: int) -> None:
    f = current().files.pop(fd, None)
    if f is None:
        raise err(errno.EBADF, f"fd {fd}")
    filp_close(f)


def _exit_files_hook(task: Task, fd: int, file: Any) -> None:
    """``exit_files`` → ``filp_close`` for VFS files; other objects keep the runtime's default
    (their own ``fput()``)."""
    if isinstance(file, File):
        filp_close(file)
        return
    fput_method = getattr(file, "fput", None)
    if callable(fput_method):
        fput_method()


# -- flock (fs/locks.c) ------------------------------------------------------------------------


def _flock_conflict(inode: Inode, file: File, kind: int) -> bool:
    for other, k in (inode.flocks or {}).items():
        if other is file:
            continue
        if kind == abi.LOCK_EX or k == abi.LOCK_EX:
            return True
    return False


@kfunc
def flock_lock_inode_wait(file: File, operation: int) -> None:
    inode = file.f_inode
    if inode.flocks is None:
        inode.flocks = {}
        inode.flock_wq = WaitQueue(f"flock:{inode.i_sb.s_id}:{inode.ino}")
    assert inode.flock_wq is not None
    kind = operation & (abi.LOCK_SH | abi.LOCK_EX | abi.LOCK_UN)
    point("spin", "flc_lock")
    if kind == abi.LOCK_UN:
        if inode.flocks.pop(file, None) is not None:
            wake_up_all(inode.flock_wq)
        return
    if kind not in (abi.LOCK_SH, abi.LOCK_EX):
        raise err(errno.EINVAL)
    held = inode.flocks.get(file)
    if held == kind:
        return
    if held is not None:
        # a conversion drops the old lock first (flock_lock_inode), so waiters may win
        del inode.flocks[file]
        wake_up_all(inode.flock_wq)
    if _flock_conflict(inode, file, kind):
        if operation & abi.LOCK_NB:
            raise err(errno.EWOULDBLOCK)
        wait_event(inode.flock_wq, lambda: not _flock_conflict(inode, file, kind), killable=True)
    inode.flocks[file] = kind


def locks_remove_file(file: File) -> None:
    inode = file.f_inode
    if inode.flocks and inode.flocks.pop(file, None) is not None and inode.flock_wq is not None:
        wake_up_all(inode.flock_wq)


# -- regular files and directories -----------------------------------------------------------


class RegularFileOps(FileOperations):
    """Files of in-memory filesystems (tmpfs and the model block filesystems)."""

    def read(self, file: File, size: int, pos: int) -> bytes:
        data = file.f_inode.data
        if data is None:
            return b""
        return bytes(data[pos : pos + size])

    def write(self, file: File, data: bytes, pos: int) -> int:
        inode = file.f_inode
        buf = inode.data
        assert buf is not None
        if inode.i_sb.rdonly:
            raise err(errno.EROFS)
        end = pos + len(data)
        if end > len(buf):
            # a fresh zeroed buffer (calloc: untouched pages stay unmapped): extending in
            # place would touch every new page of a large image
            grown = bytearray(end)
            grown[: len(buf)] = buf
            inode.data = buf = grown
        buf[pos:end] = data
        return len(data)


class AttrFileOps(FileOperations):
    """kernfs attribute files: the content is computed at open time (seq_file-like)."""

    def open(self, inode: Inode, file: File) -> None:
        assert inode.read_fn is not None
        file.private_data = inode.read_fn() if file.f_mode & FMODE_READ else b""

    def read(self, file: File, size: int, pos: int) -> bytes:
        data: bytes = file.private_data
        return data[pos : pos + size]

    def write(self, file: File, data: bytes, pos: int) -> int:
        fn = file.f_inode.write_fn
        if fn is None:
            raise err(errno.EACCES)
        fn(bytes(data))
        return len(data)


class DirOps(FileOperations):
    def read(self, file: File, size: int, pos: int) -> bytes:
        raise err(errno.EISDIR)


class NullOps(FileOperations):
    """/dev/null."""

    def read(self, file: File, size: int, pos: int) -> bytes:
        return b""

    def write(self, file: File, data: bytes, pos: int) -> int:
        return len(data)


REGULAR_OPS = RegularFileOps()
ATTR_OPS = AttrFileOps()
DIR_OPS = DirOps()
NULL_OPS = NullOps()


def sb_start_write(sb: SuperBlock) -> None:
    """``sb_start_write``: freeze protection of a filesystem being written (the hook the
    freeze machinery builds on: ``freeze_super`` takes ``s_writers`` for writing)."""
    sb.s_writers.down_read()


def sb_end_write(sb: SuperBlock) -> None:
    sb.s_writers.up_read()


def file_start_write(file: File) -> bool:
    """``file_start_write``: freeze protection for writes to regular files only."""
    if not file.f_inode.is_reg() or file.f_inode.read_fn is not None:
        return False
    sb_start_write(file.f_inode.i_sb)
    return True


def file_end_write(file: File, started: bool) -> None:
    if started:
        sb_end_write(file.f_inode.i_sb)


@kfunc
def vfs_read(file: File, size: int, pos: int) -> bytes:
    if not file.f_mode & FMODE_READ:
        raise err(errno.EBADF)
    return file.f_op.read(file, size, pos)


@kfunc
def vfs_write(file: File, data: bytes, pos: int) -> int:
    if not file.f_mode & FMODE_WRITE:
        raise err(errno.EBADF)
    started = file_start_write(file)
    try:
        return file.f_op.write(file, data, pos)
    finally:
        file_end_write(file, started)


# -- the VFS of one machine --------------------------------------------------------------------

#: char device numbers of the model
DEV_NULL = abi.makedev(1, 3)
LOOP_CTRL_DEV = abi.makedev(10, 237)


class Vfs:
    """Per-machine VFS state: the mount tree, anonymous devs, delayed fput/mntput, char devs."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.mnt_ids = itertools.count(21)
        self.anon_devs = itertools.count(20)
        self.mounts: list[Mount] = []  # in mount order, for mountinfo
        self.mount_hash: dict[tuple[Mount, Inode], list[Mount]] = {}
        self.chrdevs: dict[int, FileOperations] = {DEV_NULL: NULL_OPS}
        self.delayed_fput_list: list[File] = []
        self.delayed_fput_work = DelayedWork(self.delayed_fput, "delayed_fput")
        self.delayed_mntput_list: list[Mount] = []
        self.delayed_mntput_work = DelayedWork(self._delayed_mntput, "delayed_mntput")
        self.root_mnt: Mount = self._rootfs()

    def anon_dev(self) -> int:
        return abi.makedev(0, next(self.anon_devs))

    def _rootfs(self) -> Mount:
        sb = SuperBlock("rootfs", abi.makedev(0, 1))
        mnt = Mount(self, sb, "rootfs", "rw")
        mnt.mounted = True
        self.mounts.append(mnt)
        return mnt

    # -- delayed fput / mntput (from kernel threads) ----------------------------------------

    def delayed_fput_add(self, file: File) -> None:
        """``llist_add(&file->f_llist, &delayed_fput_list)`` +
        ``schedule_delayed_work(&delayed_fput_work, 1)``: the list is drained when that
        timer fires, one to two jiffies later (the timer wheel rounds up)."""
        first = not self.delayed_fput_list
        self.delayed_fput_list.append(file)
        if first:
            queue_work(system_wq, self.delayed_fput_work)

    @kfunc
    def flush_delayed_fput(self) -> None:
        """fs/file_table.c ``flush_delayed_fput``: drain the list in the caller, then
        ``flush_delayed_work`` (a run already under way finishes)."""
        self.delayed_fput()
        flush_delayed_work(self.delayed_fput_work)

    @kfunc
    def delayed_fput(self) -> None:
        """The ``delayed_fput`` work: ``__fput`` every file on the list."""
        batch, self.delayed_fput_list = self.delayed_fput_list, []
        for f in batch:
            do_fput(f)

    def delayed_mntput(self, mnt: Mount) -> None:
        """fs/namespace.c ``mntput_no_expire`` from a kthread: ``llist_add`` +
        ``schedule_delayed_work(&delayed_mntput_work, 1)``."""
        first = not self.delayed_mntput_list
        self.delayed_mntput_list.append(mnt)
        if first:
            queue_work(system_wq, self.delayed_mntput_work)

    @kfunc("delayed_mntput")
    def _delayed_mntput(self) -> None:
        batch, self.delayed_mntput_list = self.delayed_mntput_list, []
        for m in batch:
            cleanup_mnt(m)

    # -- path lookup ------------------------------------------------------------------------

    def lookup_mnt(self, mnt: Mount, inode: Inode) -> Mount | None:
        stack = self.mount_hash.get((mnt, inode))
        return stack[-1] if stack else None

    def walk(self, path: str, *, follow: bool = True, depth: int = 0) -> tuple[Mount, Inode, str]:
        """Resolve `path` to (mount, inode, canonical path); ENOENT/ENOTDIR/ELOOP."""
        if not path:
            raise err(errno.ENOENT, path)
        comps = [c for c in path.split("/") if c and c != "."]
        comps.reverse()
        mount_hash = self.mount_hash
        root = self.root_mnt
        rmnt = root
        rino = root.mnt_root
        while over_stack := mount_hash.get((rmnt, rino)):
            rmnt = over_stack[-1]
            rino = rmnt.mnt_root
        stack: list[tuple[Mount, Inode]] = [(rmnt, rino)]
        names: list[str] = []
        links = depth
        while comps:
            c = comps.pop()
            if c == "..":
                if len(stack) > 1:
                    stack.pop()
                    names.pop()
                continue
            mnt, ino = stack[-1]
            if ino.mode & S_IFMT != S_IFDIR:
                raise err(errno.ENOTDIR, path)
            child = ino.lookup(c)
            if child is None:
                raise err(errno.ENOENT, path)
            while over_stack := mount_hash.get((mnt, child)):
                mnt = over_stack[-1]
                child = mnt.mnt_root
            if child.mode & S_IFMT == S_IFLNK and (comps or follow):
                links += 1
                if links > MAX_SYMLINKS:
                    raise err(errno.ELOOP, path)
                if child.jump_fn is not None:
                    jmnt, jino, jpath = child.jump_fn()
                    stack = [stack[0], (jmnt, jino)]
                    names = [jpath.strip("/")]
                    continue
                target = child.link_fn() if child.link_fn is not None else child.target
                if target.startswith("/"):
                    stack = stack[:1]
                    names = []
                comps.extend(reversed([t for t in target.split("/") if t and t != "."]))
                continue
            stack.append((mnt, child))
            names.append(c)
        mnt, ino = stack[-1]
        return mnt, ino, "/" + "/".join(names)

    def walk_parent(self, path: str) -> tuple[Mount, Inode, str, str]:
        """The parent directory of `path` and the last component."""
        stripped = path.rstrip("/")
        head, _, last = stripped.rpartition("/")
        if not last or last in (".", ".."):
            raise err(errno.EEXIST if stripped in ("", "/") else errno.EINVAL, path)
        mnt, ino, canon = self.walk(head or "/")
        if not ino.is_dir():
            raise err(errno.ENOTDIR, path)
        return mnt, ino, last, (canon.rstrip("/") + "/" + last)

    def mount_path(self, mnt: Mount) -> str:
        """Where `mnt` is attached, as an absolute path."""
        parts: list[str] = []
        m = mnt
        while m.mnt_parent is not None and m.mnt_mountpoint is not None:
            node: Inode | None = m.mnt_mountpoint
            parent_root = m.mnt_parent.mnt_root
            while node is not None and node is not parent_root:
                parts.append(node.name)
                node = node.parent
            m = m.mnt_parent
        return "/" + "/".join(reversed(parts))

    # -- open -------------------------------------------------------------------------------

    @kfunc
    def do_sys_open(self, path: str, flags: int, mode: int) -> int:
        file = self.do_filp_open(path, flags, mode)
        return fd_install(current(), file)

    @kfunc
    def do_filp_open(self, path: str, flags: int, mode: int) -> File:
        acc = flags & 3
        try:
            mnt, inode, canon = self.walk(path, follow=not flags & abi.O_NOFOLLOW)
            if flags & abi.O_CREAT and flags & abi.O_EXCL:
                raise err(errno.EEXIST, path)
        except OSError as e:
            if e.errno != errno.ENOENT or not flags & abi.O_CREAT:
                raise
            pmnt, parent, last, canon = self.walk_parent(path)
            if parent.children is None:
                raise err(errno.EACCES, path) from None
            if pmnt.mnt_sb.rdonly:
                raise err(errno.EROFS, path) from None
            mnt = pmnt
            inode = mknod(parent, last, abi.S_IFREG | (mode & 0o7777))
        if inode.is_lnk():
            raise err(errno.ELOOP, path)
        if inode.is_dir() and acc != abi.O_RDONLY:
            raise err(errno.EISDIR, path)
        if flags & abi.O_DIRECTORY and not inode.is_dir():
            raise err(errno.ENOTDIR, path)
        if acc != abi.O_RDONLY and mnt.mnt_sb.rdonly and (inode.is_reg() or inode.is_dir()):
            raise err(errno.EROFS, path)
        f_op = self.file_ops(inode)
        file = File(self, inode, mntget(mnt), canon, flags, f_op)
        try:
            f_op.open(inode, file)
        except OSError:
            file.f_mnt = None
            mntput(mnt)
            raise
        if (
            flags & abi.O_TRUNC
            and inode.is_reg()
            and inode.data is not None
            and acc != abi.O_RDONLY
        ):
            del inode.data[:]
        return file

    def file_ops(self, inode: Inode) -> FileOperations:
        if inode.i_fop is not None:
            return inode.i_fop
        if inode.is_blk():
            return self.machine.block.def_blk_fops
        if inode.is_chr():
            ops = self.chrdevs.get(inode.rdev)
            if ops is None:
                raise err(errno.ENXIO, f"char device {inode.rdev:#x}")
            return ops
        if inode.is_dir():
            return DIR_OPS
        if inode.read_fn is not None:
            return ATTR_OPS
        return REGULAR_OPS

    # -- stat ---------------------------------------------------------------------------------

    @staticmethod
    def stat_of(inode: Inode) -> Stat:
        return Stat(
            mode=inode.mode,
            ino=inode.ino,
            dev=inode.i_sb.s_dev,
            rdev=inode.rdev,
            size=inode.size(),
            nlink=inode.nlink,
            uid=0,
        )

    # -- namespace operations ------------------------------------------------------------------

    def attach_mnt(self, mnt: Mount, parent: Mount, mountpoint: Inode) -> None:
        mnt.mnt_parent = parent
        mnt.mnt_mountpoint = mountpoint
        mnt.mounted = True
        parent.children.append(mnt)
        mntget(parent)
        self.mount_hash.setdefault((parent, mountpoint), []).append(mnt)
        self.mounts.append(mnt)

    def umount_one(self, mnt: Mount) -> None:
        parent = mnt.mnt_parent
        mp = mnt.mnt_mountpoint
        assert parent is not None and mp is not None
        stack = self.mount_hash.get((parent, mp), [])
        if mnt in stack:
            stack.remove(mnt)
        if not stack:
            self.mount_hash.pop((parent, mp), None)
        parent.children.remove(mnt)
        self.mounts.remove(mnt)
        mnt.mounted = False
        mnt.mnt_parent = None
        mntput(parent)

    def iter_tree(self, mnt: Mount) -> Iterator[Mount]:
        """`mnt` and every mount below it, children first."""
        for child in list(mnt.children):
            yield from self.iter_tree(child)
        yield mnt

    def mountinfo(self) -> str:
        """``/proc/self/mountinfo`` in the kernel's format."""
        lines = []
        for m in self.mounts:
            parent_id = m.mnt_parent.mnt_id if m.mnt_parent is not None else 1
            sb = m.mnt_sb
            opts = ("ro" if sb.rdonly or "ro" in m.options.split(",") else "rw") + ",relatime"
            lines.append(
                f"{m.mnt_id} {parent_id} {sb.s_id} / {_escape(self.mount_path(m))} {opts} "
                f"- {sb.fstype} {_escape(m.source)} {'ro' if sb.rdonly else 'rw'}"
            )
        return "".join(line + "\n" for line in lines)


def _escape(text: str) -> str:
    return (
        text.replace("\\", "\\134")
        .replace(" ", "\\040")
        .replace("\t", "\\011")
        .replace("\n", "\\012")
    )


__all__ = [
    "FMODE_EXCL", "FMODE_READ", "FMODE_WRITE", "DynDir", "File", "FileOperations", "Inode",
    "Mount", "SuperBlock", "Vfs", "attr", "close_fd", "deactivate_super", "err", "fd_install",
    "fdget", "fget", "flock_lock_inode_wait", "fput", "get_file", "mkdir_p", "mknod", "mntget",
    "mntput", "remove", "symlink", "vfs_read", "vfs_write",
]  # fmt: skip
