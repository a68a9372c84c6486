"""post-release-2026: Tetsuo Handa, "[PATCH v5 2/2] loop: Perform __loop_clr_fd() from
post_release callback" (proposal), on top of the v6.11 driver.

``lo_release`` (under ``open_mutex``) only marks ``Lo_rundown``; the block layer's
``->post_release``, called after ``open_mutex`` is dropped, runs the teardown: drain and freeze
the queue without ``open_mutex``, then take ``open_mutex`` for the media change and the
partition rescan. ``lo_open`` keeps refusing ``Lo_rundown`` (ENXIO).
"""

from __future__ import annotations

from loopdev import abi
from loopdev.sim.block import Gendisk
from loopdev.sim.loop.base import Lo_bound, Lo_rundown, Lo_unbound, LoopDevice
from loopdev.sim.loop.v6_11 import V6_11
from loopdev.sim.sched import kfunc
from loopdev.sim.vfs import fput


class PostRelease2026(V6_11):
    """Teardown from ``->post_release``, outside ``open_mutex``."""

    variant = "post-release-2026"
    label = "post-rel26"
    upstream = (
        "Tetsuo Handa, "
        '"[PATCH v5 2/2] loop: Perform __loop_clr_fd() from post_release callback" (proposal)'
    )

    def post_release(self, disk: Gendisk) -> None:
        self.lo_post_release(disk)

    @kfunc
    def lo_release(self, disk: Gendisk) -> None:
        lo: LoopDevice = disk.private_data
        if self.disk_openers(disk) > 0:
            return
        lo.lo_mutex.lock()
        if lo.lo_state == Lo_bound and lo.lo_flags & abi.LO_FLAGS_AUTOCLEAR:
            lo.lo_state = Lo_rundown
        lo.lo_mutex.unlock()

    @kfunc
    def lo_post_release(self, disk: Gendisk) -> None:
        lo: LoopDevice = disk.private_data
        lo.lo_mutex.lock()
        need_clear = lo.lo_state == Lo_rundown and not lo.rundown_claimed
        if need_clear:
            lo.rundown_claimed = True
        lo.lo_mutex.unlock()
        if need_clear:
            self.loop_clr_fd_impl(lo, False)

    @kfunc("__loop_clr_fd")
    def loop_clr_fd_impl(self, lo: LoopDevice, release: bool) -> int:
        """Drain + freeze without ``open_mutex``, then ``open_mutex`` for the rest."""
        disk = lo.lo_disk
        q = disk.queue
        self.block.blk_mq_freeze_queue(q)
        filp = self.clear_backing(lo)
        self.block.blk_mq_unfreeze_queue(q)
        disk.open_mutex.lock()
        self.block.disk_force_media_change(disk)
        if lo.lo_flags & abi.LO_FLAGS_PARTSCAN:
            self.loop_reread_partitions_locked(lo, need_open_mutex=False)
        disk.open_mutex.unlock()
        self.reset_flags(lo)
        lo.lo_mutex.lock()
        lo.lo_state = Lo_unbound
        lo.rundown_claimed = False
        lo.lo_mutex.unlock()
        if filp is not None:
            fput(filp)
        return 0
