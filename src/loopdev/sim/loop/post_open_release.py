"""post-open-release: Tetsuo Handa, "[PATCH 1/4] block: add post_open/post_release block device
callbacks" (2022-01-17, NAKed) and the loop patches on top of it.

The block layer calls ``->post_open``/``->post_release`` after dropping ``disk->open_mutex``.
The loop driver moves its release work — the ``lo_refcnt`` drop and the autoclear teardown —
into ``lo_post_release``, which runs synchronously in the closer's context but outside
``open_mutex``; ``lo_post_open`` waits until a running rundown has finished.
"""

from __future__ import annotations

from loopdev import abi
from loopdev.sim.block import Gendisk
from loopdev.sim.loop.base import Lo_bound, Lo_rundown, Lo_unbound, LoopDevice
from loopdev.sim.loop.v5_17_rc1 import V5_17rc1
from loopdev.sim.sched import kfunc
from loopdev.sim.sync import wait_event, wake_up_all


class PostOpenRelease(V5_17rc1):
    """Release work in ``->post_release``, open waits in ``->post_open``."""

    variant = "post-open-release"
    label = "post-open"
    upstream = (
        'Tetsuo Handa, "[PATCH 1/4] block: add post_open/post_release block device callbacks" '
        "(2022-01-17, NAKed)"
    )

    def release(self, disk: Gendisk) -> None:
        """``lo_release`` is gone: everything happens in ``lo_post_release``."""
        return None

    def post_open(self, disk: Gendisk) -> None:
        self.lo_post_open(disk)

    def post_release(self, disk: Gendisk) -> None:
        self.lo_post_release(disk)

    @kfunc
    def lo_post_open(self, disk: Gendisk) -> None:
        lo: LoopDevice = disk.private_data
        wait_event(self.loop_rundown_wq, lambda: lo._lo_state != Lo_rundown, killable=True)

    @kfunc
    def lo_post_release(self, disk: Gendisk) -> None:
        lo: LoopDevice = disk.private_data
        lo.lo_mutex.lock()
        if lo.lo_refcnt.dec_return():
            lo.lo_mutex.unlock()
            return
        if lo.lo_flags & abi.LO_FLAGS_AUTOCLEAR:
            if lo.lo_state != Lo_bound:
                lo.lo_mutex.unlock()
                return
            lo.lo_state = Lo_rundown
            lo.lo_mutex.unlock()
            self.loop_clr_fd_impl(lo, False)
            self.loop_rundown_completed(lo)
            return
        if lo.lo_state == Lo_bound:
            self.block.blk_mq_freeze_queue(lo.lo_disk.queue)
            self.block.blk_mq_unfreeze_queue(lo.lo_disk.queue)
        lo.lo_mutex.unlock()

    @kfunc
    def loop_rundown_completed(self, lo: LoopDevice) -> None:
        lo.lo_mutex.lock()
        lo.lo_state = Lo_unbound
        lo.lo_mutex.unlock()
        wake_up_all(self.loop_rundown_wq)
