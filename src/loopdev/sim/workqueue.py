"""Workqueues and kworkers.

A :class:`Workqueue` runs queued :class:`Work` items on up to `max_active` kworker kthreads,
spawned on demand; idle kworkers sleep. Running a work, flushing and destroying take part in
lockdep through the queue's `(wq_completion)name` map and each work's
`(work_completion)(name)` map, as in the kernel. The system workqueues are per run: the
module-level handles (`system_wq`, `system_long_wq`, `system_unbound_wq`) resolve to the running
scheduler's instance, so no state survives between runs.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from loopdev.sim import sched as _sched
from loopdev.sim.rcu import timer_delay
from loopdev.sim.sched import Thread, kfunc
from loopdev.sim.sync import (
    LockdepMap,
    WaitQueue,
    lock_map_acquire,
    lock_map_release,
    wait_event,
    wake_up,
)
from loopdev.sim.task import Task, current, kthread_run


class Work:
    """`struct work_struct`: a function to run on a workqueue."""

    def __init__(
        self, fn: Callable[[], object], name: str | None = None, *, lock_class: str | None = None
    ) -> None:
        self.fn = fn
        self.name = name or str(getattr(fn, "__name__", "work"))
        #: lockdep's class: the kernel names it after the work_struct's field (every loop
        #: device's ``&lo->rootcg_work`` is one class), the model by default after the work
        cls = f"(work_completion)({lock_class})" if lock_class else None
        self.map = LockdepMap(f"(work_completion)({self.name})", cls)
        self.pending = False
        self.running: Task | None = None
        self.wq: Workqueue | None = None
        self.seq = 0  # sequence number of the latest queueing
        self.done_seq = 0  # sequence number of the latest finished instance

    def __repr__(self) -> str:
        return f"Work({self.name})"


class DelayedWork(Work):
    """``struct delayed_work`` queued with ``schedule_delayed_work(dwork, 1)``: its timer
    fires one to two jiffies later (the wheel rounds up: ``rcu.timer_delay``), then ``fn``
    runs.
    Queue it with :func:`queue_work`; :func:`flush_delayed_work` fires the timer at once
    (``del_timer`` + queue), also while it is already ticking."""

    def __init__(self, fn: Callable[[], object], name: str | None = None) -> None:
        super().__init__(self._timer_then_run, name or str(getattr(fn, "__name__", "work")))
        self.work_fn = fn
        self.fire_now = False  # flush_delayed_work under way
        self.timer: Thread | None = None  # the kworker waiting for the timer to fire

    def _timer_then_run(self) -> None:
        if not self.fire_now:
            s = _sched.current_scheduler()
            self.timer = s.current
            try:
                s.block(self, timeout=timer_delay(1))
            finally:
                self.timer = None
        self.work_fn()


class Workqueue:
    """A workqueue with up to `max_active` kworkers running its works concurrently."""

    def __init__(self, name: str, max_active: int = 4) -> None:
        self.name = name
        self.max_active = max(1, max_active)
        self.map = LockdepMap(f"(wq_completion){name}")
        self.queue: list[tuple[int, Work]] = []
        self.inflight: dict[int, Work] = {}  # seq -> work, queued or running
        self.seq = 0
        self.workers: list[Task] = []
        self.idle = 0
        self.more_work = WaitQueue(f"{name}:more_work")
        self.flushed = WaitQueue(f"{name}:flush")
        self.draining = False
        self.destroyed = False

    def __repr__(self) -> str:
        return f"Workqueue({self.name})"

    def _runnable_work(self) -> tuple[int, Work] | None:
        for i, (seq, work) in enumerate(self.queue):
            if work.running is None:
                del self.queue[i]
                return seq, work
        return None

    def _has_work(self) -> bool:
        return self.destroyed or any(w.running is None for _, w in self.queue)

    def _spawn_worker(self) -> None:
        s = _sched.current_scheduler()
        n = next(s.state("workqueue.kworkers", itertools.count))
        self.workers.append(kthread_run(self._worker, f"kworker/u:{n}+{self.name}", daemon=True))

    def _worker(self) -> None:
        me = current()
        while True:
            self.idle += 1
            me.idle = True
            wait_event(self.more_work, self._has_work)
            me.idle = False
            self.idle -= 1
            item = self._runnable_work()
            if item is None:
                if self.destroyed:
                    return
                continue
            seq, work = item
            work.pending = False
            work.running = me
            process_one_work(self, work)
            work.running = None
            work.done_seq = max(work.done_seq, seq)
            del self.inflight[seq]
            wake_up(self.flushed)


class SystemWorkqueue:
    """A handle to a per-run system workqueue (`events`, `events_long`, ...)."""

    def __init__(self, name: str, max_active: int = 4) -> None:
        self.name = name
        self.max_active = max_active

    def get(self) -> Workqueue:
        """The running scheduler's instance."""
        s = _sched.current_scheduler()
        return s.state(("workqueue", self.name), lambda: Workqueue(self.name, self.max_active))

    def __repr__(self) -> str:
        return f"SystemWorkqueue({self.name})"


