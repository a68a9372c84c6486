"""Controlled scheduler on greenlets: threads, scheduling points, virtual clock, replay.

One :class:`Scheduler` owns one run. Threads are greenlets; they switch only at scheduling
points (:func:`point`), when they block (:func:`block`) or when they finish. Which runnable
thread continues, and every data choice (:func:`choose`), comes from the strategy and is
recorded in the choice stream; replaying the stream (a replay token) reproduces the run event
for event. The virtual clock jumps to the earliest timer when nothing is runnable. No runnable
thread, no timer and a non-daemon thread blocked is a deadlock, reported with the wait-for
graph.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import heapq
import operator
import threading
import traceback
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from greenlet import GreenletExit, greenlet

from loopdev.sim import params as _params
from loopdev.sim.lockdep import Lockdep, LockGraph
from loopdev.sim.strategy import NondeterminismError, Strategy, encode_token
from loopdev.sim.trace import Trace

if TYPE_CHECKING:
    from loopdev.sim.lockdep import LockdepReport

P = ParamSpec("P")
R = TypeVar("R")

NEW, RUNNABLE, BLOCKED, DONE = 0, 1, 2, 3
STATE_NAMES = ("new", "runnable", "blocked", "done")


class SchedulerError(RuntimeError):
    """The scheduler was used wrongly (blocking outside a thread, running twice, ...)."""


class _Abort(BaseException):
    """Internal: unwinds a run's greenlets at teardown."""


class Thread:
    """A schedulable thread of the model. Subclass and override :meth:`run`, or pass `fn`."""

    __slots__ = (
        "__dict__",
        "daemon",
        "epoch",
        "fn",
        "glet",
        "held",
        "idle",
        "joiners",
        "killable",
        "kstack",
        "name",
        "pending",
        "result",
        "sched",
        "sig",
        "state",
        "tid",
        "waiting_on",
        "wake_result",
    )  # fmt: skip

    def __init__(
        self, name: str, fn: Callable[[], object] | None = None, *, daemon: bool = False
    ) -> None:
        self.name = name
        self.fn = fn
        self.daemon = daemon
        self.tid = -1
        self.state = NEW
        self.glet: Any = None
        self.sched: Scheduler | None = None
        self.waiting_on: object = None
        self.wake_result = False
        self.killable = False
        self.epoch = 0
        self.sig = 0
        self.kstack: list[str] = []
        self.held: list[Any] = []  # lockdep's held-lock stack (HeldLock entries)
        self.pending = ""  # the object the thread's next operation touches
        self.joiners: list[Thread] = []
        self.result: object = None
        self.idle = False  # an idle daemon (a kworker waiting for work): not in wait-for graphs

    def run(self) -> object:
        """The thread's body; the default calls `fn`."""
        return self.fn() if self.fn is not None else None

    def on_spawn(self, sched: Scheduler) -> None:
        """Hook called when the thread is spawned (after its tid is assigned)."""

    def fatal_signal_pending(self) -> bool:
        """Whether a killable wait must end early (tasks override)."""
        return False

    @property
    def ident(self) -> str:
        """`comm/pid` style identity used by lockdep reports."""
        return f"{self.name}/{self.tid}"

    @property
    def done(self) -> bool:
        return self.state == DONE

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} tid={self.tid} {STATE_NAMES[self.state]}>"


def describe(obj: object) -> str:
    """A deterministic description of a wait target (its `name` if it has one)."""
    name = getattr(obj, "name", None)
    if isinstance(name, str):
        return f"{type(obj).__name__}({name})"
    return type(obj).__name__


@dataclass(frozen=True)
class WaitEdge:
    """One blocked thread in the wait-for graph: what it waits on and who holds that."""

    thread: str
    waiting_on: str
    holders: tuple[str, ...] = ()

    def __str__(self) -> str:
        held = f" held by {', '.join(self.holders)}" if self.holders else ""
        return f"{self.thread} waits for {self.waiting_on}{held}"


