"""What a modelled userspace program is: ``(kernel, argv) -> RunResult``, written against the
port only, so it runs inside the model (registered with SimKernel) and on the real kernel."""

from __future__ import annotations

import errno as _errno
import os
from collections.abc import Callable, Sequence

from loopdev.kernel import Kernel, RunResult

#: A port program: exit status, stdout and stderr like the real tool's.
Program = Callable[[Kernel, Sequence[str]], RunResult]

#: util-linux exit codes (include/exitcodes.h / libmount's MNT_EX_*).
EX_OK = 0
EX_FAILURE = 1
MNT_EX_USAGE = 1
MNT_EX_SYSERR = 2
MNT_EX_SOFTWARE = 4
MNT_EX_FAIL = 32


#: exec cost of a program, in sched_yield calls (see :func:`exec_cost`).
EXEC_YIELDS_MIN = 10
EXEC_YIELDS_RANGE = 40


def spend_cpu(kernel: Kernel, yields: int) -> None:
    """Userspace CPU time in the model's currency: ``yields`` ``sched_yield`` calls. A kernel
    that can make them in one go (the model's ``sched_yields``) does; otherwise
    ``sleep(0)`` each."""
    batch = getattr(kernel, "sched_yields", None)
    if batch is not None:
        batch(yields)
        return
    for _ in range(yields):
        kernel.sleep(0)


def exec_cost(kernel: Kernel) -> None:
    """The CPU a freshly exec()ed program spends before its first interesting system call
    (ld.so, libc and libmount start-up, option parsing: about a millisecond on a real
    machine, far longer than a runnable kworker waits for a CPU). The model does not charge
    virtual time for userspace computation, so this is spent as ``sched_yield`` calls
    (scheduling points), ``EXEC_YIELDS_MIN`` plus a random share of ``EXEC_YIELDS_RANGE``
    drawn from ``kernel.random()``. On the real kernel it is a few no-op yields."""
    spend_cpu(kernel, EXEC_YIELDS_MIN + int(EXEC_YIELDS_RANGE * kernel.random()))


def strerror(code: int) -> str:
    """glibc's ``strerror`` text for an errno (Python's table is glibc's)."""
    return os.strerror(code)


def errno_of(e: OSError) -> int:
    return e.errno if e.errno is not None else _errno.EIO


def ok(stdout: str = "") -> RunResult:
    return RunResult(EX_OK, stdout, "")


def fail(status: int, message: str, stdout: str = "") -> RunResult:
    """A failed run whose stderr is ``message`` (one line, newline added)."""
    return RunResult(status, stdout, message + "\n")


_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def strtosize(text: str) -> int:
    """util-linux ``strtosize``: ``4096``, ``64K``, ``1MiB``, ``2g`` -> bytes; ValueError."""
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    mult = _UNITS.get(t[-1:], 1)
    if mult != 1:
        t = t[:-1]
    n = int(t, 0) * mult
    if n < 0:
        raise ValueError(f"negative size: {text!r}")
    return n
