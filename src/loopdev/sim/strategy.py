"""Exploration strategies and the replay token: what decides each choice of a run.

The scheduler (:mod:`loopdev.sim.sched`) asks its :class:`Strategy` which runnable thread
continues and the value of every data choice, and records the answers as the choice stream.
Here live the strategy interface, the strategies (random walk, PCT, bounded DFS, replay) and
the token codec that turns a recorded stream into ``strategy:seed:payload`` and back. They see
the scheduler and its threads only through the small views below, so this module imports
nothing of the scheduler.
"""

from __future__ import annotations

import base64
import random
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol


class ThreadView(Protocol):
    """What a strategy sees of a runnable thread."""

    @property
    def tid(self) -> int: ...
    @property
    def pending(self) -> str:
        """The object the thread's next operation touches ("" = unknown: anything)."""
        ...


class RunView(Protocol):
    """What a strategy sees of the run it decides for (a scheduler, or its outcome)."""

    @property
    def steps(self) -> int: ...


class SchedulerView(RunView, Protocol):
    """The running scheduler, as a strategy sees it."""

    @property
    def rver(self) -> int:
        """Bumped whenever the runnable set changes (a strategy may cache on it)."""
        ...


class NondeterminismError(RuntimeError):
    """A replay saw different runnable sets (or choices) than the recording."""


class Strategy:
    """Decides which runnable thread continues and the value of each data choice."""

    name = "strategy"
    #: set (by `begin`) when `pick` is ``int(uniform() * len(runnable))``: the scheduler then
    #: draws at its scheduling points without calling `pick` (the same choices, faster)
    uniform: Callable[[], float] | None = None
    #: timing-parameter overrides the run must use (a replay's, from its token); None: the
    #: scheduler's own (:mod:`loopdev.sim.params`)
    params: dict[str, float] | None = None

    def begin(self, sched: SchedulerView) -> None:
        """Called when a run starts."""

    def pick(self, runnable: Sequence[ThreadView], cur: ThreadView | None) -> int:
        """Index into `runnable` (sorted by tid) of the thread to run next; -1 ends the run
        as `pruned` (a redundant schedule)."""
        raise NotImplementedError

    def choose(self, n: int, label: str) -> int:
        """A data choice in ``range(n)``."""
        raise NotImplementedError

    def end(self, outcome: RunView) -> None:
        """Called when a run ends."""

    @property
    def seed_text(self) -> str:
        """The seed part of the replay token."""
        return "0"

    @property
    def expected(self) -> list[int] | None:
        """Fingerprints a replay must see (None when not replaying)."""
        return None

    def exhausted(self) -> bool:
        """True when a systematic strategy has nothing left to explore."""
        return False


