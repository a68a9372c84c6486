"""The scheduler: replay, nondeterminism guard, deadlocks, clock, strategies, teardown."""

from __future__ import annotations

import functools
import gc
import itertools
import math
from collections.abc import Callable

import pytest
from greenlet import greenlet

from loopdev.sim.explore import explore
from loopdev.sim.sched import (
    RunOutcome,
    Scheduler,
    Thread,
    block,
    choose,
    kfunc,
    now,
    point,
    sleep,
    wake,
)
from loopdev.sim.strategy import (
    PCT,
    BoundedDFS,
    NondeterminismError,
    RandomWalk,
    Replay,
    decode_token,
    encode_token,
)
from loopdev.sim.sync import Atomic, Mutex


def racy_counter(s: Scheduler) -> None:
    """Three threads doing non-atomic increments (read, point, write) and a random delay."""
    box = {"n": 0}

    def body() -> None:
        for _ in range(3):
            v = box["n"]
            point("read", "n")
            box["n"] = v + 1
            point("write", "n")
        sleep(choose(4, "delay") * 0.001)

    for name in ("a", "b", "c"):
        s.spawn(Thread(name, body))


def run_once(strategy: RandomWalk | PCT | Replay, program=racy_counter, **kw: object):  # type: ignore[no-untyped-def]
    s = Scheduler(strategy, **kw)  # type: ignore[arg-type]
    program(s)
    return s.run()


def test_same_token_gives_byte_identical_trace() -> None:
    for seed in range(20):
        out = run_once(RandomWalk(seed))
        assert out.kind == "ok"
        again = run_once(Replay(out.token))
        assert again.trace.render_text() == out.trace.render_text()
        assert again.trace.dumps() == out.trace.dumps()
        assert again.token == out.token


def test_different_seeds_give_different_schedules() -> None:
    texts = {run_once(RandomWalk(seed)).trace.render_text() for seed in range(20)}
    assert len(texts) > 10


def test_token_round_trip_and_printable() -> None:
    token = encode_token("random", "7", [0, 1, 300, 2], [1, 65535, 0, 9])
    assert token.isprintable() and " " not in token
    assert decode_token(token) == ("random", "7", [0, 1, 300, 2], [1, 65535, 0, 9])
    with pytest.raises(ValueError):
        decode_token("garbage")


def test_nondeterminism_guard_catches_state_outside_the_choice_stream() -> None:
    runs = itertools.count()

    def leaky(s: Scheduler) -> None:
        n_threads = 2 + next(runs) % 2  # peeks at a counter that survives between runs

        def body() -> None:
            for _ in range(3):
                point("step")

        for i in range(n_threads):
            s.spawn(Thread(f"t{i}", body))

    out = run_once(RandomWalk(1), leaky)
    with pytest.raises(NondeterminismError):
        run_once(Replay(out.token), leaky)


def abba(s: Scheduler) -> None:
    a, b = Mutex("A"), Mutex("B")

    @kfunc
    def take_ab() -> None:
        a.lock()
        b.lock()
        b.unlock()
        a.unlock()

    @kfunc
    def take_ba() -> None:
        b.lock()
        a.lock()
        a.unlock()
        b.unlock()

    s.spawn(Thread("t1", take_ab))
    s.spawn(Thread("t2", take_ba))


def test_deadlock_reported_with_wait_for_graph() -> None:
    res = explore(abba, RandomWalk(0), 200, trace=True)
    assert res.failed
    out = res.failures[0]
    assert out.kind == "deadlock"
    edges = {str(w) for w in out.waits}
    assert edges == {"t1 waits for Mutex(B) held by t2", "t2 waits for Mutex(A) held by t1"}
    assert out.cycle[0] == out.cycle[-1] and set(out.cycle) == {"t1", "t2"}
    assert "wait-for graph" in out.describe()
    replay = run_once(Replay(out.token), abba)
    assert replay.kind == "deadlock"


def test_virtual_clock_jumps_over_sleeps() -> None:
    seen: list[float] = []

    def sleeper() -> None:
        sleep(10.0)
        seen.append(now())
        sleep(0.5)
        seen.append(now())

    def prog(s: Scheduler) -> None:
        s.spawn(Thread("sleeper", sleeper))

    out = run_once(RandomWalk(0), prog)
    assert out.kind == "ok"
    assert seen == [10.0, 10.5]
    assert out.time == 10.5


