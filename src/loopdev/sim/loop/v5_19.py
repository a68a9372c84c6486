"""v5.19: the hch/Tetsuo series 46dc967445bd, 1fe0b1acb14d, d2c7f56f8b52, 158eaeba4b8e,
a0e286b6a5b6, d292dc80686a.

* a0e286b6a5b6 "loop: remove lo_refcount and avoid lo_mutex in ->open": no ``lo_open``; the
  opener count is the block layer's ``disk_openers()``.
* 158eaeba4b8e "loop: avoid loop_validate_mutex/lo_mutex in ->release": ``loop_clr_fd`` takes
  ``loop_validate_mutex`` + ``lo_mutex`` instead of ``__loop_clr_fd``.
* 1fe0b1acb14d / 46dc967445bd: no queue freeze on the final release (no I/O can be in flight
  without openers), none for non-final closes either.
* d2c7f56f8b52 / d292dc80686a: ``lo->workqueue`` lives as long as the disk and is destroyed in
  ``lo_free_disk``, not in ``__loop_clr_fd`` — the ``open_mutex → (wq_completion)`` chain is
  gone.
"""

from __future__ import annotations

import errno

from loopdev import abi
from loopdev.sim.block import Gendisk
from loopdev.sim.loop.base import Lo_bound, Lo_rundown, Lo_unbound, LoopDevice
from loopdev.sim.loop.v5_17 import V5_17
from loopdev.sim.sched import kfunc
from loopdev.sim.vfs import err, fput
from loopdev.sim.workqueue import alloc_workqueue, destroy_workqueue


class V5_19(V5_17):
    """No ``lo_open``/``lo_refcnt``; workqueue per disk; no freeze from ``->release``."""

    variant = "v5.19"
    label = "5.19"
    upstream = (
        'a0e286b6a5b6 "loop: remove lo_refcount and avoid lo_mutex in ->open" and its series '
        "(46dc967445bd, 1fe0b1acb14d, d2c7f56f8b52, 158eaeba4b8e, d292dc80686a)"
    )

    def open(self, disk: Gendisk, mode: int) -> None:
        """a0e286b6a5b6: ``lo_fops`` has no ``->open``."""
        return None

    @kfunc
    def lo_release(self, disk: Gendisk) -> None:
        """a0e286b6a5b6: return while ``disk_openers() > 0``; no queue freeze."""
        lo: LoopDevice = disk.private_data
        if self.disk_openers(disk) > 0:
            return
        lo.lo_mutex.lock()
        if lo.lo_state == Lo_bound and lo.lo_flags & abi.LO_FLAGS_AUTOCLEAR:
            lo.lo_state = Lo_rundown
            lo.lo_mutex.unlock()
            # In autoclear mode, stop the loop thread and remove configuration after last close.
            self.loop_clr_fd_impl(lo, True)
            return
        lo.lo_mutex.unlock()

    @kfunc("__loop_clr_fd")
    def loop_clr_fd_impl(self, lo: LoopDevice, release: bool) -> int:
        """Freeze only when unbinding on a live file descriptor; the workqueue stays."""
        q = lo.lo_disk.queue
        if not release:
            self.block.blk_mq_freeze_queue(q)
        filp = self.clear_backing(lo)
        if not release:
            self.block.blk_mq_unfreeze_queue(q)
        self.block.disk_force_media_change(lo.lo_disk)
        if lo.lo_flags & abi.LO_FLAGS_PARTSCAN:
            self.loop_reread_partitions_locked(lo, need_open_mutex=not release)
        self.reset_flags(lo)
        lo.lo_mutex.lock()
        lo.lo_state = Lo_unbound
        lo.lo_mutex.unlock()
        if filp is not None:
            fput(filp)
        return 0

    @kfunc
    def loop_clr_fd(self, lo: LoopDevice) -> int:
        """158eaeba4b8e + a0e286b6a5b6: global lock; ``disk_openers() > 1`` → autoclear only."""
        self.loop_global_lock_killable(lo, True)
        if lo.lo_state != Lo_bound:
            self.loop_global_unlock(lo, True)
            raise err(errno.ENXIO, f"loop{lo.lo_number} is not bound")
        if self.disk_openers(lo.lo_disk) > 1:
            lo.lo_flags |= abi.LO_FLAGS_AUTOCLEAR
            self.loop_global_unlock(lo, True)
            return 0
        lo.lo_state = Lo_rundown
        self.loop_global_unlock(lo, True)
        self.loop_clr_fd_impl(lo, False)
        return 0

    def loop_alloc_workqueue(self, lo: LoopDevice) -> None:
        """d292dc80686a: allocate ``lo->workqueue`` once, keep it across bindings."""
        if lo.workqueue is None:
            lo.workqueue = alloc_workqueue(f"loop{lo.lo_number}", max_active=1)

    @kfunc
    def lo_free_disk(self, disk: Gendisk) -> None:
        """d2c7f56f8b52 + d292dc80686a: the workqueue dies with the disk."""
        lo: LoopDevice = disk.private_data
        if lo.workqueue is not None:
            destroy_workqueue(lo.workqueue)
            lo.workqueue = None

    def loop_busy_for_remove(self, lo: LoopDevice) -> bool:
        """a0e286b6a5b6: ``disk_openers()`` instead of ``lo_refcnt``."""
        return self.disk_openers(lo.lo_disk) > 0
