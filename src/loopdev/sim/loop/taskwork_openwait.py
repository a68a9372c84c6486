"""taskwork-openwait: Tetsuo Handa's full "[PATCH v2 2/2] loop: use task_work for autoclear
operation" (2022-01-07): as :mod:`.taskwork`, and ``lo_open`` also queues a task_work that
waits, before ``open()`` returns to user space, until the device has left ``Lo_rundown``."""

from __future__ import annotations

from loopdev.sim.loop.base import Lo_rundown, Lo_unbound, LoopDevice
from loopdev.sim.loop.taskwork import Taskwork
from loopdev.sim.sched import kfunc
from loopdev.sim.sync import wait_event, wake_up_all
from loopdev.sim.task import TWA_RESUME, current, task_work_add


class TaskworkOpenwait(Taskwork):
    """``lo_open`` waits (as task_work) for a running rundown to finish."""

    variant = "taskwork-openwait"
    label = "tw+wait"
    upstream = (
        'Tetsuo Handa, "[PATCH v2 2/2] loop: use task_work for autoclear operation" '
        "(2022-01-07)"
    )

    @kfunc
    def lo_open(self, lo: LoopDevice, mode: int) -> None:
        super().lo_open(lo, mode)
        task = current()
        if task.is_kthread:
            return

        def loop_open_callbackfn() -> None:
            self.loop_wait_rundown(lo)

        task_work_add(task, loop_open_callbackfn, TWA_RESUME)

    @kfunc
    def loop_wait_rundown(self, lo: LoopDevice) -> None:
        wait_event(self.loop_rundown_wq, lambda: lo._lo_state != Lo_rundown, killable=True)

    @kfunc
    def loop_rundown_completed(self, lo: LoopDevice) -> None:
        lo.lo_mutex.lock()
        lo.lo_state = Lo_unbound
        lo.lo_mutex.unlock()
        wake_up_all(self.loop_rundown_wq)
