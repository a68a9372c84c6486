"""Synchronisation primitives of the model kernel.

Every operation is a scheduling point and a trace event; sleeping locks and lockdep maps feed
lockdep (acquire is recorded before waiting, as the kernel's `lock_acquire` does).
"""

from __future__ import annotations

import errno
from collections.abc import Callable

from loopdev.sim import sched as _sched
from loopdev.sim.lockdep import WAIT_MAP, WAIT_SLEEP, WAIT_SPIN
from loopdev.sim.sched import Scheduler, Thread


def _s() -> Scheduler:
    s = _sched._current
    if s is None:
        raise _sched.SchedulerError("model primitives need a running scheduler")
    return s


def _interrupted(what: str) -> OSError:
    return OSError(errno.EINTR, f"killable wait for {what} interrupted by a fatal signal")


class Mutex:
    """A sleeping lock (`struct mutex`)."""

    kind = "mutex"
    wait_type = WAIT_SLEEP

    def __init__(self, name: str, lock_class: str | None = None) -> None:
        self.name = name
        self.lock_class = lock_class or name
        self.holder: Thread | None = None
        self.waiters: list[Thread] = []

    def lock(self) -> None:
        """Acquire, sleeping while another thread holds it."""
        s = _s()
        s.yield_point(self.name)
        cur = s.current
        s.lockdep.acquire(
            cur, self, self.lock_class, wait_type=self.wait_type, op=f"{self.kind}_lock"
        )
        while self.holder is not None:
            if cur is None:
                raise _sched.SchedulerError(f"{self.name} is contended outside a thread")
            self.waiters.append(cur)
            if s.tracing:
                s.trace.emit("wait", self.name, self.kind)
            s.block(self)
        self.holder = cur
        if s.tracing:
            s.trace.emit("lock", self.name, self.kind)

    def trylock(self) -> bool:
        """Acquire if free; never sleeps."""
        s = _s()
        s.yield_point(self.name)
        if self.holder is not None:
            if s.tracing:
                s.trace.emit("point", f"{self.kind}_trylock", f"{self.name} busy")
            return False
        cur = s.current
        s.lockdep.acquire(
            cur, self, self.lock_class, wait_type=self.wait_type, trylock=True,
            op=f"{self.kind}_trylock",
        )  # fmt: skip
        self.holder = cur
        if s.tracing:
            s.trace.emit("lock", self.name, f"{self.kind} trylock")
        return True

    def unlock(self) -> None:
        """Release and wake one waiter."""
        s = _s()
        s.yield_point(self.name)
        if self.holder is not s.current:
            raise RuntimeError(f"{self.name}: unlock by a thread that does not hold it")
        s.lockdep.release(s.current, self)
        self.holder = None
        if self.waiters:
            s.wake(self.waiters.pop(0))
        if s.tracing:
            s.trace.emit("unlock", self.name, self.kind)

    def is_locked(self) -> bool:
        return self.holder is not None

    def __enter__(self) -> Mutex:
        self.lock()
        return self

    def __exit__(self, *exc: object) -> None:
        self.unlock()


class SpinLock(Mutex):
    """`spinlock_t`: same API (plus `spin_lock`/`spin_unlock`), lockdep wait type {2:2}.

    A contended spinlock blocks the model thread until the holder unlocks; that stands for
    spinning, not sleeping, so it is no "sleeping function called from invalid context"."""

    kind = "spin"
    wait_type = WAIT_SPIN
    spins = True  # Scheduler.block: waiting for it is not a sleep

    def spin_lock(self) -> None:
        self.lock()

    def spin_unlock(self) -> None:
        self.unlock()


class Atomic:
    """`atomic_t`: every access is a scheduling point."""

    __slots__ = ("name", "value")

    def __init__(self, value: int = 0, name: str = "atomic") -> None:
        self.value = value
        self.name = name

    def _op(self, op: str, v: int) -> None:
        s = _sched._current
        if s is not None and s.tracing:
            s.trace.emit("point", op, f"{self.name}={v}")

    def read(self) -> int:
        s = _sched._current
        if s is not None:
            s.yield_point(self.name)
            if s.tracing:
                s.trace.emit("point", "atomic_read", f"{self.name}={self.value}")
        return self.value

    def set(self, value: int) -> None:
        s = _sched._current
        if s is not None:
            s.yield_point(self.name)
        self.value = value
        self._op("atomic_set", value)

    def add_return(self, delta: int) -> int:
        s = _sched._current
        if s is None:
            v = self.value = self.value + delta
            return v
        s.yield_point(self.name)
        v = self.value = self.value + delta
        if s.tracing:
            s.trace.emit("point", "atomic_add_return", f"{self.name}={v}")
        return v

    def inc_return(self) -> int:
        s = _sched._current
        if s is None:
            v = self.value = self.value + 1
            return v
        s.yield_point(self.name)
        v = self.value = self.value + 1
        if s.tracing:
            s.trace.emit("point", "atomic_inc_return", f"{self.name}={v}")
        return v

    def dec_return(self) -> int:
        return self.add_return(-1)

    def inc(self) -> None:
        self.add_return(1)

    def dec(self) -> None:
        self.add_return(-1)

    def dec_and_test(self) -> bool:
        return self.add_return(-1) == 0

    def cmpxchg(self, old: int, new: int) -> int:
        """Set to `new` if the value is `old`; returns the value seen."""
        s = _sched._current
        if s is not None:
            s.yield_point(self.name)
        seen = self.value
        if seen == old:
            self.value = new
        self._op("atomic_cmpxchg", self.value)
        return seen


