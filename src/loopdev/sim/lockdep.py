"""Lockdep for the model: lock classes, held-lock stacks, the dependency graph and reports.

Acquiring lock class B records the dependency A -> B from the most recently acquired lock A
the task holds (and from any trylocks held on top of A), as ``check_prevs_add`` does, with
the kernel stacks (kfunc names) of both acquisitions; trylocks record no dependency of their
own. A new dependency that closes a cycle is reported in the
kernel's own report shape. Read acquisitions follow lockdep's recursive-read rule: a cycle only
counts if it is *strong*, i.e. no lock on it is entered through a recursive-read acquisition
(read=2, e.g. ``lock_map_acquire_read``) and left while held shared. Non-recursive readers
(read=1: percpu rwsem, rwsem) block behind waiting writers and so do not relax anything.
"""

from __future__ import annotations

import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol


class LockOwner(Protocol):
    """What lockdep reads of a thread (a scheduler's ``Thread``)."""

    @property
    def kstack(self) -> list[str]:
        """The kfunc names it is inside, outermost first."""
        ...

    @property
    def held(self) -> list[Any]:
        """Its held-lock stack (:class:`HeldLock` entries), kept by lockdep."""
        ...

    @property
    def ident(self) -> str:
        """``comm/pid``."""
        ...


class _Emitter(Protocol):
    def emit(self, kind: str, name: str, detail: str = "") -> None: ...


class TracedRun(Protocol):
    """The run whose trace a report is recorded in (a ``Scheduler``)."""

    @property
    def tracing(self) -> bool: ...
    @property
    def trace(self) -> _Emitter: ...

#: lockdep wait types (inner:outer) by primitive kind
WAIT_SLEEP = (3, 3)  # mutex, rwsem, percpu rwsem
WAIT_SPIN = (2, 2)  # spinlock_t
WAIT_MAP = (0, 0)  # lockdep maps (workqueue, queue freeze, ...)


@dataclass(eq=False)
class LockClass:
    """A lock class: all locks sharing a name (`&lo->lo_mutex`) share dependencies."""

    name: str
    wait_type: tuple[int, int] = WAIT_SLEEP
    used_write: bool = False
    used_read: bool = False

    def usage(self) -> str:
        """The `{+.+.}` usage string (hardirq/softirq-enabled, write/read)."""
        w = "+" if self.used_write or not self.used_read else "."
        r = "+" if self.used_read else "."
        return w + r + w + r

    def label(self) -> str:
        """`(name){usage}-{inner:outer}` as lockdep prints a class."""
        return f"({self.name}){{{self.usage()}}}-{{{self.wait_type[0]}:{self.wait_type[1]}}}"


@dataclass
class HeldLock:
    """One entry of a thread's held-lock stack."""

    cls: LockClass
    lock: object
    read: int
    trylock: bool
    stack: tuple[str, ...]  # innermost frame first

    @property
    def address(self) -> str:
        name = getattr(self.lock, "name", self.cls.name)
        return f"ffff8880{zlib.crc32(str(name).encode()):08x}"

    @property
    def at(self) -> str:
        return self.stack[1] if len(self.stack) > 1 else self.stack[0]

    def line(self) -> str:
        return f"{self.address} {self.cls.label()}, at: {self.at}"


@dataclass(frozen=True)
class Edge:
    """The dependency prev -> next, with both acquisitions' stacks."""

    prev: str
    next: str
    prev_shared: bool  # prev was held as a reader
    next_recursive: bool  # next was acquired as a recursive reader
    prev_stack: tuple[str, ...]
    next_stack: tuple[str, ...]
    thread: str


class LockGraph:
    """The dependency graph over lock classes (may persist across runs of an exploration)."""

    def __init__(self) -> None:
        self.classes: dict[str, LockClass] = {}
        self.after: dict[str, dict[str, list[Edge]]] = {}

    def lock_class(self, name: str, wait_type: tuple[int, int] = WAIT_SLEEP) -> LockClass:
        cls = self.classes.get(name)
        if cls is None:
            cls = self.classes[name] = LockClass(name, wait_type)
        return cls

    def has_edge(self, prev: str, nxt: str, shared: bool, recursive: bool) -> bool:
        for e in self.after.get(prev, {}).get(nxt, ()):
            if e.prev_shared == shared and e.next_recursive == recursive:
                return True
        return False

    def add(self, edge: Edge) -> None:
        self.after.setdefault(edge.prev, {}).setdefault(edge.next, []).append(edge)

    def strong_path(
        self, src: str, src_recursive: bool, dst: str, dst_shared: bool
    ) -> list[Edge] | None:
        """Shortest strong path src -> ... -> dst (entered src recursively if `src_recursive`;
        the path must be closable by an edge leaving dst shared if `dst_shared`)."""
        start = (src, src_recursive)
        parent: dict[tuple[str, bool], tuple[tuple[str, bool], Edge] | None] = {start: None}
        queue = deque([start])
        while queue:
            state = queue.popleft()
            node, entered_recursive = state
            for nxt, edges in self.after.get(node, {}).items():
                for e in edges:
                    if entered_recursive and e.prev_shared:
                        continue  # -(*R)-> -(S*)->: not a strong path
                    ns = (nxt, e.next_recursive)
                    if ns in parent:
                        continue
                    parent[ns] = (state, e)
                    if nxt == dst and not (e.next_recursive and dst_shared):
                        path: list[Edge] = []
                        cur: tuple[str, bool] = ns
                        while (p := parent[cur]) is not None:
                            path.append(p[1])
                            cur = p[0]
                        path.reverse()
                        return path
                    queue.append(ns)
        return None


