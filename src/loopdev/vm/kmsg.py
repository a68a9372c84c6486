"""The guest kernel's log as the agent reads it between trials: the records ``/dev/kmsg``
got since the last read, as console-shaped lines (``[   12.345678] text``, which
:func:`loopdev.vm.lockdep_report.parse_reports` reads), and whether lockdep is still on.

``/dev/kmsg`` holds every message whatever the console log level, and a read happens right
after each trial, so a lockdep report goes to the trial whose code printed it without
comparing clocks.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re

KMSG = "/dev/kmsg"
LOCKDEP_STATS = "/proc/lockdep_stats"
_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")


def record_lines(raw: bytes) -> list[str]:
    """One ``/dev/kmsg`` record (``prio,seq,usec,flags;text`` then `` KEY=value`` lines) as
    console lines: the time stamp in front, ``\\xNN`` escapes undone (a record with a newline
    becomes several lines)."""
    head, sep, rest = raw.partition(b";")
    fields = head.split(b",")
    if not sep or len(fields) < 3 or not fields[2].isdigit():
        return []
    usec = int(fields[2])
    text = rest.split(b"\n", 1)[0].decode("utf-8", "replace")
    text = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)
    stamp = f"[{usec // 1_000_000:5d}.{usec % 1_000_000:06d}]"
    return [f"{stamp} {line}" for line in text.split("\n")]


class KernelLog:
    """``/dev/kmsg`` opened at its end: :meth:`read_new` returns what came since."""

    def __init__(self, path: str = KMSG) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        os.lseek(self.fd, 0, os.SEEK_END)

    def read_new(self) -> str:
        """Every record since the last call, as console text."""
        lines: list[str] = []
        while True:
            try:
                raw = os.read(self.fd, 16384)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.EPIPE:  # records overwritten before we read them
                    lines.append("[    0.000000] loopdev-vm: kernel log records were lost")
                    continue
                raise
            if not raw:
                break
            lines.extend(record_lines(raw))
        return "".join(line + "\n" for line in lines)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def lockdep_on(path: str = LOCKDEP_STATS) -> bool | None:
    """Whether lockdep is checking (``debug_locks`` of ``/proc/lockdep_stats``): False once it
    has switched itself off (after its first report), None on a kernel without lockdep."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    m = re.search(r"^\s*debug_locks:\s*(\d+)", text, re.M)
    return None if m is None else m.group(1) != "0"