def test_timers_fire_in_deadline_order() -> None:
    order: list[str] = []

    def sleeper(name: str, secs: float) -> Thread:
        def body() -> None:
            sleep(secs)
            order.append(f"{name}@{now():g}")

        return Thread(name, body)

    def prog(s: Scheduler) -> None:
        s.spawn(sleeper("slow", 3.0))
        s.spawn(sleeper("fast", 1.0))
        s.spawn(sleeper("mid", 2.0))

    assert run_once(RandomWalk(3), prog).kind == "ok"
    assert order == ["fast@1", "mid@2", "slow@3"]


def test_block_timeout_returns_false_and_wake_returns_true() -> None:
    results: list[bool] = []

    def wait() -> None:
        results.append(block("x", timeout=2.0))

    def prog(s: Scheduler, with_waker: bool) -> None:
        waiter = s.spawn(Thread("waiter", wait))

        def waker() -> None:
            sleep(1.0)
            wake(waiter)

        if with_waker:
            s.spawn(Thread("waker", waker))

    assert run_once(RandomWalk(0), lambda s: prog(s, False)).time == 2.0
    out = run_once(RandomWalk(0), lambda s: prog(s, True))
    assert out.kind == "ok"
    assert results == [False, True]
    assert out.time == 1.0


def test_step_limit() -> None:
    def spinner() -> None:
        while True:
            point("spin")

    def prog(s: Scheduler) -> None:
        s.spawn(Thread("spin", spinner))

    out = run_once(RandomWalk(0), prog, max_steps=1000)
    assert out.kind == "step_limit"
    assert out.steps == 1001


def test_exception_in_thread_ends_run_as_error_with_traceback() -> None:
    cleanup: list[str] = []

    def bad() -> None:
        point("before")
        raise ValueError("model bug")

    def bystander() -> None:
        try:
            for _ in range(100):
                point("loop")
        finally:
            cleanup.append("unwound")

    def prog(s: Scheduler) -> None:
        s.spawn(Thread("bad", bad))
        s.spawn(Thread("bystander", bystander))

    out = run_once(RandomWalk(0), prog)
    assert out.kind == "error"
    assert isinstance(out.error, ValueError)
    assert out.thread == "bad"
    assert "model bug" in out.traceback and "raise ValueError" in out.traceback
    assert cleanup == ["unwound"]  # the other thread's greenlet was torn down


def test_thousands_of_runs_leak_no_greenlets() -> None:
    def prog(s: Scheduler) -> None:
        abba(s)

    gc.collect()
    before = sum(isinstance(o, greenlet) for o in gc.get_objects())
    for seed in range(2000):
        run_once(RandomWalk(seed), prog, trace=False)
    gc.collect()
    after = sum(isinstance(o, greenlet) for o in gc.get_objects())
    assert after - before < 10


def two_counters(
    steps: int, threads: int = 2, log: list[str] | None = None
) -> Callable[[Scheduler], None]:
    """`threads` threads, each `steps` points; segments between points append to `log`."""

    def prog(s: Scheduler) -> None:
        for i in range(threads):

            def body(name: str = f"t{i}") -> None:
                for _ in range(steps):
                    if log is not None:
                        log.append(name)
                    point("step")
                if log is not None:
                    log.append(name)

            s.spawn(Thread(f"t{i}", body))

    return prog


@pytest.mark.parametrize(("threads", "steps"), [(2, 2), (2, 3), (3, 1), (3, 2)])
def test_unbounded_dfs_enumerates_every_interleaving(threads: int, steps: int) -> None:
    # each thread is steps+1 segments separated by its points; every interleaving is a schedule
    seg = steps + 1
    expected = math.factorial(threads * seg) // math.factorial(seg) ** threads
    seen: set[str] = set()
    log: list[str] = []

    def program(s: Scheduler) -> None:
        log.clear()
        two_counters(steps, threads, log)(s)

    def record(s: Scheduler, out: RunOutcome) -> None:
        seen.add(",".join(log))

    res = explore(program, BoundedDFS(None), expected + 10, stop_on_failure=False, check=record)
    assert res.exhausted
    assert res.runs == expected
    assert len(seen) == expected


def test_preemption_bound_limits_and_orders_the_search() -> None:
    counts = []
    for bound in (0, 1, 2, None):
        res = explore(two_counters(3), BoundedDFS(bound), 10_000, stop_on_failure=False)
        assert res.exhausted
        counts.append(res.runs)
    assert counts[0] == 2  # no preemption: run one thread to completion first, either one
    assert counts[0] < counts[1] < counts[2] <= counts[3] == math.comb(8, 4)


def test_dfs_explores_data_choices() -> None:
    seen: set[int] = set()

    def prog(s: Scheduler) -> None:
        s.spawn(Thread("t", lambda: seen.add(choose(3, "x") * 10 + choose(2, "y"))))

    res = explore(prog, BoundedDFS(0), 100, stop_on_failure=False)
    assert res.exhausted and res.runs == 6
    assert seen == {0, 1, 10, 11, 20, 21}


