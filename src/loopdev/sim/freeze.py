"""Filesystem freezing: ``freeze_super``/``thaw_super`` (fs/super.c, v5.16) and the
FIFREEZE/FITHAW ioctls (fs/ioctl.c ``ioctl_fsfreeze``/``ioctl_fsthaw``).

Freeze protection itself is ``sb->s_writers`` (a percpu rw-semaphore, lockdep class
``sb_writers#<fstype>``): writers of a filesystem hold it for reading
(``sb_start_write``/``file_start_write`` in :mod:`loopdev.sim.vfs`; the loop worker's writes to
its backing file take it too), ``freeze_super`` takes it for writing, which waits for the
writers to drain and blocks new ones until ``thaw_super``. The model has one freeze level
(SB_FREEZE_WRITE); the page-fault and fs-internal levels would only add more of the same.

As upstream, a frozen superblock keeps an active reference until it is thawed, and
``freeze_super`` hands the rw-semaphore's lockdep ownership back (``lockdep_sb_freeze_release``)
so that another task may thaw it.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from loopdev.sim import sched as _sched
from loopdev.sim.sched import emit, kfunc
from loopdev.sim.sync import Mutex
from loopdev.sim.vfs import File, SuperBlock, deactivate_super, err, sb_end_write, sb_start_write

#: ``_IOWR('X', 119, int)`` and ``_IOWR('X', 120, int)`` (include/uapi/linux/fs.h)
FIFREEZE = 0xC0045877
FITHAW = 0xC0045878

SB_UNFROZEN, SB_FREEZE_WRITE, SB_FREEZE_COMPLETE = 0, 1, 4
FROZEN_NAMES = {SB_UNFROZEN: "SB_UNFROZEN", SB_FREEZE_WRITE: "SB_FREEZE_WRITE",
                SB_FREEZE_COMPLETE: "SB_FREEZE_COMPLETE"}  # fmt: skip


@dataclass
class SbFreeze:
    """The freeze side of one superblock: ``s_umount`` and ``s_writers.frozen``."""

    s_umount: Mutex
    frozen: int = SB_UNFROZEN


def sb_freeze(sb: SuperBlock) -> SbFreeze:
    """Per-run freeze state of `sb` (the model's SuperBlock has no ``s_umount``)."""
    table: dict[SuperBlock, SbFreeze] = _sched.current_scheduler().state(
        "freeze.superblocks", dict
    )
    st = table.get(sb)
    if st is None:
        st = table[sb] = SbFreeze(
            Mutex(f"s_umount:{sb.s_id}", lock_class=f"&type->s_umount_key#{sb.fstype}")
        )
    return st


def sb_can_freeze(sb: SuperBlock) -> bool:
    """``sb->s_op->freeze_fs``: the block filesystems have it; tmpfs, sysfs, proc do not."""
    return sb.s_bdev is not None


def _set_frozen(sb: SuperBlock, st: SbFreeze, level: int) -> None:
    st.frozen = level
    emit("state", f"sb {sb.s_id}", FROZEN_NAMES.get(level, str(level)))


@kfunc
def sb_wait_write(sb: SuperBlock) -> None:
    """``percpu_down_write(sb->s_writers.rw_sem + level)``: wait for writers to drain."""
    sb.s_writers.down_write()


@kfunc
def lockdep_sb_freeze_release(sb: SuperBlock) -> None:
    """Hand lockdep ownership of the frozen rw-semaphore back (thaw may be another task)."""
    s = _sched.current_scheduler()
    s.lockdep.release(s.current, sb.s_writers)


@kfunc
def lockdep_sb_freeze_acquire(sb: SuperBlock) -> None:
    """``percpu_rwsem_acquire``: the thawing task takes lockdep ownership (no waiting; a
    trylock acquisition, so it records no dependency on what the thawer holds)."""
    s = _sched.current_scheduler()
    w = sb.s_writers
    s.lockdep.acquire(s.current, w, w.lock_class, trylock=True, op="percpu_rwsem_acquire")


@kfunc
def freeze_super(sb: SuperBlock) -> int:
    """Lock the filesystem and force it into a consistent state (EBUSY if already frozen)."""
    st = sb_freeze(sb)
    sb.s_active += 1  # atomic_inc(&sb->s_active)
    st.s_umount.lock()
    if st.frozen != SB_UNFROZEN:
        st.s_umount.unlock()
        deactivate_super(sb)  # deactivate_locked_super
        raise err(errno.EBUSY, f"{sb.s_id} is already frozen")
    if sb.rdonly:
        # Nothing to do really...
        _set_frozen(sb, st, SB_FREEZE_COMPLETE)
        st.s_umount.unlock()
        return 0
    _set_frozen(sb, st, SB_FREEZE_WRITE)
    # Release s_umount to preserve sb_start_write -> s_umount ordering
    st.s_umount.unlock()
    sb_wait_write(sb)
    st.s_umount.lock()
    # sync_filesystem(sb), SB_FREEZE_PAGEFAULT/SB_FREEZE_FS and ->freeze_fs: the model's
    # filesystems keep no dirty data and have one freeze level.
    _set_frozen(sb, st, SB_FREEZE_COMPLETE)
    lockdep_sb_freeze_release(sb)
    st.s_umount.unlock()
    return 0


@kfunc
def thaw_super(sb: SuperBlock) -> int:
    """Unlock a frozen filesystem (EINVAL if it is not frozen)."""
    st = sb_freeze(sb)
    st.s_umount.lock()
    if st.frozen != SB_FREEZE_COMPLETE:
        st.s_umount.unlock()
        raise err(errno.EINVAL, f"{sb.s_id} is not frozen")
    if not sb.rdonly:
        lockdep_sb_freeze_acquire(sb)
        _set_frozen(sb, st, SB_UNFROZEN)
        sb.s_writers.up_write()  # sb_freeze_unlock
    else:
        _set_frozen(sb, st, SB_UNFROZEN)
    st.s_umount.unlock()
    deactivate_super(sb)  # deactivate_locked_super
    return 0


@kfunc
def ioctl_fsfreeze(filp: File) -> int:
    sb = filp.f_inode.i_sb
    if not sb_can_freeze(sb):
        raise err(errno.EOPNOTSUPP, f"{sb.fstype} cannot be frozen")
    return freeze_super(sb)


@kfunc
def ioctl_fsthaw(filp: File) -> int:
    return thaw_super(filp.f_inode.i_sb)


def do_vfs_ioctl(filp: File, cmd: int) -> int | None:
    """The freeze ioctls of fs/ioctl.c (handled before ``f_op->unlocked_ioctl``); None for
    any other command."""
    if cmd == FIFREEZE:
        return ioctl_fsfreeze(filp)
    if cmd == FITHAW:
        return ioctl_fsthaw(filp)
    return None


__all__ = [
    "FIFREEZE", "FITHAW", "SB_FREEZE_COMPLETE", "SB_FREEZE_WRITE", "SB_UNFROZEN", "SbFreeze",
    "do_vfs_ioctl", "freeze_super", "ioctl_fsfreeze", "ioctl_fsthaw", "sb_end_write",
    "sb_freeze", "sb_start_write", "thaw_super",
]  # fmt: skip
