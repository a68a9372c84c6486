"""v5.17-rc1: 6050fa4c "loop: don't hold lo_mutex during __loop_clr_fd()" and 322c4293
"loop: make autoclear operation asynchronous".

The last close of an autoclear device no longer tears down in ``lo_release``: it queues
``lo->rundown_work`` on ``system_long_wq`` and returns at once. The kworker runs
``__loop_clr_fd``, whose ``fput`` of the backing file comes from a kernel thread and so goes
through ``delayed_fput`` — one more asynchronous hop before the backing file's filesystem is
released.
"""

from __future__ import annotations

import errno

from loopdev import abi
from loopdev.sim.loop.base import Lo_bound, Lo_rundown, Lo_unbound, LoopDevice
from loopdev.sim.loop.v5_16 import V5_16
from loopdev.sim.sched import emit, kfunc
from loopdev.sim.vfs import err, fput
from loopdev.sim.workqueue import Work, destroy_workqueue, queue_work, system_long_wq


class V5_17rc1(V5_16):
    """6050fa4c + 322c4293: asynchronous autoclear through ``system_long_wq``."""

    variant = "v5.17-rc1"
    label = "5.17-rc1"
    upstream = (
        '6050fa4c "loop: don\'t hold lo_mutex during __loop_clr_fd()", '
        '322c4293 "loop: make autoclear operation asynchronous"'
    )

    def release_rundown(self, lo: LoopDevice) -> None:
        """322c4293: ``lo_release`` calls ``loop_schedule_rundown(lo)`` and returns."""
        self.loop_schedule_rundown(lo)

    @kfunc("__loop_clr_fd")
    def loop_clr_fd_impl(self, lo: LoopDevice, release: bool) -> int:
        """6050fa4c: ``lo_mutex`` is taken only to check the state; the teardown runs without
        it, the partition rescan takes ``open_mutex`` itself, and ``fput`` comes last."""
        # Flush loop_configure() and loop_change_fd().
        self.loop_validate_mutex.lock()
        self.loop_validate_mutex.unlock()
        lo.lo_mutex.lock()
        if lo.lo_state != Lo_rundown:
            emit("fail", "BUG: __loop_clr_fd", "lo_state != Lo_rundown")
        lo.lo_mutex.unlock()
        q = lo.lo_disk.queue
        self.block.blk_mq_freeze_queue(q)
        if lo.workqueue is not None:
            destroy_workqueue(lo.workqueue)
            lo.workqueue = None
        filp = self.clear_backing(lo)
        self.block.blk_mq_unfreeze_queue(q)
        self.block.disk_force_media_change(lo.lo_disk)
        if lo.lo_flags & abi.LO_FLAGS_PARTSCAN:
            self.loop_reread_partitions_locked(lo, need_open_mutex=True)
        self.reset_flags(lo)
        if filp is not None:
            fput(filp)
        return 0

    @kfunc
    def loop_rundown_completed(self, lo: LoopDevice) -> None:
        lo.lo_mutex.lock()
        lo.lo_state = Lo_unbound
        lo.lo_mutex.unlock()

    @kfunc
    def loop_rundown_workfn(self, lo: LoopDevice) -> None:
        self.loop_clr_fd_impl(lo, True)
        self.loop_rundown_completed(lo)

    @kfunc
    def loop_schedule_rundown(self, lo: LoopDevice) -> None:
        def loop_rundown_workfn() -> None:
            self.loop_rundown_workfn(lo)

        lo.rundown_work = Work(
            loop_rundown_workfn, f"loop{lo.lo_number}:rundown_work", lock_class="&lo->rundown_work"
        )
        queue_work(system_long_wq, lo.rundown_work)

    @kfunc
    def loop_clr_fd(self, lo: LoopDevice) -> int:
        """6050fa4c: ``__loop_clr_fd`` then ``loop_rundown_completed``."""
        lo.lo_mutex.lock()
        if lo.lo_state != Lo_bound:
            lo.lo_mutex.unlock()
            raise err(errno.ENXIO, f"loop{lo.lo_number} is not bound")
        if lo.lo_refcnt.read() > 1:
            lo.lo_flags |= abi.LO_FLAGS_AUTOCLEAR
            lo.lo_mutex.unlock()
            return 0
        lo.lo_state = Lo_rundown
        lo.lo_mutex.unlock()
        self.loop_clr_fd_impl(lo, False)
        self.loop_rundown_completed(lo)
        return 0
