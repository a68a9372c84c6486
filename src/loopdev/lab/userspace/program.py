"""What a modelled userspace program is: ``(kernel, argv) -> RunResult``, written against the
port only, so it runs inside the model (registered with SimKernel) and on the real kernel."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from loopdev.kernel import Kernel, RunResult
from loopdev.sim.params import EXEC_TIME
from loopdev.sim.sched import param

#: A port program: exit status, stdout and stderr like the real tool's.
Program = Callable[[Kernel, Sequence[str]], RunResult]

#: util-linux exit codes (include/exitcodes.h / libmount's MNT_EX_*).
EX_OK = 0
EX_FAILURE = 1
MNT_EX_USAGE = 1
MNT_EX_SYSERR = 2
MNT_EX_FAIL = 32


def spend_cpu(kernel: Kernel, seconds: float) -> None:
    """Userspace CPU time: ``seconds`` of the virtual clock (``nanosleep`` in the model).

    The model's clock only moves when no task is runnable, so while a program computes, every
    runnable kernel worker runs first — as on a real machine, where a woken kworker gets an
    idle CPU within microseconds and never waits for a whole fork + exec. Races between
    userspace programs stay: how long each one computes is drawn from the choice stream."""
    if seconds > 0:
        kernel.sleep(seconds)


def exec_time(kernel: Kernel) -> None:
    """The CPU a freshly exec()ed util-linux program spends before its first interesting
    system call (fork + exec + ld.so + library start-up: most of what a losetup or mount
    cycle costs on a real machine): uniform in [value/3, value] of the timing parameter
    ``userspace.exec_time`` (default 1-3 ms), drawn from the port's randomness."""
    longest = param(EXEC_TIME)
    spend_cpu(kernel, longest / 3 + longest * 2 / 3 * kernel.random())


def strerror(code: int) -> str:
    """glibc's ``strerror`` text for an errno (Python's table is glibc's)."""
    return os.strerror(code)


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
