"""taskwork: Tetsuo Handa, "[PATCH v2 2/2] loop: use task_work for autoclear operation"
(linux-block, 2022-01-07), in Jan Kara's reduced form (2022-01-14).

``loop_schedule_rundown`` queues the teardown as task_work of the closing user task
(TWA_RESUME), so it completes — including the ``fput`` of the backing file, itself task_work
of the same task — before ``close()``/``umount()`` returns to user space. Kernel threads fall
back to ``system_long_wq``.
"""

from __future__ import annotations

from loopdev.sim.loop.base import LoopDevice
from loopdev.sim.loop.v5_17_rc1 import V5_17rc1
from loopdev.sim.sched import kfunc
from loopdev.sim.task import TWA_RESUME, current, task_work_add
from loopdev.sim.workqueue import Work, queue_work, system_long_wq


class Taskwork(V5_17rc1):
    """Autoclear rundown as task_work of the last closer (workqueue for kthreads)."""

    variant = "taskwork"
    label = "taskwork"
    upstream = (
        'Tetsuo Handa, "[PATCH v2 2/2] loop: use task_work for autoclear operation" '
        "(2022-01-07), Jan Kara's reduced form"
    )

    @kfunc
    def loop_schedule_rundown(self, lo: LoopDevice) -> None:
        def loop_rundown_callbackfn() -> None:
            self.loop_rundown_workfn(lo)

        task = current()
        if not task.is_kthread and task_work_add(task, loop_rundown_callbackfn, TWA_RESUME) == 0:
            return

        def loop_rundown_workfn() -> None:
            self.loop_rundown_workfn(lo)

        lo.rundown_work = Work(
            loop_rundown_workfn, f"loop{lo.lo_number}:rundown_work", lock_class="&lo->rundown_work"
        )
        queue_work(system_long_wq, lo.rundown_work)
