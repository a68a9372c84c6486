"""Waiting honestly: bounded jittered backoff, waits until a loop device is detached, and
naming who holds a device or a mount point when a wait runs out.

Only the port is used (``kernel.monotonic``/``sleep``/``random`` for time and jitter), so the
model kernel runs these waits on its virtual clock.
"""

from __future__ import annotations

import errno

from loopdev import sysfs
from loopdev._port import fspath, resolve
from loopdev.errors import Holder
from loopdev.mountinfo import mounts_of_device, parse_mountinfo, read_mountinfo

TYPE_CHECKING = False
if TYPE_CHECKING:
    import os
    from collections.abc import Callable

    from loopdev.kernel import Kernel


class Backoff:
    """A bounded retry budget with growing random jitter.

    ``wait()`` sleeps for the next delay and returns True, or returns False (without
    sleeping) once ``attempts`` or ``timeout`` is used up. Delays grow ``factor`` times per
    attempt from ``base`` up to ``cap``, each drawn uniformly from [d/2, 3d/2].
    """

    __slots__ = (
        "_delay",
        "attempts",
        "base",
        "cap",
        "factor",
        "kernel",
        "start",
        "timeout",
        "tries",
    )

    def __init__(
        self,
        kernel: Kernel,
        timeout: float | None = None,
        attempts: int | None = None,
        base: float = 0.0005,
        cap: float = 0.05,
        factor: float = 2.0,
    ) -> None:
        self.kernel = kernel
        self.timeout = timeout
        self.attempts = attempts
        self.base = base
        self.cap = cap
        self.factor = factor
        self.start: float | None = None  # the clock starts at the first wait (hot paths
        self.tries = 0  # that never retry never read it)
        self._delay = base

    @property
    def elapsed(self) -> float:
        if self.start is None:
            self.start = self.kernel.monotonic()
        return self.kernel.monotonic() - self.start

    def remaining(self) -> float | None:
        return None if self.timeout is None else max(0.0, self.timeout - self.elapsed)

    def wait(self) -> bool:
        if self.attempts is not None and self.tries >= self.attempts:
            return False
        left = self.remaining()
        if left is not None and left <= 0:
            return False
        self.tries += 1
        delay = self._delay * (0.5 + self.kernel.random())
        self._delay = min(self.cap, self._delay * self.factor)
        if left is not None:
            delay = min(delay, left)
        self.kernel.sleep(delay)
        return True

    def describe(self) -> str:
        """The limit, for error messages: '12 retries in 5.00 s (limit 5.0 s)'."""
        limits = []
        if self.attempts is not None:
            limits.append(f"{self.attempts} retries")
        if self.timeout is not None:
            limits.append(f"{self.timeout:g} s")
        return f"{self.tries} retries in {self.elapsed:.2f} s (limit {' / '.join(limits)})"


#: T5: how often an EAGAIN from LOOP_CONFIGURE / SET_STATUS64 / SET_BLOCK_SIZE is retried
#: (util-linux: 10)
MAX_EAGAIN_RETRIES = 10


def retry_eagain(k: Kernel, fn: Callable[[], object]) -> None:
    """Run ``fn``; on EAGAIN retry with growing jitter, bounded (T5)."""
    backoff: Backoff | None = None
    while True:
        try:
            fn()
            return
        except OSError as e:
            if e.errno != errno.EAGAIN:
                raise
            if backoff is None:
                backoff = Backoff(k, attempts=MAX_EAGAIN_RETRIES, base=0.01, cap=0.25)
            if not backoff.wait():
                raise


def is_detached(kernel: Kernel, number: int, diskseq: int | None) -> bool:
    """True once loopN no longer carries the binding identified by ``diskseq``."""
    if not sysfs.is_bound(kernel, number):
        return True
    if diskseq is None:
        return False
    current = sysfs.diskseq(kernel, number)
    return current is not None and current != diskseq


def wait_detached(
    device: int | str | os.PathLike[str],
    *,
    diskseq: int | None = None,
    timeout: float = 5.0,
    kernel: Kernel | None = None,
) -> bool:
    """Wait until the loop device (N, or /dev/loopN) is unbound, or, with ``diskseq``, no
    longer carries that binding; False if ``timeout`` seconds passed first."""
    k = resolve(kernel)
    return wait_unbound(k, loop_number_of(device), diskseq, timeout)