WorkqueueLike = Workqueue | SystemWorkqueue

system_wq = SystemWorkqueue("events")
system_long_wq = SystemWorkqueue("events_long")
system_unbound_wq = SystemWorkqueue("events_unbound")


def _resolve(wq: WorkqueueLike) -> Workqueue:
    return wq.get() if isinstance(wq, SystemWorkqueue) else wq


def alloc_workqueue(name: str, max_active: int = 4) -> Workqueue:
    """Create a workqueue (flags are not modelled)."""
    return Workqueue(name, max_active)


@kfunc
def process_one_work(wq: Workqueue, work: Work) -> None:
    """Run one work under the workqueue's and the work's lockdep maps."""
    lock_map_acquire(wq.map)
    lock_map_acquire(work.map)
    try:
        work.fn()
    finally:
        lock_map_release(work.map)
        lock_map_release(wq.map)


@kfunc
def queue_work(wq: WorkqueueLike, work: Work) -> bool:
    """Queue `work`; False if it is already pending (nothing queued)."""
    q = _resolve(wq)
    s = _sched.current_scheduler()
    s.yield_point(q.name)
    if work.pending:
        if s.tracing:
            s.trace.emit("point", "queue_work", f"{work.name} -> {q.name}: already pending")
        return False
    if q.destroyed or (q.draining and not _from_own_worker(q)):
        _sched.emit("fail", "WARNING: queue_work on a dying workqueue", f"{work.name} -> {q.name}")
        return False
    q.seq += 1
    work.pending = True
    work.wq = q
    work.seq = q.seq
    q.inflight[q.seq] = work
    q.queue.append((q.seq, work))
    if s.tracing:
        s.trace.emit("point", "queue_work", f"{work.name} -> {q.name}")
    if q.idle > 0:
        for t in q.more_work.waiters:
            s.wake(t)
        q.more_work.waiters.clear()
    elif len(q.workers) < q.max_active:
        q._spawn_worker()
    return True


def _from_own_worker(q: Workqueue) -> bool:
    cur = _sched.maybe_scheduler()
    return cur is not None and cur.current in q.workers


@kfunc
def flush_work(work: Work) -> bool:
    """Wait for the latest queueing of `work` to finish; False if it was idle."""
    lock_map_acquire(work.map)
    lock_map_release(work.map)
    q = work.wq
    if q is None or not (work.pending or work.running is not None):
        return False
    if q.max_active == 1:
        lock_map_acquire(q.map)
        lock_map_release(q.map)
    target = work.seq
    wait_event(q.flushed, lambda: work.done_seq >= target)
    return True


def flush_delayed_work(dwork: DelayedWork) -> bool:
    """``flush_delayed_work``: fire a pending timer at once, then :func:`flush_work`."""
    dwork.fire_now = True
    if dwork.timer is not None:
        _sched.wake(dwork.timer)
    try:
        return flush_work(dwork)
    finally:
        dwork.fire_now = False


@kfunc
def flush_workqueue(wq: WorkqueueLike) -> None:
    """Wait for every work queued before the call to finish."""
    q = _resolve(wq)
    lock_map_acquire(q.map)
    lock_map_release(q.map)
    target = q.seq
    wait_event(q.flushed, lambda: min(q.inflight, default=target + 1) > target)


@kfunc
def drain_workqueue(wq: WorkqueueLike) -> None:
    """Flush until empty; only the queue's own works may queue more meanwhile."""
    q = _resolve(wq)
    q.draining = True
    while True:
        flush_workqueue(q)
        if not q.inflight:
            break
    q.draining = False


@kfunc
def destroy_workqueue(wq: WorkqueueLike) -> None:
    """Drain, then stop the kworkers (they exit once idle)."""
    q = _resolve(wq)
    drain_workqueue(q)
    q.destroyed = True
    wake_up(q.more_work)


__all__ = [
    "SystemWorkqueue", "Work", "Workqueue", "alloc_workqueue", "destroy_workqueue",
    "drain_workqueue", "flush_work", "flush_workqueue", "process_one_work", "queue_work",
    "system_long_wq", "system_unbound_wq", "system_wq",
]  # fmt: skip