def depth2_bug(s: Scheduler) -> None:
    """Fails only if `reader` checks while `writer` is between its two updates (depth 2)."""
    state = {"open": 0}

    def writer() -> None:
        for _ in range(10):
            point("work")
        state["open"] = 1
        point("window")
        state["open"] = 0
        for _ in range(10):
            point("work")

    def reader() -> None:
        for _ in range(5):
            point("work")
        assert state["open"] == 0, "reader saw the half-updated state"

    s.spawn(Thread("writer", writer))
    s.spawn(Thread("reader", reader))


def test_pct_finds_a_depth_two_ordering_bug() -> None:
    res = explore(depth2_bug, PCT(seed=1, depth=2), 2000, trace=True)
    assert res.failed
    out = res.failures[0]
    assert out.kind == "error" and isinstance(out.error, AssertionError)
    assert out.token.startswith("pct:")
    assert run_once(Replay(out.token), depth2_bug).kind == "error"


def test_pct_priorities_serialise_threads_at_depth_one() -> None:
    """Depth 1 = no change points: the highest-priority thread runs to completion."""
    out = run_once(PCT(seed=5, depth=1), two_counters(5))
    lanes = [e.thread for e in out.trace.events if e.kind == "point"]
    switches = sum(1 for x, y in itertools.pairwise(lanes) if x != y)
    assert switches == 1


def test_atomic_counter_is_exact_under_every_strategy() -> None:
    def prog(s: Scheduler) -> None:
        counter = Atomic(0, "counter")
        s.registry["counter"] = counter
        for i in range(3):
            s.spawn(Thread(f"t{i}", lambda: [counter.inc_return() for _ in range(10)]))

    for strat in (RandomWalk(3), PCT(3, depth=3)):
        s = Scheduler(strat)
        prog(s)
        assert s.run().ok
        assert s.registry["counter"].value == 30


def mixed_objects(histories: set[str]) -> Callable[[Scheduler], None]:
    """Three threads: private steps, and steps on two shared objects whose per-object order
    of operations is the observable outcome."""
    plans = {
        "t0": ["p0", "x", "y"],
        "t1": ["x", "p1", "x"],
        "t2": ["p2", "y"],
    }

    def prog(s: Scheduler) -> None:
        log: dict[str, list[str]] = {"x": [], "y": []}

        def body(name: str) -> None:
            for obj in plans[name]:
                point("op", obj)
                if obj in log:
                    log[obj].append(name)

        def record() -> None:
            histories.add(f"x={','.join(log['x'])} y={','.join(log['y'])}")

        for name in plans:
            s.spawn(Thread(name, functools.partial(body, name)))
        s.registry["record"] = record

    return prog


def explore_histories(por: bool) -> tuple[set[str], int]:
    histories: set[str] = set()
    prog = mixed_objects(histories)

    def check(s: Scheduler, out: RunOutcome) -> None:
        s.registry["record"]()

    res = explore(prog, BoundedDFS(None, por=por), 1_000_000, stop_on_failure=False, check=check)
    assert res.exhausted
    return histories, res.outcomes.get("ok", 0)


def test_sleep_set_por_keeps_every_outcome_with_fewer_schedules() -> None:
    full, full_runs = explore_histories(por=False)
    reduced, reduced_runs = explore_histories(por=True)
    assert reduced == full
    assert len(full) >= 6
    assert reduced_runs * 5 < full_runs, (reduced_runs, full_runs)


def test_por_still_finds_lost_updates() -> None:
    res = explore(racy_counter_checked, BoundedDFS(None, por=True), 100_000)
    assert res.failed and isinstance(res.failures[0].error, AssertionError)


def racy_counter_checked(s: Scheduler) -> None:
    box = {"n": 0, "done": 0}

    def body() -> None:
        v = box["n"]
        point("write", "n")
        box["n"] = v + 1
        point("done", "done")
        box["done"] += 1
        if box["done"] == 2:
            assert box["n"] == 2, "lost update"

    for name in ("a", "b"):
        s.spawn(Thread(name, body))


def test_token_replays_byte_identically_in_another_process() -> None:
    """Tokens are pasted into later sessions: no hash-seed or address dependence."""
    import os
    import subprocess
    import sys

    out = run_once(RandomWalk(11))
    code = (
        "import sys; sys.path.insert(0, 'tests/sim');"
        "from test_sched import racy_counter, run_once; from loopdev.sim.strategy import Replay;"
        f"sys.stdout.write(run_once(Replay({out.token!r})).trace.render_text())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    text = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env
    ).stdout
    assert text == out.trace.render_text()
