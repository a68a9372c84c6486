"""A deadlocked run's printout: the wait-for graph as it was when the run stopped (before the
abandoned threads are unwound), and no lockdep warnings made up by that unwinding."""

from __future__ import annotations

from loopdev.sim.explore import explore
from loopdev.sim.sched import Scheduler
from loopdev.sim.strategy import RandomWalk
from loopdev.sim.sync import Mutex
from loopdev.sim.task import Task, current


def abba_in_syscalls(s: Scheduler) -> None:
    """Two tasks take A and B in opposite orders inside system calls, with ``with`` blocks
    (so unwinding them releases the locks and returns from the syscalls)."""
    a, b = Mutex("A"), Mutex("B")

    def body(first: Mutex, second: Mutex) -> None:
        with first, second:
            pass

    def ab() -> None:
        current().syscall("ab", body, a, b)

    def ba() -> None:
        current().syscall("ba", body, b, a)

    s.spawn(Task("t1", ab))
    s.spawn(Task("t2", ba))


def test_deadlock_printout_keeps_holders_and_gains_no_teardown_reports() -> None:
    res = explore(abba_in_syscalls, RandomWalk(0), 200, stop_on_failure=True)
    assert res.failures, res.summary()
    out = res.failures[0]
    assert out.kind == "deadlock", out.describe()
    edges = {str(w) for w in out.waits}
    assert len(edges) == 2 and all(" held by t" in e for e in edges), edges
    assert len(out.cycle) == 3
    kinds = {r.kind for r in out.lockdep}
    assert "user-return" not in kinds, [r.title for r in out.lockdep]
    assert kinds == {"circular"}