@dataclass
class LockdepReport:
    """One lockdep splat: its kind, the classes involved and the kernel-shaped text."""

    kind: str  # "circular" | "recursive" | "atomic-sleep" | "user-return"
    classes: tuple[str, ...]
    thread: str
    text: str = field(repr=False)

    @property
    def key(self) -> tuple[str, ...]:
        return (self.kind, *sorted(set(self.classes)))

    @property
    def title(self) -> str:
        for line in self.text.splitlines():
            if line.startswith(("WARNING:", "BUG:")):
                return line
        return self.kind

    def format(self) -> str:
        """The report as the kernel prints it."""
        return self.text


def _lock_word(read: int) -> str:
    return "rlock(" if read else "lock("


class Lockdep:
    """Per-run lockdep state: acquire/release hooks for primitives, collected reports."""

    ident = "loopdev-model #1 Not tainted"

    def __init__(
        self, sched: TracedRun | None, *, graph: LockGraph | None = None, enabled: bool = True
    ) -> None:
        self.sched = sched
        self.graph = graph if graph is not None else LockGraph()
        self.enabled = enabled
        self.reports: list[LockdepReport] = []
        self._reported: set[tuple[str, ...]] = set()

    def acquire(
        self,
        thread: LockOwner | None,
        lock: object,
        class_name: str,
        *,
        wait_type: tuple[int, int] = WAIT_SLEEP,
        read: int = 0,
        trylock: bool = False,
        op: str = "lock_acquire",
    ) -> None:
        """Record that `thread` is acquiring `lock` (before it may wait for it)."""
        if not self.enabled or thread is None:
            return
        graph = self.graph
        cls = graph.lock_class(class_name, wait_type)
        if read:
            cls.used_read = True
        else:
            cls.used_write = True
        stack = (op, *reversed(thread.kstack))
        new = HeldLock(cls, lock, read, trylock, stack)
        if not trylock and self._check_deadlock(thread, new):
            self._check_prevs_add(thread, new)
        thread.held.append(new)

    def _check_deadlock(self, thread: LockOwner, new: HeldLock) -> bool:
        """kernel/locking/lockdep.c ``check_deadlock``: the same class already held is a
        possible recursive deadlock, unless the new acquisition is a recursive read of a
        class held for reading. False: reported (the kernel stops there)."""
        for held in thread.held:
            if held.cls is new.cls and not (new.read == 2 and held.read):
                self._report_recursive(thread, new, held)
                return False
        return True

    def _check_prevs_add(self, thread: LockOwner, new: HeldLock) -> None:
        """kernel/locking/lockdep.c ``check_prevs_add``: a dependency from the most recently
        acquired held lock, and from the held trylocks on top of it; older held locks are
        connected through it already (their own acquisitions recorded theirs)."""
        graph = self.graph
        cls, recursive = new.cls, new.read == 2
        for held in reversed(thread.held):
            shared = held.read > 0
            if held.cls is not cls and not graph.has_edge(
                held.cls.name, cls.name, shared, recursive
            ):
                edge = Edge(
                    held.cls.name, cls.name, shared, recursive, held.stack, new.stack,
                    thread.ident,
                )
                path = graph.strong_path(cls.name, recursive, held.cls.name, shared)
                graph.add(edge)
                if path is not None:
                    self._report_circular(thread, new, held, path)
            if not held.trylock:
                break

    def release(self, thread: LockOwner | None, lock: object) -> None:
        """Drop `lock` from the thread's held stack (any position, as lock_release)."""
        if not self.enabled or thread is None:
            return
        held = thread.held
        for i in range(len(held) - 1, -1, -1):
            if held[i].lock is lock:
                del held[i]
                return

    def check_sleep(self, thread: LockOwner | None, what: str) -> None:
        """`might_sleep()`: report sleeping while holding a spinlock."""
        if not self.enabled or thread is None:
            return
        spins = [h for h in thread.held if h.cls.wait_type == WAIT_SPIN]
        if not spins:
            return
        frames = (what, *reversed(thread.kstack))
        out = [
            f"BUG: sleeping function called from invalid context at {frames[-1] if len(frames) > 1 else what}",
            f"in_atomic(): 1, irqs_disabled(): 0, non_block: 0, pid: {thread.ident.rsplit('/', 1)[-1]}, name: {thread.ident.rsplit('/', 1)[0]}",
            "preempt_count: 1, expected: 0",
            *self._held_lines(thread),
            "Call Trace:",
            *(f" {frame}" for frame in frames),
        ]
        classes = tuple(h.cls.name for h in spins)
        self._emit(
            LockdepReport("atomic-sleep", (*classes, what), thread.ident, "\n".join(out) + "\n")
        )

    def check_user_return(self, thread: LockOwner | None) -> None:
        """Report locks still held when a task returns to user space."""
        if not self.enabled or thread is None or not thread.held:
            return
        bar = "=" * 46
        out = [
            "",
            bar,
            "WARNING: lock held when returning to user space!",
            self.ident,
            "-" * 46,
            f"{thread.ident} is leaving the kernel with locks still held!",
            *self._held_lines(thread),
        ]
        classes = tuple(h.cls.name for h in thread.held)
        self._emit(LockdepReport("user-return", classes, thread.ident, "\n".join(out) + "\n"))

    # -- reports ---------------------------------------------------------------------------

    def _held_lines(self, thread: LockOwner) -> list[str]:
        n = len(thread.held)
        lines = [f"{n} lock{'s' if n != 1 else ''} held by {thread.ident}:"]
        lines += [f" #{i}: {h.line()}" for i, h in enumerate(thread.held)]
        return lines

    def _emit(self, report: LockdepReport) -> None:
        if report.key in self._reported:
            return
        self._reported.add(report.key)
        self.reports.append(report)
        s = self.sched
        if s is not None and s.tracing:
            s.trace.emit("lockdep", report.title, " -> ".join(report.classes))

    def _report_circular(
        self, thread: LockOwner, new: HeldLock, held: HeldLock, path: list[Edge]
    ) -> None:
        classes = self.graph.classes
        src, tgt = new.cls, held.cls
        parent = classes[path[-1].prev] if path else src
        bar = "=" * 54
        out = [
            "",
            bar,
            "WARNING: possible circular locking dependency detected",
            self.ident,
            "-" * 54,
            f"{thread.ident} is trying to acquire lock:",
            new.address + f" {src.label()}, at: {new.at}",
            "",
            "but task is already holding lock:",
            held.line(),
            "",
            "which lock already depends on the new lock.",
            "",
            "",
            "the existing dependency chain (in reverse order) is:",
        ]
        depth = len(path)
        for edge in reversed(path):
            out += ["", f"-> #{depth} {classes[edge.next].label()}:"]
            out += [f"       {frame}" for frame in edge.next_stack]
            depth -= 1
        out += ["", f"-> #0 {src.label()}:"]
        out += [f"       {frame}" for frame in new.stack]
        out += ["", "other info that might help us debug this:", ""]
        if parent is not src:
            out += [f"Chain exists of:\n  {src.name} --> {parent.name} --> {tgt.name}", ""]
        pad = " " * 31
        out += [
            " Possible unsafe locking scenario:",
            "",
            "       CPU0                    CPU1",
            "       ----                    ----",
            f"  {_lock_word(held.read)}{tgt.name});",
            f"{pad}lock({parent.name});",
            f"{pad}{_lock_word(held.read)}{tgt.name});",
            f"  {_lock_word(new.read)}{src.name});",
            "",
            " *** DEADLOCK ***",
            "",
            *self._held_lines(thread),
            "",
            "stack backtrace:",
            *(f"  {frame}" for frame in new.stack),
        ]
        chain = (src.name, *(e.next for e in path))
        self._emit(LockdepReport("circular", chain, thread.ident, "\n".join(out) + "\n"))

    def _report_recursive(self, thread: LockOwner, new: HeldLock, held: HeldLock) -> None:
        bar = "=" * 44
        name = new.cls.name
        out = [
            "",
            bar,
            "WARNING: possible recursive locking detected",
            self.ident,
            "-" * 44,
            f"{thread.ident} is trying to acquire lock:",
            new.address + f" {new.cls.label()}, at: {new.at}",
            "",
            "but task is already holding lock:",
            held.line(),
            "",
            "other info that might help us debug this:",
            " Possible unsafe locking scenario:",
            "",
            "       CPU0",
            "       ----",
            f"  {_lock_word(held.read)}{name});",
            f"  {_lock_word(new.read)}{name});",
            "",
            " *** DEADLOCK ***",
            "",
            " May be due to missing lock nesting notation",
            "",
            *self._held_lines(thread),
            "",
            "stack backtrace:",
            *(f"  {frame}" for frame in new.stack),
        ]
        self._emit(LockdepReport("recursive", (name,), thread.ident, "\n".join(out) + "\n"))
