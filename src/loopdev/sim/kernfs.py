"""kernfs files with the per-open-file mutex (fs/kernfs/file.c, v5.16).

Every open of a kernfs file gets its own ``struct kernfs_open_file`` whose ``of->mutex``
(lockdep class ``&of->mutex``, shared by all of them) serialises the file's reads and writes:
a read (``kernfs_fop_read_iter`` → ``seq_read_iter`` under the seq_file's ``&p->lock`` →
``kernfs_seq_start``) and a write (``kernfs_fop_write_iter``) both take ``of->mutex`` and an
active reference on the node around the attribute's ``show``/``store``; lockdep sees that
reference as a *trylock* read of ``kn->active`` (fs/kernfs/dir.c ``kernfs_get_active``:
``rwsem_acquire_read(&kn->dep_map, 0, 1, _RET_IP_)``), so no dependency leads to it. Two tasks using the *same* open file therefore wait for each
other; two separate opens do not, but lockdep, which works on classes, cannot tell.

Only the files created with :func:`kernfs_create_file` take this path (``/sys/power/resume``);
the other sysfs attributes of the model are plain computed files.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

from loopdev import abi
from loopdev.sim.sched import kfunc
from loopdev.sim.sync import LockdepMap, Mutex, lock_map_release, rwsem_acquire_read
from loopdev.sim.vfs import FMODE_READ, File, FileOperations, Inode, err, mknod

Show = Callable[["KernfsOpenFile"], bytes]
Store = Callable[["KernfsOpenFile", bytes], int]


class KernfsNode:
    """``struct kernfs_node`` of an attribute: its ``show``/``store`` and its active map."""

    def __init__(self, name: str, show: Show | None, store: Store | None) -> None:
        self.name = name
        self.show = show
        self.store = store
        self.active = LockdepMap(f"kn->active:{name}", lock_class=f"kn->active#{name}")


class KernfsOpenFile:
    """``struct kernfs_open_file`` (one per open) with its seq_file."""

    def __init__(self, kn: KernfsNode, file: File) -> None:
        self.kn = kn
        self.file = file
        self.mutex = Mutex(f"of->mutex:{kn.name}", lock_class="&of->mutex")
        self.seq_lock = Mutex(f"seq_file:{kn.name}", lock_class="&p->lock")
        self.seq_buf = b""
        self.seq_filled = False


@kfunc
def kernfs_get_active(kn: KernfsNode) -> bool:
    """``atomic_inc_unless_negative(&kn->active)`` annotated as a trylock read."""
    rwsem_acquire_read(kn.active, trylock=True)
    return True


@kfunc
def kernfs_put_active(kn: KernfsNode) -> None:
    lock_map_release(kn.active)


@kfunc
def kernfs_seq_start(of: KernfsOpenFile) -> None:
    """Take ``of->mutex`` and an active reference for the duration of a seq read."""
    of.mutex.lock()
    if not kernfs_get_active(of.kn):
        of.mutex.unlock()
        raise err(errno.ENODEV, of.kn.name)


@kfunc
def kernfs_seq_stop(of: KernfsOpenFile) -> None:
    kernfs_put_active(of.kn)
    of.mutex.unlock()


@kfunc
def kernfs_seq_show(of: KernfsOpenFile) -> bytes:
    show = of.kn.show
    return show(of) if show is not None else b""


@kfunc
def seq_read_iter(of: KernfsOpenFile, size: int, pos: int) -> bytes:
    """seq_file read: the record is produced once (start/show/stop) and then copied out."""
    of.seq_lock.lock()
    try:
        if not of.seq_filled or pos == 0:
            kernfs_seq_start(of)
            try:
                of.seq_buf = kernfs_seq_show(of)
                of.seq_filled = True
            finally:
                kernfs_seq_stop(of)
        return of.seq_buf[pos : pos + size]
    finally:
        of.seq_lock.unlock()


@kfunc
def kernfs_fop_read_iter(of: KernfsOpenFile, size: int, pos: int) -> bytes:
    return seq_read_iter(of, size, pos)


@kfunc
def kernfs_fop_write_iter(of: KernfsOpenFile, data: bytes) -> int:
    """Serialise with other users of this open file, then call the attribute's ``store``."""
    of.mutex.lock()
    try:
        if not kernfs_get_active(of.kn):
            raise err(errno.ENODEV, of.kn.name)
        try:
            store = of.kn.store
            if store is None:
                raise err(errno.EINVAL, of.kn.name)
            return store(of, data)
        finally:
            kernfs_put_active(of.kn)
    finally:
        of.mutex.unlock()


class KernfsFileOps(FileOperations):
    """``kernfs_file_fops``."""

    def __init__(self, kn: KernfsNode) -> None:
        self.kn = kn

    def open(self, inode: Inode, file: File) -> None:
        if file.f_mode & FMODE_READ and self.kn.show is None:
            raise err(errno.EACCES, self.kn.name)
        file.private_data = KernfsOpenFile(self.kn, file)

    def read(self, file: File, size: int, pos: int) -> bytes:
        return kernfs_fop_read_iter(file.private_data, size, pos)

    def write(self, file: File, data: bytes, pos: int) -> int:
        return kernfs_fop_write_iter(file.private_data, bytes(data))


def kernfs_create_file(parent: Inode, name: str, show: Show | None, store: Store | None) -> Inode:
    """A sysfs attribute served by kernfs (``sysfs_create_file``)."""
    mode = abi.S_IFREG | (0o444 if show else 0) | (0o200 if store else 0)
    node = mknod(parent, name, mode)
    node.data = None
    node.i_fop = KernfsFileOps(KernfsNode(name, show, store))
    return node


__all__ = [
    "KernfsFileOps", "KernfsNode", "KernfsOpenFile", "kernfs_create_file",
    "kernfs_fop_read_iter", "kernfs_fop_write_iter",
]  # fmt: skip
