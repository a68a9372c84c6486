"""A model machine: everything one run of the model kernel needs, built fresh per run.

``Machine(sched, variant, nr_loop)`` boots: the root filesystem with /dev (devtmpfs), /sys
(sysfs), /proc, /tmp (tmpfs), /mnt and /run; the block layer; the uevent broadcast; the
filesystem types; and the loop driver of the chosen variant with /dev/loop0..N-1 and
/dev/loop-control. It is stored in the scheduler's per-run registry; nothing outlives the run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loopdev import abi
from loopdev.sim.block import BlockLayer, freeze_lockdep_in
from loopdev.sim.fs import FsType, register_filesystems
from loopdev.sim.hibernate import hibernate_init
from loopdev.sim.loop import LoopDriver, driver_class, release_of
from loopdev.sim.procfs import ProcRoot
from loopdev.sim.task import set_filp_close_hook
from loopdev.sim.uevent import UeventBus
from loopdev.sim.vfs import Inode, Mount, SuperBlock, Vfs, _exit_files_hook, mkdir_p

if TYPE_CHECKING:
    from loopdev.sim.sched import Scheduler

MACHINE_KEY = "loopdev.machine"


class Machine:
    """The kernel state of one model run."""

    def __init__(self, sched: Scheduler, variant: str, nr_loop: int = 8) -> None:
        self.sched = sched
        self.variant = variant
        set_filp_close_hook(_exit_files_hook)
        self.vfs = Vfs(self)
        self.uevents = UeventBus()
        self.fs_types: dict[str, FsType] = register_filesystems(self)
        self.super_blocks: dict[int, SuperBlock] = {}
        #: the in-memory trees of the model block filesystems, by (media, superblock bytes)
        self.fs_store: dict[object, Inode] = {}
        root = self.vfs.root_mnt.mnt_root
        for d in ("dev", "sys", "proc", "tmp", "mnt", "run"):
            mkdir_p(root, d)
        self.dev_root = self._pseudo_mount("devtmpfs", "devtmpfs", "/dev").mnt_root
        self.sys_root = self._pseudo_mount("sysfs", "sysfs", "/sys").mnt_root
        proc = self._pseudo_mount("proc", "proc", "/proc").mnt_root
        proc.children = None
        proc.dyn = ProcRoot(self)
        self._pseudo_mount("tmpfs", "tmpfs", "/tmp")
        for d in ("block", "class/block", "dev/block", "devices/virtual/block", "power"):
            mkdir_p(self.sys_root, d)
        self.sockfs = SuperBlock("sockfs", self.vfs.anon_dev())
        # the block layer of the release the variant stands for (its lockdep annotations)
        release = release_of(driver_class(variant))
        self.block = BlockLayer(self, freeze_lockdep=freeze_lockdep_in(release))
        from loopdev.sim.vfs import DEV_NULL, mknod

        mknod(self.dev_root, "null", abi.S_IFCHR | 0o666, DEV_NULL)
        self.loop: LoopDriver = driver_class(variant)(self)
        self.loop.loop_init(nr_loop)
        self.hibernate = hibernate_init(self)  # /sys/power/resume
        sched.registry[MACHINE_KEY] = self

    def _pseudo_mount(self, fstype: str, source: str, target: str) -> Mount:
        vfs = self.vfs
        sb = SuperBlock(fstype, vfs.anon_dev())
        mnt = Mount(vfs, sb, source, "rw")
        parent, mountpoint, _ = vfs.walk(target)
        vfs.attach_mnt(mnt, parent, mountpoint)
        return mnt


def machine_of(sched: Scheduler) -> Machine:
    """The machine booted in `sched`'s run."""
    m = sched.registry.get(MACHINE_KEY)
    if not isinstance(m, Machine):
        raise LookupError("no model machine booted in this run")
    return m


__all__ = ["MACHINE_KEY", "Machine", "machine_of"]
