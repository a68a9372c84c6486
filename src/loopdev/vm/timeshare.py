"""Sharing a deadline among guests that run a few at a time.

Each guest, when it starts, gets a budget: its estimate's share of the slot-seconds left
before the deadline, counting the guests not started yet and what the running ones may still
use. A machine slower than the estimates then cuts every guest a little (its costly cells,
run last) instead of leaving the last guests unstarted; one faster than them finishes early
and leaves its time to the guests after it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

#: a guest is not started when less than this many seconds are left (a boot alone takes
#: 8-16 s under TCG); it gets at least this much when it is started
MIN_SECONDS = 25.0
#: seconds a guest runs past its budget: the trial in progress, the cleanup, the power-off
TAIL_SECONDS = 4.0


class TimeShare:
    """Budgets for guests ``0..n-1`` with these estimated durations, ``slots`` at a time,
    all done by ``deadline`` (a ``time.monotonic()`` value)."""

    def __init__(self, deadline: float, slots: int, estimates: Sequence[float]) -> None:
        self.deadline = deadline
        self.slots = max(1, slots)
        self.estimates = [max(1.0, e) for e in estimates]
        self.pending = set(range(len(self.estimates)))
        self.ends: dict[int, float] = {}  # running guest -> when its budget ends
        self._lock = threading.Lock()

    def start(self, i: int, now: float | None = None) -> float | None:
        """The seconds guest ``i`` may run from now, or None when it is too late to start
        it (it then counts as done)."""
        with self._lock:
            now = time.monotonic() if now is None else now
            self.pending.discard(i)
            left = self.deadline - now
            if left < MIN_SECONDS:
                return None
            running = sum(max(0.0, end - now) for end in self.ends.values())
            capacity = max(0.0, left * self.slots - running)
            waiting = self.estimates[i] + sum(self.estimates[j] for j in self.pending)
            share = capacity * self.estimates[i] / waiting
            budget = min(left, max(MIN_SECONDS, share))
            self.ends[i] = now + budget + TAIL_SECONDS
            return budget

    def finish(self, i: int) -> None:
        """Guest ``i`` is gone: the rest of its budget goes to the others."""
        with self._lock:
            self.ends.pop(i, None)
