"""v5.17: bf23747ee053 'Revert "loop: make autoclear operation asynchronous"' (5.17-rc4).

Back to a synchronous ``__loop_clr_fd(lo, true)`` from ``lo_release`` under ``open_mutex``
(6050fa4c stays: ``lo_mutex`` is not held across the teardown); ``Lo_unbound`` is set under
``lo_mutex`` and the backing file is ``fput`` afterwards, in the closer's context (task_work).
"""

from __future__ import annotations

import errno

from loopdev import abi
from loopdev.sim.loop.base import Lo_bound, Lo_rundown, Lo_unbound, LoopDevice
from loopdev.sim.loop.v5_17_rc1 import V5_17rc1
from loopdev.sim.sched import emit, kfunc
from loopdev.sim.vfs import err, fput
from loopdev.sim.workqueue import destroy_workqueue


class V5_17(V5_17rc1):
    """bf23747ee053: synchronous autoclear again."""

    variant = "v5.17"
    label = "5.17"
    upstream = 'bf23747ee053 \'Revert "loop: make autoclear operation asynchronous"\''

    def release_rundown(self, lo: LoopDevice) -> None:
        """bf23747ee053: ``__loop_clr_fd(lo, true)`` directly from ``lo_release``."""
        self.loop_clr_fd_impl(lo, True)

    @kfunc("__loop_clr_fd")
    def loop_clr_fd_impl(self, lo: LoopDevice, release: bool) -> int:
        """bf23747ee053: ``open_mutex`` for the rescan only when not called from release;
        ``Lo_unbound`` under ``lo_mutex``, then ``fput``."""
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
            self.loop_reread_partitions_locked(lo, need_open_mutex=not release)
        self.reset_flags(lo)
        lo.lo_mutex.lock()
        lo.lo_state = Lo_unbound
        lo.lo_mutex.unlock()
        # Need not hold lo_mutex to fput backing file.
        if filp is not None:
            fput(filp)
        return 0

    @kfunc
    def loop_clr_fd(self, lo: LoopDevice) -> int:
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
        return 0