@dataclass
class RunOutcome:
    """The result of one run: kind, replay token, wait-for graph or error, lockdep reports."""

    kind: str  # "ok" | "deadlock" | "step_limit" | "error" | "pruned" (by a strategy's POR)
    strategy: str
    seed: str
    stream: list[int]  # (fingerprint << 32) | choice, one per recorded choice
    steps: int
    time: float
    trace: Trace
    lockdep: list[LockdepReport] = field(default_factory=list)
    waits: list[WaitEdge] = field(default_factory=list)
    cycle: list[str] = field(default_factory=list)
    error: BaseException | None = None
    traceback: str = ""
    thread: str = ""
    params: dict[str, float] = field(default_factory=dict)  # the run's parameter overrides

    @property
    def ok(self) -> bool:
        return self.kind == "ok"

    @property
    def choices(self) -> list[int]:
        """The recorded choice list."""
        return [v & 0xFFFFFFFF for v in self.stream]

    @property
    def fingerprints(self) -> list[int]:
        """The runnable-set / data-choice fingerprint of each choice."""
        return [v >> 32 for v in self.stream]

    @functools.cached_property
    def token(self) -> str:
        """The printable replay token: `strategy:seed:payload` (the payload carries the run's
        parameter overrides too)."""
        return encode_token(
            self.strategy, self.seed, self.choices, self.fingerprints, self.params
        )

    def describe(self) -> str:
        """A human-readable summary (deadlock graph, error traceback, token)."""
        lines = [f"outcome: {self.kind} after {self.steps} steps, t={self.time:.6f}s"]
        if self.kind == "deadlock":
            lines.append("wait-for graph:")
            lines += [f"  {w}" for w in self.waits]
            if self.cycle:
                lines.append("cycle: " + " -> ".join(self.cycle))
        if self.kind == "error":
            lines.append(f"in thread {self.thread}:")
            lines.append(self.traceback.rstrip())
        for rep in self.lockdep:
            lines.append(rep.format())
        lines.append(f"replay token: {self.token}")
        return "\n".join(lines)


_current: Scheduler | None = None
_tid_key = operator.attrgetter("tid")
_label_fps: dict[str, int] = {}


def _label_fp(label: str) -> int:
    fp = _label_fps.get(label)
    if fp is None:
        fp = _label_fps[label] = zlib.crc32(label.encode()) & 0xFFFF
    return fp


class _Pool(threading.local):
    """Idle greenlets of finished threads, per OS thread: starting a fresh greenlet costs
    about ten times a switch, so each one runs thread after thread, run after run."""

    def __init__(self) -> None:
        self.idle: list[Any] = []


_pool = _Pool()


def _pooled() -> None:
    """The body of a pooled greenlet: run the thread it was switched in for (the running
    scheduler's `current`), then park in the pool until it is switched in again."""
    idle = _pool.idle
    while True:
        s = _current
        assert s is not None and s.current is not None
        t = s.current
        s._bootstrap(t)
        t.glet = None  # the greenlet now belongs to the pool, not to the finished thread
        main = s._main
        del s, t
        idle.append(greenlet.getcurrent())
        main.switch()


class _Clock:
    name = "clock"


CLOCK = _Clock()


