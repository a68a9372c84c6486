"""Workqueues: queueing, pending dedup, flush, destroy, lockdep maps, per-run state."""

from __future__ import annotations

from collections.abc import Callable

from loopdev.sim.explore import explore
from loopdev.sim.sched import RunOutcome, Scheduler, now, sleep
from loopdev.sim.strategy import BoundedDFS, RandomWalk
from loopdev.sim.sync import Mutex
from loopdev.sim.task import Task
from loopdev.sim.workqueue import (
    Work,
    Workqueue,
    destroy_workqueue,
    flush_work,
    flush_workqueue,
    queue_work,
    system_long_wq,
    system_wq,
)


def run(prog: Callable[[Scheduler], None], seed: int = 0) -> RunOutcome:
    s = Scheduler(RandomWalk(seed))
    prog(s)
    return s.run()


def dedup_and_flush(seed: int) -> tuple[RunOutcome, list[str]]:
    log: list[str] = []
    ran: list[float] = []

    def rundown() -> None:
        sleep(1)
        ran.append(now())

    def prog(s: Scheduler) -> None:
        work = Work(rundown, "lo->rundown_work")

        def main() -> None:
            log.append(f"queued:{queue_work(system_long_wq, work)}")
            again = queue_work(system_long_wq, work)  # False unless the worker took it
            log.append(f"flushed:{flush_work(work)}")
            log.append(f"ran:{len(ran)} again:{again}")
            log.append(f"idle flush:{flush_work(work)}")

        s.spawn(Task("losetup", main))

    return run(prog, seed), log


def test_queue_work_dedups_pending_and_flush_work_waits() -> None:
    for seed in range(30):
        out, log = dedup_and_flush(seed)
        assert out.ok
        assert log[0] == "queued:True" and log[1] == "flushed:True"
        assert log[2] in ("ran:1 again:False", "ran:2 again:True")
        assert log[3] == "idle flush:False"
        assert any(e.thread.startswith("kworker/") for e in out.trace.events)


def flush_all(seed: int) -> tuple[RunOutcome, list[str]]:
    done: list[str] = []

    def item(i: int) -> Work:
        def fn() -> None:
            sleep(i * 0.1)
            done.append(f"w{i}")

        return Work(fn, f"w{i}")

    def prog(s: Scheduler) -> None:
        wq = Workqueue("loop0", max_active=2)

        def main() -> None:
            for i in range(4):
                queue_work(wq, item(i))
            flush_workqueue(wq)
            done.append("flushed")

        s.spawn(Task("main", main))

    return run(prog, seed), done


def test_flush_workqueue_waits_for_everything_queued_before() -> None:
    for seed in range(20):
        out, done = flush_all(seed)
        assert out.ok
        assert done[-1] == "flushed" and sorted(done[:-1]) == ["w0", "w1", "w2", "w3"]


def test_destroy_drains_and_refuses_new_work() -> None:
    log: list[str] = []

    def prog(s: Scheduler) -> None:
        wq = Workqueue("loop0", max_active=1)

        def chained() -> None:
            log.append("first")
            queue_work(wq, Work(lambda: log.append("chained"), "chained"))

        def main() -> None:
            queue_work(wq, Work(chained, "first"))
            destroy_workqueue(wq)
            log.append("destroyed")
            log.append(f"late:{queue_work(wq, Work(lambda: log.append('never'), 'late'))}")

        s.spawn(Task("main", main))

    out = run(prog)
    assert out.ok  # kworkers exited or sleep as daemons
    assert log == ["first", "chained", "destroyed", "late:False"]


def test_flush_under_a_lock_the_work_takes_is_reported_and_can_deadlock() -> None:
    def prog(s: Scheduler) -> None:
        m = Mutex("lo_mutex", "&lo->lo_mutex")
        wq = Workqueue("loop0", max_active=1)

        def io() -> None:
            m.lock()
            m.unlock()

        def clr_fd() -> None:
            queue_work(wq, Work(io, "lo->work"))
            m.lock()
            flush_workqueue(wq)
            m.unlock()

        s.spawn(Task("losetup", clr_fd))

    res = explore(prog, BoundedDFS(2), 500, stop_on_failure=False)
    assert res.exhausted
    assert res.outcomes.get("deadlock", 0) > 0 and res.outcomes.get("ok", 0) > 0
    assert res.lockdep
    for rep in res.lockdep:
        assert {"(wq_completion)loop0", "&lo->lo_mutex"} <= set(rep.classes)


def test_system_workqueues_are_per_run() -> None:
    seen: list[int] = []

    def prog(s: Scheduler) -> None:
        def main() -> None:
            wq = system_wq.get()
            seen.append(wq.seq)
            queue_work(system_wq, Work(lambda: None, "w"))

        s.spawn(Task("main", main))

    for seed in range(3):
        assert run(prog, seed).ok
    assert seen == [0, 0, 0]


def test_idle_kworkers_stay_out_of_the_wait_for_graph() -> None:
    def prog(s: Scheduler) -> None:
        m = Mutex("lo_mutex")

        def main() -> None:
            queue_work(system_wq, Work(lambda: None, "noop"))
            sleep(1)
            m.lock()
            m.lock()  # self-deadlock

        s.spawn(Task("losetup", main))

    out = run(prog)
    assert out.kind == "deadlock"
    assert [str(w) for w in out.waits] == [
        "losetup/100 waits for Mutex(lo_mutex) held by losetup/100"
    ]
