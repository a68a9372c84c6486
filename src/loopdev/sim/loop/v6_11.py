"""v6.11 (current through 6.18): 18048c1af783 "loop: Fix a race between loop detach and loop
open".

``lo_open`` is back and refuses ``Lo_rundown`` and ``Lo_deleting`` with ENXIO. LOOP_CLR_FD never
tears down itself: it sets AUTOCLEAR and, if the caller is the only opener, ``Lo_rundown``; the
teardown always happens in the final ``lo_release``, under ``open_mutex``, in the last closer's
context.
"""

from __future__ import annotations

import errno

from loopdev import abi
from loopdev.sim.block import Gendisk
from loopdev.sim.loop.base import Lo_bound, Lo_deleting, Lo_rundown, LoopDevice
from loopdev.sim.loop.v5_19 import V5_19
from loopdev.sim.sched import kfunc
from loopdev.sim.vfs import err


class V6_11(V5_19):
    """18048c1af783: detach deferred to the last close; no opens during rundown."""

    variant = "v6.11"
    label = "6.11"
    upstream = '18048c1af783 "loop: Fix a race between loop detach and loop open"'

    def open(self, disk: Gendisk, mode: int) -> None:
        self.lo_open(disk.private_data, mode)

    @kfunc
    def lo_open(self, lo: LoopDevice, mode: int) -> None:
        lo.lo_mutex.lock()
        try:
            state = lo.lo_state
            if state in (Lo_deleting, Lo_rundown):
                raise err(errno.ENXIO, f"loop{lo.lo_number} is going away")
        finally:
            lo.lo_mutex.unlock()

    @kfunc
    def lo_release(self, disk: Gendisk) -> None:
        lo: LoopDevice = disk.private_data
        if self.disk_openers(disk) > 0:
            return
        # Clear the backing device information if this is the last close of a device that's
        # been marked for auto clear, or on which LOOP_CLR_FD has been called.
        lo.lo_mutex.lock()
        if lo.lo_state == Lo_bound and lo.lo_flags & abi.LO_FLAGS_AUTOCLEAR:
            lo.lo_state = Lo_rundown
        need_clear = lo.lo_state == Lo_rundown
        lo.lo_mutex.unlock()
        if need_clear:
            self.loop_clr_fd_impl(lo, True)

    @kfunc
    def loop_clr_fd(self, lo: LoopDevice) -> int:
        self.loop_global_lock_killable(lo, True)
        if lo.lo_state != Lo_bound:
            self.loop_global_unlock(lo, True)
            raise err(errno.ENXIO, f"loop{lo.lo_number} is not bound")
        # Mark the device for removing the backing device on last close. If we are the only
        # opener, also switch the state to rundown here to prevent new openers from coming in.
        lo.lo_flags |= abi.LO_FLAGS_AUTOCLEAR
        if self.disk_openers(lo.lo_disk) == 1:
            lo.lo_state = Lo_rundown
        self.loop_global_unlock(lo, True)
        return 0
