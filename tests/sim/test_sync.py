"""Primitives: mutual exclusion, wait queues with timeouts, completions, percpu rwsem."""

from __future__ import annotations

import functools
from collections.abc import Callable

from loopdev.sim.explore import explore
from loopdev.sim.sched import RunOutcome, Scheduler, Thread, now, point, sleep
from loopdev.sim.strategy import BoundedDFS, RandomWalk
from loopdev.sim.sync import (
    Completion,
    Mutex,
    PercpuRwsem,
    SpinLock,
    WaitQueue,
    wait_event,
    wake_up,
    wake_up_all,
)


def run(prog: Callable[[Scheduler], None], seed: int = 0) -> RunOutcome:
    s = Scheduler(RandomWalk(seed))
    prog(s)
    return s.run()


def test_mutex_excludes_under_every_interleaving() -> None:
    inside: list[int] = []
    overlaps: list[int] = []

    def prog(s: Scheduler) -> None:
        m = Mutex("m")

        def body() -> None:
            for _ in range(2):
                m.lock()
                inside.append(1)
                if len(inside) > 1:
                    overlaps.append(1)
                point("critical")
                inside.pop()
                m.unlock()

        for i in range(2):
            s.spawn(Thread(f"t{i}", body))

    res = explore(prog, BoundedDFS(None), 100_000, stop_on_failure=False)
    assert res.exhausted and res.outcomes == {"ok": res.runs} and res.runs > 20
    assert overlaps == []


def test_spinlock_aliases_and_trylock() -> None:
    got: list[bool] = []

    def prog(s: Scheduler) -> None:
        lk = SpinLock("lo_lock", "&lo->lo_lock")

        def body() -> None:
            lk.spin_lock()
            got.append(lk.trylock())
            lk.spin_unlock()
            got.append(lk.trylock())
            lk.unlock()

        s.spawn(Thread("t", body))

    out = run(prog)
    assert out.ok and got == [False, True]
    assert "lo_lock  spin" in out.trace.render_text()


def test_contended_spinlock_spins_it_does_not_sleep() -> None:
    """Waiting for a spinlock that another CPU holds is no sleep in atomic context; sleeping
    on a mutex while holding the spinlock is."""

    def prog(s: Scheduler) -> None:
        lk = SpinLock("lo_work_lock", "&lo->lo_work_lock")

        def body() -> None:
            for _ in range(3):
                lk.spin_lock()
                s.yield_point("lo_work_lock")
                lk.spin_unlock()

        for i in range(3):
            s.spawn(Thread(f"t{i}", body))

    res = explore(prog, BoundedDFS(2), 2_000, stop_on_failure=False)
    assert res.outcomes == {"ok": res.runs} and res.runs > 20
    assert res.lockdep == []

    def sleeper(s: Scheduler) -> None:
        lk = SpinLock("lo_lock", "&lo->lo_lock")
        m = Mutex("lo_mutex")

        def holder() -> None:
            m.lock()
            s.sleep(1.0)
            m.unlock()

        def body() -> None:
            s.sleep(0.5)
            lk.spin_lock()
            m.lock()
            m.unlock()
            lk.spin_unlock()

        s.spawn(Thread("holder", holder))
        s.spawn(Thread("t", body))

    out = run(sleeper)
    assert out.ok and [r.kind for r in out.lockdep] == ["atomic-sleep"]


def test_wait_event_wakes_on_condition_and_times_out_on_the_virtual_clock() -> None:
    results: list[tuple[str, bool, float]] = []

    def prog(s: Scheduler) -> None:
        wq = WaitQueue("lo->wq")
        flag = {"set": False}

        def waiter(name: str, timeout: float) -> Thread:
            def body() -> None:
                ok = wait_event(wq, lambda: flag["set"], timeout=timeout)
                results.append((name, ok, now()))

            return Thread(name, body)

        def setter() -> None:
            sleep(5.0)
            flag["set"] = True
            wake_up(wq)

        s.spawn(waiter("patient", 10.0))
        s.spawn(waiter("hasty", 1.0))
        s.spawn(Thread("setter", setter))

    assert run(prog).ok
    assert sorted(results) == [("hasty", False, 1.0), ("patient", True, 5.0)]


def test_wake_up_all_wakes_every_waiter() -> None:
    woke: list[str] = []

    def prog(s: Scheduler) -> None:
        wq = WaitQueue("wq")
        go = {"v": False}

        def waiter(name: str) -> None:
            wait_event(wq, lambda: go["v"])
            woke.append(name)

        for i in range(3):
            s.spawn(Thread(f"w{i}", functools.partial(waiter, f"w{i}")))

        def waker() -> None:
            sleep(1)
            go["v"] = True
            wake_up_all(wq)

        s.spawn(Thread("waker", waker))

    assert run(prog).ok
    assert sorted(woke) == ["w0", "w1", "w2"]


def test_completion_counts_and_complete_all() -> None:
    log: list[str] = []

    def prog(s: Scheduler) -> None:
        c = Completion("rundown")

        def waiter(i: int) -> Thread:
            def body() -> None:
                c.wait_for_completion()
                log.append(f"w{i}")

            return Thread(f"w{i}", body)

        def timed() -> None:
            log.append(f"timed:{c.wait_for_completion_timeout(0.5)}")

        def completer() -> None:
            sleep(1)
            c.complete()
            sleep(1)
            c.complete_all()

        for i in range(3):
            s.spawn(waiter(i))
        s.spawn(Thread("timed", timed))
        s.spawn(Thread("completer", completer))

    out = run(prog, seed=4)
    assert out.ok
    assert log[0] == "timed:False"
    assert sorted(log[1:]) == ["w0", "w1", "w2"]


def test_percpu_rwsem_writer_waits_for_readers_and_blocks_new_ones() -> None:
    events: list[str] = []

    def prog(s: Scheduler) -> None:
        sb = PercpuRwsem("sb_writers")

        def reader() -> None:
            sb.down_read()
            events.append(f"read@{now():g}")
            sleep(2)
            sb.up_read()

        def freezer() -> None:
            sleep(1)
            sb.down_write()
            events.append(f"frozen@{now():g}")
            sleep(3)
            sb.up_write()

        def late_reader() -> None:
            sleep(1.5)
            sb.down_read()
            events.append(f"late@{now():g}")
            sb.up_read()

        s.spawn(Thread("reader", reader))
        s.spawn(Thread("freezer", freezer))
        s.spawn(Thread("late", late_reader))

    assert run(prog).ok
    assert events == ["read@0", "frozen@2", "late@5"]


def test_deadlock_on_rwsem_names_the_readers() -> None:
    def prog(s: Scheduler) -> None:
        sb = PercpuRwsem("sb_writers")
        m = Mutex("m")

        def reader() -> None:
            sb.down_read()
            m.lock()

        def writer() -> None:
            m.lock()
            sleep(1)
            sb.down_write()

        s.spawn(Thread("reader", reader))
        s.spawn(Thread("writer", writer))

    res = explore(prog, RandomWalk(0), 50)
    out = res.failures[0]
    assert out.kind == "deadlock"
    assert {str(w) for w in out.waits} == {
        "reader waits for Mutex(m) held by writer",
        "writer waits for PercpuRwsem(sb_writers) held by reader",
    }
