"""Lockdep: cycles reported in the kernel's shape, read-lock rules, dedup, persistence."""

from __future__ import annotations

from loopdev.sim.explore import explore
from loopdev.sim.lockdep import LockGraph
from loopdev.sim.sched import Scheduler, Thread, kfunc, sleep
from loopdev.sim.strategy import BoundedDFS, RandomWalk
from loopdev.sim.sync import (
    LockdepMap,
    Mutex,
    PercpuRwsem,
    SpinLock,
    lock_map_acquire,
    lock_map_acquire_read,
    lock_map_release,
)
from loopdev.sim.task import Task, current


def sequential_abba(s: Scheduler) -> None:
    """ABBA, but t2 only starts after t1 is done: never deadlocks."""
    a, b = Mutex("lo_mutex", "&lo->lo_mutex"), Mutex("open_mutex", "&disk->open_mutex")

    @kfunc
    def lo_open() -> None:
        b.lock()
        a.lock()
        a.unlock()
        b.unlock()

    @kfunc
    def __loop_clr_fd() -> None:
        a.lock()
        b.lock()
        b.unlock()
        a.unlock()

    def second() -> None:
        s.join(first)
        lo_open()

    first = s.spawn(Thread("losetup", __loop_clr_fd))
    s.spawn(Thread("udevd", second))


def test_abba_reported_even_without_deadlock() -> None:
    res = explore(sequential_abba, BoundedDFS(None), 1000, stop_on_failure=False)
    assert res.exhausted
    assert res.outcomes == {"ok": res.runs}
    assert len(res.lockdep) == 1
    text = res.lockdep[0].format()
    lines = text.splitlines()
    assert lines[2] == "WARNING: possible circular locking dependency detected"
    assert "udevd/2 is trying to acquire lock:" in text
    assert "(&lo->lo_mutex){+.+.}-{3:3}, at: lo_open" in text
    assert "but task is already holding lock:" in text
    assert "which lock already depends on the new lock." in text
    assert "the existing dependency chain (in reverse order) is:" in text
    i = lines.index("-> #1 (&disk->open_mutex){+.+.}-{3:3}:")
    assert lines[i + 1 : i + 3] == ["       mutex_lock", "       __loop_clr_fd"]
    j = lines.index("-> #0 (&lo->lo_mutex){+.+.}-{3:3}:")
    assert lines[j + 1 : j + 3] == ["       mutex_lock", "       lo_open"]
    assert "Chain exists of:" not in text  # a direct two-lock inversion
    scenario = lines[lines.index(" Possible unsafe locking scenario:") :]
    assert scenario[2:8] == [
        "       CPU0                    CPU1",
        "       ----                    ----",
        "  lock(&disk->open_mutex);",
        "                               lock(&lo->lo_mutex);",
        "                               lock(&disk->open_mutex);",
        "  lock(&lo->lo_mutex);",
    ]
    assert " *** DEADLOCK ***" in lines
    assert "1 lock held by udevd/2:" in lines


def three_lock_chain(s: Scheduler) -> None:
    """wq flush under lo_mutex; a work takes open_mutex; open takes lo_mutex (the §3.6 shape)."""
    lo = Mutex("lo_mutex", "&lo->lo_mutex")
    om = Mutex("open_mutex", "&disk->open_mutex")
    wq = LockdepMap("wq", "(wq_completion)loop0")

    @kfunc
    def lo_open() -> None:
        om.lock()
        lo.lock()
        lo.unlock()
        om.unlock()

    @kfunc
    def loop_process_work() -> None:
        lock_map_acquire(wq)
        om.lock()
        om.unlock()
        lock_map_release(wq)

    @kfunc
    def __loop_clr_fd() -> None:
        lo.lock()
        lock_map_acquire(wq)
        lock_map_release(wq)
        lo.unlock()

    def seq() -> None:
        lo_open()
        loop_process_work()
        __loop_clr_fd()

    s.spawn(Thread("syz", seq))


def test_three_lock_cycle_prints_the_chain() -> None:
    s = Scheduler(RandomWalk(0))
    three_lock_chain(s)
    out = s.run()
    assert out.ok and len(out.lockdep) == 1
    text = out.lockdep[0].format()
    assert (
        "Chain exists of:\n  (wq_completion)loop0 --> &disk->open_mutex --> &lo->lo_mutex" in text
    )
    assert "-> #2 (&lo->lo_mutex){+.+.}-{3:3}:" in text
    assert "-> #1 (&disk->open_mutex){+.+.}-{3:3}:" in text
    assert "-> #0 ((wq_completion)loop0){+.+.}-{0:0}:" in text
    assert text.index("-> #2") < text.index("-> #1") < text.index("-> #0")
    assert "  lock(&lo->lo_mutex);\n" in text
    assert "  lock((wq_completion)loop0);\n" in text
    assert out.trace.of_kind("lockdep")