def loop_number_of(device: int | str | os.PathLike[str]) -> int:
    """N of ``N``, ``loopN`` or ``/dev/loopN`` (ValueError for anything else)."""
    if isinstance(device, int):
        return device
    name = fspath(device).rsplit("/", 1)[-1].removeprefix("loop")
    if not name.isdigit():
        raise ValueError(f"not a loop device name: {fspath(device)!r}")
    return int(name)


def wait_unbound(kernel: Kernel, number: int, diskseq: int | None, timeout: float) -> bool:
    """:func:`wait_detached` for the library's own callers."""
    if is_detached(kernel, number, diskseq):
        return True
    backoff = Backoff(kernel, timeout=timeout, base=0.0002, cap=0.02)
    while backoff.wait():
        if is_detached(kernel, number, diskseq):
            return True
    return is_detached(kernel, number, diskseq)


def _pids(kernel: Kernel) -> list[int]:
    try:
        return [int(p) for p in kernel.listdir("/proc") if p.isdigit()]
    except OSError:
        return []


def _comm(kernel: Kernel, pid: int) -> str:
    try:
        return kernel.readfile(f"/proc/{pid}/comm").decode(errors="replace").strip()
    except OSError:
        return "?"


def device_holders(
    device: int | str | os.PathLike[str], *, kernel: Kernel | None = None
) -> list[Holder]:
    """Who holds the loop device (N, or /dev/loopN): mounts of it, sysfs holders (dm, md,
    a stacked loop), processes that have it open; a "kernel" holder when none of those."""
    kernel = resolve(kernel)
    number = loop_number_of(device)
    found: list[Holder] = []
    path = f"/dev/loop{number}"
    rdev = sysfs.rdev(kernel, number)
    if rdev is not None:
        for m in mounts_of_device(kernel, rdev):
            found.append(
                Holder("mount", f"{path} is mounted on {m.target} ({m.fstype})", target=m.target)
            )
    for name in sysfs.holders(kernel, number):
        found.append(Holder("holder", f"{path} is held by /dev/{name} (sysfs holders)"))
    self_pid = kernel.getpid()
    for pid in _pids(kernel):
        if pid == self_pid or rdev is None:
            continue
        try:
            fds = kernel.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                st = kernel.stat(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if st.is_blk and st.rdev == rdev:
                found.append(
                    Holder(
                        "process",
                        f"pid {pid} ({_comm(kernel, pid)}) has {path} open as fd {fd}",
                        pid=pid,
                    )
                )
    return found or [
        Holder("kernel", f"no process or mount holds {path}: a kernel reference is still pending")
    ]


def _under(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


def path_holders(
    target: str | os.PathLike[str], *, kernel: Kernel | None = None
) -> list[Holder]:
    """Processes using files under the mount point ``target`` (fds, cwd, root, mappings) and
    mounts stacked below it."""
    kernel = resolve(kernel)
    target = fspath(target)
    found: list[Holder] = []
    for m in parse_mountinfo(read_mountinfo(kernel)):
        if m.target != target and _under(m.target, target):
            found.append(Holder("mount", f"{m.target} is mounted below {target}"))
    for pid in _pids(kernel):
        uses: list[str] = []
        for what in ("cwd", "root"):
            try:
                if _under(kernel.readlink(f"/proc/{pid}/{what}"), target):
                    uses.append(what)
            except OSError:
                pass
        try:
            for fd in kernel.listdir(f"/proc/{pid}/fd"):
                try:
                    if _under(kernel.readlink(f"/proc/{pid}/fd/{fd}"), target):
                        uses.append(f"fd {fd}")
                except OSError:
                    continue
        except OSError:
            continue
        try:
            maps = kernel.readfile(f"/proc/{pid}/maps").decode(errors="replace")
        except OSError:
            maps = ""
        for line in maps.splitlines():
            parts = line.split(None, 5)
            if len(parts) == 6 and _under(parts[5], target):
                uses.append("a memory mapping")
                break
        if uses:
            found.append(
                Holder(
                    "process",
                    f"pid {pid} ({_comm(kernel, pid)}) uses {target}: {', '.join(uses)}",
                    pid=pid,
                )
            )
    return found