class Scheduler:
    """One run of the model: threads, clock, choice stream, lockdep and trace."""

    def __init__(
        self,
        strategy: Strategy,
        *,
        trace: bool = True,
        max_steps: int = 200_000,
        lockdep: bool = True,
        lockdep_graph: LockGraph | None = None,
        params: Mapping[str, float] | None = None,
    ) -> None:
        self.strategy = strategy
        if params is None:
            params = strategy.params if strategy.params is not None else _params.active()
        #: the run's overrides of the model's timing parameters (:mod:`loopdev.sim.params`)
        self.params: dict[str, float] = _params.check(params)
        self.trace = Trace(self, enabled=trace)
        self.tracing = trace
        self.max_steps = max_steps
        self.steps = 0
        self.clock = 0.0
        self.current: Thread | None = None
        self.threads: list[Thread] = []
        self.runnable: list[Thread] = []
        self.stream: list[int] = []  # (fingerprint << 32) | choice
        self._stream_append = self.stream.append
        self.lockdep = Lockdep(self, graph=lockdep_graph, enabled=lockdep)
        self.registry: dict[object, Any] = {}
        self._timers: list[tuple[float, int, int, Thread]] = []
        self._seq = 0
        self._next_tid = 1
        self._rsig = 0
        self.rver = 0  # bumped whenever the runnable set changes (strategies may cache on it)
        self._alive = 0  # non-daemon threads not yet done
        self._main: Any = None
        self._outcome: str | None = None
        self._error: tuple[Thread, BaseException, str] | None = None
        self._fatal: BaseException | None = None
        self._tearing_down = False
        self._ran = False
        self._pick_fn = strategy.pick
        self._uniform: Callable[[], float] | None = None  # see Strategy.uniform
        self._expect: list[int] | None = None

    # -- per-run state -------------------------------------------------------------------

    def state(self, key: object, factory: Callable[[], R]) -> R:
        """Per-run global state (system workqueues, pid counters): created on first use."""
        try:
            return self.registry[key]  # type: ignore[no-any-return]
        except KeyError:
            value = self.registry[key] = factory()
            return value

    # -- threads ---------------------------------------------------------------------------

    def spawn(self, thread: Thread) -> Thread:
        """Make `thread` runnable in this run."""
        if thread.tid >= 0:
            raise SchedulerError(f"{thread!r} was already spawned")
        thread.tid = self._next_tid
        self._next_tid += 1
        thread.sched = self
        thread.sig = (thread.tid * 0x9E3779B1) & 0xFFFFFFFF
        thread.on_spawn(self)
        thread.state = RUNNABLE
        self.threads.append(thread)
        self.runnable.append(thread)  # the highest tid: stays sorted
        self._rsig ^= thread.sig
        self.rver += 1
        if not thread.daemon:
            self._alive += 1
        if self.tracing:
            self.trace.emit("spawn", thread.name)
        return thread

    def _bootstrap(self, t: Thread) -> None:
        try:
            t.result = t.run()
        except (GreenletExit, _Abort):
            return
        except NondeterminismError as e:
            if not self._tearing_down:
                self._fatal = e
                self._outcome = "error"
            return
        except BaseException as e:
            if not self._tearing_down:
                self._error = (t, e, "".join(traceback.format_exception(e)))
                self._outcome = "error"
                if self.tracing:
                    self.trace.emit("fail", type(e).__name__, str(e))
            return
        self._finish(t)

    def _finish(self, t: Thread) -> None:
        t.state = DONE
        self._remove_runnable(t)
        if not t.daemon:
            self._alive -= 1
        for j in t.joiners:
            self.wake(j)
        t.joiners.clear()
        if self.tracing:
            self.trace.emit("exit", t.name)

    def join(self, thread: Thread, timeout: float | None = None) -> bool:
        """Block the current thread until `thread` is done (False on timeout)."""
        cur = self._need_current()
        if thread.state == DONE:
            return True
        thread.joiners.append(cur)
        if not self.block(thread, timeout=timeout):
            if cur in thread.joiners:
                thread.joiners.remove(cur)
            return thread.state == DONE
        return True

    def _remove_runnable(self, t: Thread) -> None:
        runnable = self.runnable
        i = bisect.bisect_left(runnable, t.tid, key=_tid_key)
        if i < len(runnable) and runnable[i] is t:
            del runnable[i]
            self._rsig ^= t.sig
            self.rver += 1

    def _add_runnable(self, t: Thread) -> None:
        bisect.insort(self.runnable, t, key=_tid_key)
        self._rsig ^= t.sig
        self.rver += 1

    def _need_current(self) -> Thread:
        cur = self.current
        if cur is None:
            raise SchedulerError("not inside a model thread")
        return cur

    # -- choices -------------------------------------------------------------------------

    def _record(self, i: int, n: int, fp: int) -> None:
        k = len(self.stream)
        exp = self._expect
        if exp is not None and (k >= len(exp) or exp[k] != fp or i >= n):
            raise NondeterminismError(
                f"replay diverged at choice #{k} (step {self.steps}): "
                + ("recording has no more choices" if k >= len(exp) else "different runnable set")
            )
        self._stream_append((fp << 32) | i)

    def _pick(self, cur: Thread | None) -> Thread | None:
        runnable = self.runnable
        n = len(runnable)
        i = self._pick_fn(runnable, cur)
        if i < 0:
            return None  # the strategy pruned this run
        rs = self._rsig
        self._record(i, n, ((rs >> 16) ^ rs ^ (n << 3)) & 0xFFFF)
        return runnable[i]

    def choose(self, n: int, label: str) -> int:
        """A data choice in ``range(n)`` from the choice stream (recorded and replayed)."""
        if n <= 1:
            return 0
        i = self.strategy.choose(n, label)
        self._record(i, n, (_label_fp(label) ^ n) & 0xFFFF)
        if self.tracing:
            self.trace.emit("choice", label, f"{i}/{n}")
        return i

    # -- scheduling points -----------------------------------------------------------------

    def yield_point(self, obj: str = "") -> None:
        """A scheduling point without a trace event (primitives emit their own)."""
        cur = self.current
        if cur is None:
            return
        steps = self.steps = self.steps + 1
        if steps > self.max_steps:
            if self._tearing_down:
                self.steps -= 1
                return
            self._abort("step_limit")
        cur.pending = obj
        runnable = self.runnable
        n = len(runnable)
        if n > 1:
            u = self._uniform
            i = int(u() * n) if u is not None else self._pick_fn(runnable, cur)
            if i < 0:
                self._abort("pruned")
            rs = self._rsig
            fp = ((rs >> 16) ^ rs ^ (n << 3)) & 0xFFFF
            if self._expect is None:
                self._stream_append((fp << 32) | i)
            else:
                self._record(i, n, fp)
            nxt = runnable[i]
            if nxt is not cur:
                self.current = nxt
                g = nxt.glet
                if g is None:
                    g = nxt.glet = self._greenlet()
                g.switch()

    def point(self, kind: str, obj: str = "") -> None:
        """A scheduling point, then a `point` trace event (`kind`, `obj`)."""
        self.yield_point(obj)
        if self.tracing:
            self.trace.emit("point", kind, obj)

    def _abort(self, kind: str) -> None:
        self._outcome = kind
        self._main.switch()
        raise _Abort  # only reached if resumed by teardown

    def block(
        self, waiting_on: object, *, timeout: float | None = None, killable: bool = False
    ) -> bool:
        """Stop running until :meth:`wake` (True) or the virtual timeout passes (False)."""
        cur = self._need_current()
        if self._tearing_down:
            raise _Abort
        if cur.held and not getattr(waiting_on, "spins", False):  # spinning is not sleeping
            self.lockdep.check_sleep(cur, f"block on {describe(waiting_on)}")
        self._remove_runnable(cur)
        cur.state = BLOCKED
        cur.waiting_on = waiting_on
        cur.wake_result = False
        cur.killable = killable
        if timeout is not None:
            self._seq += 1
            heapq.heappush(
                self._timers, (self.clock + max(timeout, 0.0), self._seq, cur.epoch, cur)
            )
        self._main.switch()
        if self._tearing_down:
            raise _Abort
        cur.waiting_on = None
        cur.killable = False
        cur.pending = ""  # after a wait the thread re-reads anything: dependent with all
        return cur.wake_result

    def wake(self, thread: Thread) -> None:
        """Make a blocked thread runnable again (no-op unless it is blocked)."""
        if thread.state != BLOCKED:
            return
        thread.state = RUNNABLE
        thread.wake_result = True
        thread.epoch += 1
        self._add_runnable(thread)

    def now(self) -> float:
        """Virtual seconds since the start of the run."""
        return self.clock

    def sleep(self, seconds: float) -> None:
        """Block the current thread on the virtual clock for `seconds`."""
        if seconds <= 0:
            self.point("sleep", "clock")
            return
        if self.tracing:
            self.trace.emit("wait", "sleep", f"{seconds:g}s")
        self.block(CLOCK, timeout=seconds)

    # -- the run loop ----------------------------------------------------------------------

    def _advance_clock(self) -> bool:
        if self._alive == 0:
            return False
        timers = self._timers
        while timers:
            deadline, _, epoch, t = timers[0]
            if t.state == BLOCKED and t.epoch == epoch:
                break
            heapq.heappop(timers)
        else:
            return False
        self.clock = max(self.clock, deadline)
        while timers and timers[0][0] <= deadline:
            _, _, epoch, t = heapq.heappop(timers)
            if t.state == BLOCKED and t.epoch == epoch:
                t.state = RUNNABLE
                t.wake_result = False
                t.epoch += 1
                self._add_runnable(t)
        return True

    def run(self) -> RunOutcome:
        """Run until every non-daemon thread is done, deadlock, step limit or error."""
        global _current
        if self._ran:
            raise SchedulerError("a Scheduler runs once; make a new one")
        self._ran = True
        prev = _current
        _current = self
        self._main = greenlet.getcurrent()
        self.strategy.begin(self)
        self._uniform = self.strategy.uniform
        self._expect = self.strategy.expected
        try:
            self._loop()
            if (
                self._expect is not None
                and self._fatal is None
                and len(self.stream) != len(self._expect)
            ):
                self._fatal = NondeterminismError(
                    f"replay made {len(self.stream)} choices, the recording {len(self._expect)}"
                )
        finally:
            # the wait-for graph first: unwinding abandoned threads runs their `finally`
            # blocks (locks released, syscalls returning), which would rewrite it
            waits = self.wait_graph() if self._outcome == "deadlock" else ([], [])
            self._teardown()
            _current = prev
        if self._fatal is not None:
            raise self._fatal
        outcome = self._make_outcome(waits)
        self.strategy.end(outcome)
        return outcome

    def _loop(self) -> None:
        while self._outcome is None:
            runnable = self.runnable
            if not runnable:
                if self._advance_clock():
                    continue
                self._outcome = "ok" if self._alive == 0 else "deadlock"
                break
            nxt = self._pick(None) if len(runnable) > 1 else runnable[0]
            if nxt is None:
                self._outcome = "pruned"
                break
            self.current = nxt
            g = nxt.glet
            if g is None:
                g = nxt.glet = self._greenlet()
            g.switch()
            self.current = None

    def _greenlet(self) -> Any:
        """A greenlet to start `self.current` in: an idle pooled one, else a new one."""
        idle = _pool.idle
        while idle:
            g = idle.pop()
            if not g.dead:
                g.parent = self._main
                return g
        return greenlet(_pooled, self._main)

    def _teardown(self) -> None:
        self._tearing_down = True
        self.max_steps = -1  # every yield_point takes its slow path and returns
        # the run is over: what unwinding does (locks released out of order, syscalls
        # "returning" with locks held) is not the model's behaviour, so lockdep looks away
        self.lockdep.enabled = False
        for t in self.threads:
            g = t.glet
            if g is not None and not g.dead:
                self.current = t
                with contextlib.suppress(BaseException):  # unwinding abandoned threads
                    g.throw(_Abort)
            t.glet = None
        self.current = None

    def wait_graph(self) -> tuple[list[WaitEdge], list[str]]:
        """The wait-for graph of blocked threads, and a thread cycle in it if there is one."""
        edges: list[WaitEdge] = []
        nxt: dict[str, str] = {}
        for t in self.threads:
            if t.state != BLOCKED or t.idle:
                continue
            holders = tuple(h.name for h in _holders(t.waiting_on))
            edges.append(WaitEdge(t.name, describe(t.waiting_on), holders))
            if len(holders) == 1:
                nxt[t.name] = holders[0]
        cycle: list[str] = []
        for start in nxt:
            seen: list[str] = []
            node: str | None = start
            while node is not None and node not in seen:
                seen.append(node)
                node = nxt.get(node)
            if node is not None:
                cycle = [*seen[seen.index(node) :], node]
                break
        return edges, cycle

    def _make_outcome(self, waits: tuple[list[WaitEdge], list[str]] = ([], [])) -> RunOutcome:
        kind = self._outcome or "ok"
        out = RunOutcome(
            kind=kind,
            strategy=self.strategy.name,
            seed=self.strategy.seed_text,
            stream=self.stream,
            steps=self.steps,
            time=self.clock,
            trace=self.trace,
            lockdep=list(self.lockdep.reports),
            params=dict(self.params),
        )
        if kind == "deadlock":
            out.waits, out.cycle = waits
        if self._error is not None:
            t, e, tb = self._error
            out.error, out.traceback, out.thread = e, tb, t.name
        return out