def read_cycle(recursive: bool) -> object:
    def prog(s: Scheduler) -> None:
        m = Mutex("m")
        rmap = LockdepMap("map")

        def first() -> None:  # m -> map(read)
            m.lock()
            (lock_map_acquire_read if recursive else lock_map_acquire)(rmap)
            lock_map_release(rmap)
            m.unlock()

        def second() -> None:  # map(read) -> m
            lock_map_acquire_read(rmap)
            m.lock()
            m.unlock()
            lock_map_release(rmap)

        def seq() -> None:
            first()
            second()

        s.spawn(Thread("t", seq))

    return prog


def test_recursive_read_read_pair_is_not_a_cycle() -> None:
    s = Scheduler(RandomWalk(0))
    read_cycle(True)(s)  # type: ignore[operator]
    assert s.run().lockdep == []


def test_exclusive_against_read_is_a_cycle() -> None:
    s = Scheduler(RandomWalk(0))
    read_cycle(False)(s)  # type: ignore[operator]
    out = s.run()
    assert len(out.lockdep) == 1
    assert "rlock(map);" in out.lockdep[0].format()


def test_percpu_rwsem_readers_block_behind_a_writer_so_read_cycles_count() -> None:
    """sb_start_write (non-recursive read) -> m and m -> sb_start_write is a real inversion
    when a freezer (down_write) waits in between."""

    def prog(s: Scheduler) -> None:
        sb = PercpuRwsem("sb_writers", "sb_writers#3")
        m = Mutex("m")

        def seq() -> None:
            sb.down_read()
            m.lock()
            m.unlock()
            sb.up_read()
            m.lock()
            sb.down_read()
            sb.up_read()
            m.unlock()

        s.spawn(Thread("t", seq))

    s = Scheduler(RandomWalk(0))
    prog(s)
    out = s.run()
    assert [r.kind for r in out.lockdep] == ["circular"]


def test_recursive_locking_reported() -> None:
    def prog(s: Scheduler) -> None:
        a1, a2 = Mutex("lo0", "&lo->lo_mutex"), Mutex("lo1", "&lo->lo_mutex")

        def body() -> None:
            a1.lock()
            a2.lock()
            a2.unlock()
            a1.unlock()

        s.spawn(Thread("t", body))

    s = Scheduler(RandomWalk(0))
    prog(s)
    out = s.run()
    assert out.ok
    assert [r.kind for r in out.lockdep] == ["recursive"]
    assert "WARNING: possible recursive locking detected" in out.lockdep[0].format()


def test_each_cycle_reported_once_per_run() -> None:
    def prog(s: Scheduler) -> None:
        a, b = Mutex("A"), Mutex("B")

        def ab() -> None:
            for _ in range(3):
                a.lock()
                b.lock()
                b.unlock()
                a.unlock()

        def ba() -> None:
            for _ in range(3):
                b.lock()
                a.lock()
                a.unlock()
                b.unlock()

        def seq() -> None:
            ab()
            ba()
            ab()

        s.spawn(Thread("t", seq))

    s = Scheduler(RandomWalk(0))
    prog(s)
    assert len(s.run().lockdep) == 1


def test_graph_can_persist_across_runs() -> None:
    """Run 1 records A -> B, run 2 only B -> A: a shared graph still reports the cycle."""
    graph = LockGraph()

    def run(order: str) -> int:
        s = Scheduler(RandomWalk(0), lockdep_graph=graph)
        a, b = Mutex("A"), Mutex("B")
        first, second = (a, b) if order == "ab" else (b, a)

        def body() -> None:
            first.lock()
            second.lock()
            second.unlock()
            first.unlock()

        s.spawn(Thread("t", body))
        return len(s.run().lockdep)

    assert run("ab") == 0
    assert run("ba") == 1
    fresh = Scheduler(RandomWalk(0))
    assert fresh.lockdep.graph is not graph


def test_sleeping_under_a_spinlock_is_reported() -> None:
    def prog(s: Scheduler) -> None:
        lk = SpinLock("lo_lock", "&lo->lo_lock")
        m = Mutex("m")

        def holder() -> None:
            m.lock()
            sleep(1)
            m.unlock()

        @kfunc
        def loop_attr_backing_file_show() -> None:
            sleep(0.5)
            lk.lock()
            m.lock()  # sleeps: m is held
            m.unlock()
            lk.unlock()

        s.spawn(Thread("holder", holder))
        s.spawn(Thread("cat", loop_attr_backing_file_show))

    s = Scheduler(RandomWalk(0))
    prog(s)
    out = s.run()
    assert out.ok
    assert [r.kind for r in out.lockdep] == ["atomic-sleep"]
    text = out.lockdep[0].format()
    assert text.startswith("BUG: sleeping function called from invalid context")
    assert "(&lo->lo_lock){+.+.}-{2:2}" in text


def test_lock_held_when_returning_to_user_space_is_reported() -> None:
    def prog(s: Scheduler) -> None:
        m = Mutex("m", "&lo->lo_mutex")

        def body() -> None:
            current().syscall("ioctl", m.lock)

        s.spawn(Task("losetup", body))

    s = Scheduler(RandomWalk(0))
    prog(s)
    out = s.run()
    assert [r.kind for r in out.lockdep] == ["user-return"]
    assert "WARNING: lock held when returning to user space!" in out.lockdep[0].format()
    assert "losetup/100 is leaving the kernel with locks still held!" in out.lockdep[0].format()