class WaitQueue:
    """`wait_queue_head_t`: threads waiting for a condition."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.waiters: list[Thread] = []

    def __repr__(self) -> str:
        return f"WaitQueue({self.name})"


def _sleep_until(
    s: Scheduler,
    obj: WaitQueue | Completion,
    waiters: list[Thread],
    cond: Callable[[], bool],
    timeout: float | None,
    killable: bool,
    how: str,
) -> bool:
    """Sleep on `obj` until `cond()` (True) or the virtual timeout (False); EINTR if killed."""
    cur = s._need_current()
    deadline = None if timeout is None else s.clock + timeout
    while not cond():
        if killable and cur.fatal_signal_pending():
            raise _interrupted(obj.name)
        remaining = None
        if deadline is not None:
            remaining = deadline - s.clock
            if remaining <= 0:
                if s.tracing:
                    s.trace.emit("wake", obj.name, "timeout")
                return False
        waiters.append(cur)
        if s.tracing:
            s.trace.emit("wait", obj.name, how)
        s.block(obj, timeout=remaining, killable=killable)
        if cur in waiters:
            waiters.remove(cur)
    return True


def wait_event(
    wq: WaitQueue,
    cond: Callable[[], bool],
    timeout: float | None = None,
    *,
    killable: bool = False,
) -> bool:
    """Sleep until `cond()` holds (True) or the virtual `timeout` passes (False).

    `killable=True` is `wait_event_killable`: a fatal signal ends the wait with OSError(EINTR).
    """
    s = _s()
    s.yield_point("")  # cond() may read any shared state: dependent with everything
    return _sleep_until(s, wq, wq.waiters, cond, timeout, killable, "wait_event")


def wait_event_killable(
    wq: WaitQueue, cond: Callable[[], bool], timeout: float | None = None
) -> bool:
    """`wait_event_killable`: raises OSError(EINTR) on SIGKILL."""
    return wait_event(wq, cond, timeout, killable=True)


def wake_up(wq: WaitQueue) -> None:
    """Wake the waiters (all `wait_event` waiters are non-exclusive, as in the kernel)."""
    s = _s()
    s.yield_point(wq.name)
    n = len(wq.waiters)
    for t in wq.waiters:
        s.wake(t)
    wq.waiters.clear()
    if s.tracing:
        s.trace.emit("wake", wq.name, f"{n} waiter(s)")


def wake_up_all(wq: WaitQueue) -> None:
    """Wake every waiter."""
    wake_up(wq)


class Completion:
    """`struct completion`."""

    ALL = 1 << 30

    def __init__(self, name: str) -> None:
        self.name = name
        self.done = 0
        self.waiters: list[Thread] = []

    def _wait(self, timeout: float | None, killable: bool) -> bool:
        s = _s()
        s.yield_point(self.name)
        if not _sleep_until(
            s, self, self.waiters, self.completion_done, timeout, killable, "completion"
        ):
            return False
        if self.done != self.ALL:
            self.done -= 1
        return True

    def wait_for_completion(self) -> None:
        self._wait(None, False)

    def wait_for_completion_timeout(self, timeout: float) -> bool:
        """False if `timeout` virtual seconds passed first."""
        return self._wait(timeout, False)

    def wait_for_completion_killable(self) -> None:
        """Raises OSError(EINTR) on SIGKILL."""
        self._wait(None, True)

    def complete(self) -> None:
        s = _s()
        s.yield_point(self.name)
        if self.done != self.ALL:
            self.done += 1
        if self.waiters:
            s.wake(self.waiters.pop(0))
        if s.tracing:
            s.trace.emit("wake", self.name, "complete")

    def complete_all(self) -> None:
        s = _s()
        s.yield_point(self.name)
        self.done = self.ALL
        for t in self.waiters:
            s.wake(t)
        self.waiters.clear()
        if s.tracing:
            s.trace.emit("wake", self.name, "complete_all")

    def reinit_completion(self) -> None:
        self.done = 0

    def completion_done(self) -> bool:
        return self.done > 0


class PercpuRwsem:
    """`struct percpu_rw_semaphore` (e.g. `sb_writers`): readers share, a writer waits for
    readers to drain and blocks new readers from the moment it starts waiting."""

    def __init__(self, name: str, lock_class: str | None = None) -> None:
        self.name = name
        self.lock_class = lock_class or name
        self.readers: list[Thread] = []
        self.writer: Thread | None = None
        self.writer_waiting = 0
        self.waiters: list[Thread] = []

    @property
    def holders(self) -> list[Thread]:
        """Who the wait-for graph blames: the writer, else the readers."""
        return [self.writer] if self.writer is not None else list(self.readers)

    def _sleep(self, s: Scheduler, cur: Thread, how: str) -> None:
        self.waiters.append(cur)
        if s.tracing:
            s.trace.emit("wait", self.name, how)
        s.block(self)
        if cur in self.waiters:
            self.waiters.remove(cur)

    def _wake_all(self, s: Scheduler) -> None:
        for t in self.waiters:
            s.wake(t)
        self.waiters.clear()

    def down_read(self) -> None:
        s = _s()
        s.yield_point(self.name)
        cur = s._need_current()
        s.lockdep.acquire(cur, self, self.lock_class, read=1, op="percpu_down_read")
        while self.writer is not None or self.writer_waiting:
            self._sleep(s, cur, "percpu_down_read")
        self.readers.append(cur)
        if s.tracing:
            s.trace.emit("lock", self.name, "read")

    def down_read_trylock(self) -> bool:
        s = _s()
        s.yield_point(self.name)
        cur = s._need_current()
        if self.writer is not None or self.writer_waiting:
            return False
        s.lockdep.acquire(
            cur, self, self.lock_class, read=1, trylock=True, op="percpu_down_read_trylock"
        )
        self.readers.append(cur)
        if s.tracing:
            s.trace.emit("lock", self.name, "read trylock")
        return True

    def up_read(self) -> None:
        s = _s()
        s.yield_point(self.name)
        cur = s._need_current()
        s.lockdep.release(cur, self)
        self.readers.remove(cur)
        if not self.readers:
            self._wake_all(s)
        if s.tracing:
            s.trace.emit("unlock", self.name, "read")

    def down_write(self) -> None:
        s = _s()
        s.yield_point(self.name)
        cur = s._need_current()
        s.lockdep.acquire(cur, self, self.lock_class, op="percpu_down_write")
        while self.writer is not None:
            self._sleep(s, cur, "percpu_down_write")
        self.writer_waiting += 1
        while self.readers:
            self._sleep(s, cur, "percpu_down_write: readers")
        self.writer_waiting -= 1
        self.writer = cur
        if s.tracing:
            s.trace.emit("lock", self.name, "write")

    def up_write(self) -> None:
        s = _s()
        s.yield_point(self.name)
        s.lockdep.release(s.current, self)
        self.writer = None
        self._wake_all(s)
        if s.tracing:
            s.trace.emit("unlock", self.name, "write")


class LockdepMap:
    """A lockdep pseudo-lock for waits that are not locks (flush, freeze, in-flight I/O)."""

    def __init__(self, name: str, lock_class: str | None = None) -> None:
        self.name = name
        self.lock_class = lock_class or name


def _map_acquire(m: LockdepMap, read: int, op: str, *, trylock: bool = False) -> None:
    s = _s()
    s.yield_point(m.name)
    s.lockdep.acquire(
        s.current, m, m.lock_class, wait_type=WAIT_MAP, read=read, trylock=trylock, op=op
    )
    if s.tracing:
        s.trace.emit("lock", m.name, "map read" if read else "map")


def lock_map_acquire(m: LockdepMap) -> None:
    """Acquire a lockdep map exclusively."""
    _map_acquire(m, 0, "lock_map_acquire")


def lock_map_acquire_read(m: LockdepMap) -> None:
    """Acquire a lockdep map as a recursive reader."""
    _map_acquire(m, 2, "lock_map_acquire_read")


def rwsem_acquire(m: LockdepMap, *, trylock: bool = False) -> None:
    """``rwsem_acquire(map, 0, trylock, ip)``: a write acquisition of a lockdep map, a
    trylock when ``trylock`` (no dependency leads to it)."""
    _map_acquire(m, 0, "rwsem_acquire", trylock=trylock)


def rwsem_acquire_read(m: LockdepMap, *, trylock: bool = False) -> None:
    """``rwsem_acquire_read(map, 0, trylock, ip)``: a non-recursive read acquisition."""
    _map_acquire(m, 1, "rwsem_acquire_read", trylock=trylock)


def lock_map_release(m: LockdepMap) -> None:
    """Release a lockdep map."""
    s = _s()
    s.yield_point(m.name)
    s.lockdep.release(s.current, m)
    if s.tracing:
        s.trace.emit("unlock", m.name, "map")


__all__ = [
    "Atomic", "Completion", "LockdepMap", "Mutex", "PercpuRwsem", "SpinLock", "WaitQueue",
    "lock_map_acquire", "lock_map_acquire_read", "lock_map_release", "rwsem_acquire",
    "rwsem_acquire_read", "wait_event",
    "wait_event_killable", "wake_up", "wake_up_all",
]  # fmt: skip