def _holders(obj: object) -> Iterable[Thread]:
    holders = getattr(obj, "holders", None)
    if holders is not None:
        return [h for h in holders if isinstance(h, Thread)]
    holder = getattr(obj, "holder", None)
    if isinstance(holder, Thread):
        return [holder]
    if isinstance(obj, Thread):
        return [obj]
    return []


# -- module-level API (the running scheduler) ------------------------------------------------


def current_scheduler() -> Scheduler:
    """The scheduler whose run is in progress."""
    if _current is None:
        raise SchedulerError("no scheduler is running")
    return _current


def maybe_scheduler() -> Scheduler | None:
    """The running scheduler, or None outside a run."""
    return _current


def current_thread() -> Thread:
    """The model thread that is running."""
    return current_scheduler()._need_current()


def point(kind: str, obj: str = "") -> None:
    """A scheduling point (no-op outside a run)."""
    s = _current
    if s is not None:
        s.point(kind, obj)


def block(waiting_on: object, *, timeout: float | None = None, killable: bool = False) -> bool:
    """Block the current thread; see :meth:`Scheduler.block`."""
    return current_scheduler().block(waiting_on, timeout=timeout, killable=killable)


def wake(thread: Thread) -> None:
    """Make a blocked thread runnable."""
    current_scheduler().wake(thread)