class RandomWalk(Strategy):
    """Uniform random choice among runnable threads at every point. Run i uses seed + i."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._runs = 0
        self._run_seed = seed
        self._rand = random.Random(seed).random

    def begin(self, sched: SchedulerView) -> None:
        self._run_seed = self.seed + self._runs
        self._runs += 1
        self._rand = random.Random(self._run_seed).random
        if type(self).pick is RandomWalk.pick:  # a subclass choosing otherwise is asked
            self.uniform = self._rand

    def pick(self, runnable: Sequence[ThreadView], cur: ThreadView | None) -> int:
        return int(self._rand() * len(runnable))

    def choose(self, n: int, label: str) -> int:
        return int(self._rand() * n)

    @property
    def seed_text(self) -> str:
        return str(self._run_seed)


class PCT(Strategy):
    """Probabilistic concurrency testing (Burckhardt et al., ASPLOS 2010).

    Each thread gets a random initial priority above `depth`; `depth - 1` priority change
    points are drawn uniformly over the estimated step count `k`; at change point i the running
    thread's priority drops to `depth - i`. The highest-priority runnable thread always runs.
    `k` starts at `steps` (default 100) and then tracks the longest run seen.
    """

    name = "pct"

    def __init__(self, seed: int = 0, depth: int = 3, steps: int | None = None) -> None:
        if depth < 1:
            raise ValueError("PCT depth must be >= 1")
        self.seed = seed
        self.depth = depth
        self.k = steps or 100
        self._runs = 0
        self._run_seed = seed
        self._rng = random.Random(seed)
        self._prio: dict[int, float] = {}
        self._changes: list[tuple[int, float]] = []
        self._sched: SchedulerView | None = None
        self._cached_ver = -1  # Scheduler.rver when _cached_i was computed
        self._cached_i = 0

    def begin(self, sched: SchedulerView) -> None:
        self._run_seed = self.seed + self._runs
        self._runs += 1
        self._rng = random.Random(self._run_seed)
        self._prio = {}
        self._sched = sched
        self._cached_ver = -1
        self._cached_i = 0
        k = max(self.k, self.depth)
        points = sorted(self._rng.sample(range(1, k + 1), self.depth - 1))
        self._changes = [(step, float(self.depth - 1 - i)) for i, step in enumerate(points)]
        self._changes.reverse()  # pop() from the end = earliest first

    def pick(self, runnable: Sequence[ThreadView], cur: ThreadView | None) -> int:
        prio = self._prio
        changes = self._changes
        sched = self._sched
        if changes and sched is not None:
            steps = sched.steps
            while changes and changes[-1][0] <= steps:
                _, low = changes.pop()
                if cur is not None:
                    prio[cur.tid] = low
                    self._cached_ver = -1
        # Same runnable set, same priorities: same answer (and no new thread to draw for).
        ver = sched.rver if sched is not None else -1
        if ver == self._cached_ver and ver >= 0:
            return self._cached_i
        best = -1.0
        best_i = 0
        for i, t in enumerate(runnable):
            p = prio.get(t.tid)
            if p is None:
                p = prio[t.tid] = self.depth + self._rng.random()
            if p > best:
                best, best_i = p, i
        self._cached_ver, self._cached_i = ver, best_i
        return best_i

    def choose(self, n: int, label: str) -> int:
        return int(self._rng.random() * n)

    def end(self, outcome: RunView) -> None:
        self.k = max(self.k, outcome.steps)

    @property
    def seed_text(self) -> str:
        return f"{self._run_seed}d{self.depth}"


@dataclass
class _Node:
    n: int
    order: list[int]
    cur: int  # index of the running thread if it stayed runnable, else -1 (or a data choice)
    pos: int = 0
    tids: list[int] = field(default_factory=list)  # POR: runnable threads at this node
    ops: list[str] = field(default_factory=list)  # POR: the object each one touches next
    sleep: dict[int, str] = field(default_factory=dict)  # POR: sleep set on entry


def _independent(a: str, b: str) -> bool:
    return bool(a) and bool(b) and a != b


class BoundedDFS(Strategy):
    """Depth-first search over all schedules with at most `preemption_bound` preemptions.

    A preemption is switching away from a thread that could have continued. Switching after a
    thread blocked or finished is free, and data choices are explored exhaustively. Runs share
    this object: each run follows the next unexplored branch; :meth:`exhausted` tells when the
    bounded tree is done. `preemption_bound=None` explores every interleaving.

    `por=True` adds sleep-set partial-order reduction: two steps are independent when they
    touch different, named objects (the `obj` of their scheduling points); a schedule that only
    reorders independent steps of one already explored is cut short as `pruned`. This relies
    on the model's discipline that every shared access is announced by a point on its object
    (unnamed points, waits and thread starts count as touching everything). With a finite
    bound, sleep sets may skip a few schedules inside the bound.
    """

    name = "dfs"

    def __init__(self, preemption_bound: int | None = 2, *, por: bool = False) -> None:
        self.bound = preemption_bound
        self.por = por
        self._stack: list[_Node] = []
        self._depth = 0
        self._pre = 0
        self._runs = 0
        self._done = False
        self._sleep: dict[int, str] = {}

    def begin(self, sched: SchedulerView) -> None:
        self._depth = 0
        self._pre = 0
        self._runs += 1
        self._sleep = {}

    def _node(self, n: int, cur: int, runnable: Sequence[ThreadView] | None) -> _Node:
        d = self._depth
        self._depth += 1
        stack = self._stack
        if d < len(stack):
            node = stack[d]
            if node.n != n or node.cur != cur:
                raise NondeterminismError(f"DFS replay diverged at choice #{d}")
            return node
        if cur < 0 or runnable is None:
            order = list(range(n))
        elif self.bound is not None and self._pre >= self.bound:
            order = [cur]
        else:
            order = [cur, *(i for i in range(n) if i != cur)]
        node = _Node(n, order, cur)
        if self.por and runnable is not None:
            node.tids = [t.tid for t in runnable]
            node.ops = [t.pending for t in runnable]
            node.sleep = {
                t.tid: t.pending for t in runnable if self._sleep.get(t.tid, None) == t.pending
            }
            node.order = [i for i in order if node.tids[i] not in node.sleep]
        stack.append(node)
        return node

    def _enter_child(self, node: _Node, choice: int) -> None:
        op = node.ops[choice]
        asleep = dict(node.sleep)
        for i in node.order[: node.pos]:
            asleep[node.tids[i]] = node.ops[i]
        chosen = node.tids[choice]
        self._sleep = {t: o for t, o in asleep.items() if t != chosen and _independent(o, op)}

    def pick(self, runnable: Sequence[ThreadView], cur: ThreadView | None) -> int:
        ci = runnable.index(cur) if cur is not None else -1
        node = self._node(len(runnable), ci, runnable)
        if not node.order:
            return -1  # every runnable thread is asleep: an equivalent schedule was explored
        choice = node.order[node.pos]
        if ci >= 0 and choice != ci:
            self._pre += 1
        if self.por:
            self._enter_child(node, choice)
        return choice

    def choose(self, n: int, label: str) -> int:
        node = self._node(n, -1, None)
        return node.order[node.pos]

    def end(self, outcome: RunView) -> None:
        stack = self._stack
        del stack[self._depth :]
        while stack:
            node = stack[-1]
            if node.pos + 1 < len(node.order):
                node.pos += 1
                break
            stack.pop()
        self._done = not stack

    def exhausted(self) -> bool:
        return self._done

    @property
    def seed_text(self) -> str:
        bound = "inf" if self.bound is None else str(self.bound)
        return f"{self._runs}b{bound}{'p' if self.por else ''}"


class Replay(Strategy):
    """Replays a token's choice stream; divergence raises NondeterminismError."""

    def __init__(self, token: str) -> None:
        self.name, self._seed, self._choices, self._fps, self.params = decode_token_params(
            token
        )
        self._k = 0

    def begin(self, sched: SchedulerView) -> None:
        self._k = 0

    def _next(self) -> int:
        k = self._k
        if k >= len(self._choices):
            raise NondeterminismError(f"replay ran past the {len(self._choices)} recorded choices")
        self._k = k + 1
        return self._choices[k]

    def pick(self, runnable: Sequence[ThreadView], cur: ThreadView | None) -> int:
        return self._next()

    def choose(self, n: int, label: str) -> int:
        return self._next()

    @property
    def seed_text(self) -> str:
        return self._seed

    @property
    def expected(self) -> list[int]:
        return self._fps


