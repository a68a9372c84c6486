"""Trace of one model run: deterministic events, a text printout and JSON.

Events carry only deterministic data (step counter, virtual time, thread name, strings), so
replaying a token gives a byte-identical trace. Recording appends plain tuples (cheap);
:attr:`Trace.events` turns them into :class:`TraceEvent`\\ s on demand.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple, Protocol


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class RunClock(Protocol):
    """Where a trace reads each event's step, virtual time and thread (a ``Scheduler``)."""

    @property
    def steps(self) -> int: ...
    @property
    def clock(self) -> float: ...
    @property
    def current(self) -> _Named | None: ...

KINDS = frozenset(
    {
        "spawn", "exit", "syscall", "sysret", "enter", "leave", "lock", "unlock", "wait",
        "wake", "state", "uevent", "point", "choice", "lockdep", "fail",
    }
)  # fmt: skip


class TraceEvent(NamedTuple):
    """One event: the scheduler step, virtual time, the thread, what happened."""

    step: int
    time: float
    thread: str
    kind: str
    name: str
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict of this event."""
        return self._asdict()

    def render(self) -> str:
        """One line of the text printout."""
        tail = f"  {self.detail}" if self.detail else ""
        return (
            f"{self.step:>7} {self.time:>10.6f} {self.thread:<20} {self.kind:<8} {self.name}{tail}"
        )


class Trace:
    """The events of one run, in execution order; `enabled=False` records nothing."""

    __slots__ = ("_events", "_raw", "_sched", "enabled")

    def __init__(self, sched: RunClock | None = None, *, enabled: bool = True) -> None:
        self._sched = sched
        self.enabled = enabled
        self._raw: list[tuple[int, float, str, str, str, str]] = []
        self._events: list[TraceEvent] = []

    def emit(self, kind: str, name: str, detail: str = "") -> None:
        """Record one event for the current thread (no-op when disabled)."""
        if not self.enabled:
            return
        s = self._sched
        if s is None:
            self._raw.append((0, 0.0, "-", kind, name, detail))
            return
        cur = s.current
        self._raw.append(
            (s.steps, s.clock, cur.name if cur is not None else "-", kind, name, detail)
        )

    @property
    def events(self) -> list[TraceEvent]:
        """All events so far (a list that grows with the trace; do not mutate)."""
        events, raw = self._events, self._raw
        if len(events) < len(raw):
            make = TraceEvent._make
            events.extend(make(r) for r in raw[len(events) :])
        return events

    def __len__(self) -> int:
        return len(self._raw)

    def of_kind(self, *kinds: str) -> list[TraceEvent]:
        """The events whose kind is one of `kinds`."""
        return [e for e in self.events if e.kind in kinds]

    def render_text(self) -> str:
        """The replay printout: one line per event."""
        head = f"{'step':>7} {'time':>10} {'thread':<20} {'kind':<8} name  detail"
        return "\n".join([head, *(e.render() for e in self.events)]) + "\n"

    def to_json(self) -> list[dict[str, Any]]:
        """All events as JSON-serialisable dicts."""
        return [e.to_json() for e in self.events]

    def dumps(self) -> str:
        """The events as a JSON string (stable key order)."""
        return json.dumps(self.to_json(), sort_keys=True)