def choose(n: int, label: str) -> int:
    """A data choice from the choice stream."""
    return current_scheduler().choose(n, label)


def now() -> float:
    """Virtual time in seconds."""
    return current_scheduler().clock


def sleep(seconds: float) -> None:
    """Sleep on the virtual clock."""
    current_scheduler().sleep(seconds)


def param(name: str) -> float:
    """Timing parameter ``name`` (:mod:`loopdev.sim.params`) of the running run: its
    override, else the default (outside a run: the active override or the default)."""
    s = _current
    return _params.value(name, s.params if s is not None else None)


def spawn(thread: Thread) -> Thread:
    """Spawn a thread in the running scheduler."""
    return current_scheduler().spawn(thread)


def emit(kind: str, name: str, detail: str = "") -> None:
    """Record a trace event for the current thread (no-op outside a run)."""
    s = _current
    if s is not None and s.tracing:
        s.trace.emit(kind, name, detail)


def tracing() -> bool:
    """Whether the running scheduler records a trace: guard costly event details with it."""
    s = _current
    return s is not None and s.tracing


# -- kfunc -------------------------------------------------------------------------------------


def _wrap_kfunc(fn: Callable[P, R], kname: str) -> Callable[P, R]:
    def traced(s: Scheduler, stack: list[str], *args: P.args, **kwargs: P.kwargs) -> R:
        stack.append(kname)
        s.trace.emit("enter", kname)
        try:
            return fn(*args, **kwargs)
        finally:
            stack.pop()
            if s.tracing and not s._tearing_down:
                s.trace.emit("leave", kname)

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        s = _current
        if s is None or s.current is None:
            return fn(*args, **kwargs)
        stack = s.current.kstack
        if s.tracing:
            return traced(s, stack, *args, **kwargs)
        stack.append(kname)  # the hot path: tracing off, only the kernel stack for lockdep
        try:
            return fn(*args, **kwargs)
        finally:
            stack.pop()

    return wrapper


@overload
def kfunc(arg: Callable[P, R]) -> Callable[P, R]: ...
@overload
def kfunc(arg: str) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def kfunc(arg: Callable[P, R] | str) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Mark a kernel function: pushes its name on the thread's kernel stack, traces enter/leave."""
    if isinstance(arg, str):
        name = arg

        def deco(fn: Callable[P, R]) -> Callable[P, R]:
            return _wrap_kfunc(fn, name)

        return deco
    return _wrap_kfunc(arg, arg.__name__)


__all__ = [
    "BLOCKED", "CLOCK", "DONE", "NEW", "RUNNABLE", "RunOutcome", "Scheduler", "SchedulerError",
    "Thread", "WaitEdge", "block", "choose", "current_scheduler", "current_thread", "emit",
    "kfunc", "maybe_scheduler", "now", "param", "point", "sleep", "spawn", "tracing", "wake",
]  # fmt: skip