# -- replay tokens -----------------------------------------------------------------------------


def _varints(values: list[int], out: bytearray) -> None:
    for v in values:
        while v >= 0x80:
            out.append((v & 0x7F) | 0x80)
            v >>= 7
        out.append(v)


def _read_varints(data: bytes, pos: int, count: int) -> tuple[list[int], int]:
    values: list[int] = []
    for _ in range(count):
        v = shift = 0
        while True:
            b = data[pos]
            pos += 1
            v |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
        values.append(v)
    return values, pos


def encode_token(
    strategy: str,
    seed: str,
    choices: list[int],
    fingerprints: list[int],
    params: dict[str, float] | None = None,
) -> str:
    """`strategy:seed:payload`, the payload a base64 of the compressed choice list and, after
    it, the run's timing-parameter overrides as ``name=value`` lines (none: nothing, so a
    run with the defaults has the token it always had)."""
    raw = bytearray()
    _varints([len(choices)], raw)
    _varints(choices, raw)
    _varints(fingerprints, raw)
    if params:
        raw += "\n".join(f"{k}={v!r}" for k, v in sorted(params.items())).encode()
    payload = base64.urlsafe_b64encode(zlib.compress(bytes(raw), 9)).decode().rstrip("=")
    return f"{strategy}:{seed}:{payload}"


def decode_token_params(token: str) -> tuple[str, str, list[int], list[int], dict[str, float]]:
    """The inverse of :func:`encode_token`, with the parameter overrides."""
    try:
        strategy, seed, payload = token.strip().split(":", 2)
        data = zlib.decompress(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        (count,), pos = _read_varints(data, 0, 1)
        choices, pos = _read_varints(data, pos, count)
        fps, pos = _read_varints(data, pos, count)
        params: dict[str, float] = {}
        for line in data[pos:].decode().splitlines():
            name, _, text = line.partition("=")
            params[name] = float(text)
    except (ValueError, IndexError, zlib.error, UnicodeDecodeError) as e:
        raise ValueError(f"not a replay token: {token[:40]!r}") from e
    return strategy, seed, choices, fps, params


def decode_token(token: str) -> tuple[str, str, list[int], list[int]]:
    """The inverse of :func:`encode_token` (the choice stream only)."""
    strategy, seed, choices, fps, _ = decode_token_params(token)
    return strategy, seed, choices, fps


__all__ = [
    "PCT", "BoundedDFS", "NondeterminismError", "RandomWalk", "Replay", "RunView",
    "SchedulerView", "Strategy", "ThreadView", "decode_token", "decode_token_params",
    "encode_token",
]  # fmt: skip
