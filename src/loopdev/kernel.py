"""The Kernel port: the syscall-level operations the library and the lab are written against.

Two implementations exist: :class:`loopdev.linux.LinuxKernel` (the running kernel, through
``os``, ``fcntl``, ctypes libc and netlink) and :class:`loopdev.sim.kernel.SimKernel` (the model
kernel, with a selectable loop-driver variant). Both take and return the same bytes
(``loopdev.abi`` structs in ``bytearray``\\ s) and raise :class:`OSError` with the real errno.

Rules for users of the port:

* Never import ``os``/``fcntl``/``ctypes`` for kernel work in library code: call the port.
* Time and randomness come from the port too (:meth:`Kernel.monotonic`, :meth:`Kernel.sleep`,
  :meth:`Kernel.random`), so the model can run bounded waits on a virtual clock and replay
  jitter from its choice stream.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from loopdev.kstat import Stat as Stat  # defined apart: the library's hot paths need no dataclasses


@dataclass(frozen=True)
class Uevent:
    """One kernel uevent as read from the ``NETLINK_KOBJECT_UEVENT`` socket."""

    action: str
    devpath: str
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def subsystem(self) -> str:
        return self.env.get("SUBSYSTEM", "")

    @property
    def devname(self) -> str:
        return self.env.get("DEVNAME", "")

    @property
    def diskseq(self) -> int | None:
        raw = self.env.get("DISKSEQ")
        return int(raw) if raw else None


@dataclass(frozen=True)
class RunResult:
    """The outcome of :meth:`Kernel.run`: exit status and captured output."""

    returncode: int
    stdout: str = ""
    stderr: str = ""


@runtime_checkable
class Process(Protocol):
    """A process (real) or user task (model) started by :meth:`Kernel.spawn`."""

    @property
    def pid(self) -> int: ...

    def wait(self, timeout: float | None = None) -> int | None:
        """Exit status (negative signal number if killed), or None if still running."""
        ...

    def kill(self, sig: int) -> None: ...


@runtime_checkable
class Kernel(Protocol):
    """Syscall-level operations. Every method may raise :class:`OSError` with a real errno."""

    #: "linux" for the running kernel, "model:<variant>" for the model.
    name: str

    # -- files ---------------------------------------------------------------------------
    def open(self, path: str, flags: int, mode: int = 0o666) -> int: ...
    def close(self, fd: int) -> None: ...
    def read(self, fd: int, size: int) -> bytes: ...
    def pread(self, fd: int, size: int, offset: int) -> bytes: ...
    def write(self, fd: int, data: bytes) -> int: ...
    def pwrite(self, fd: int, data: bytes, offset: int) -> int: ...
    def sendfile(self, out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        """``sendfile(2)`` in ``os.sendfile``'s argument order: copy up to `count` bytes;
        ``offset`` None reads from (and advances) the input file's position."""
        ...

    def fsync(self, fd: int) -> None: ...
    def ioctl(self, fd: int, request: int, arg: int | bytearray = 0) -> int:
        """Issue ``request``; a ``bytearray`` argument is passed by pointer and updated in
        place with what the kernel wrote back. Returns the ioctl's non-negative result."""
        ...

    def flock(self, fd: int, operation: int) -> None: ...
    def fstat(self, fd: int) -> Stat: ...
    def stat(self, path: str, follow_symlinks: bool = True) -> Stat: ...
    def readlink(self, path: str) -> str: ...
    def listdir(self, path: str) -> list[str]: ...
    def realpath(self, path: str) -> str: ...
    def access(self, path: str, mode: int) -> bool:
        """``access(2)``/``faccessat(AT_EACCESS)``: may the caller read/write/execute it."""
        ...

    def readfile(self, path: str, limit: int = 1 << 20) -> bytes:
        """open + read + close, for small sysfs/proc files."""
        ...

    def mkdir(self, path: str, mode: int = 0o755) -> None: ...
    def rmdir(self, path: str) -> None: ...
    def unlink(self, path: str) -> None: ...

    # -- mounts --------------------------------------------------------------------------
    def mount(
        self, source: str, target: str, fstype: str, flags: int = 0, data: str = ""
    ) -> None: ...
    def umount2(self, target: str, flags: int = 0) -> None: ...

    # -- processes -----------------------------------------------------------------------
    def getpid(self) -> int: ...
    def geteuid(self) -> int: ...
    def kill(self, pid: int, sig: int) -> None: ...
    def spawn(self, fn: Callable[[], object], name: str) -> Process:
        """Run ``fn`` in a new process (real: fork; model: a new user task)."""
        ...

    def run(
        self, argv: Sequence[str], input: bytes | None = None, timeout: float | None = None
    ) -> RunResult:
        """Execute a program (real: the binary; model: a modelled userspace program)."""
        ...

    # -- uevents -------------------------------------------------------------------------
    def uevent_open(self) -> int:
        """A socket receiving kernel uevents (kernel group, not udev's)."""
        ...

    def uevent_read(self, fd: int, timeout: float | None) -> Uevent | None:
        """The next uevent, or None when ``timeout`` seconds pass without one."""
        ...

    # -- the system ----------------------------------------------------------------------
    def uname_release(self) -> str:
        """``uname -r``: the running kernel's release (e.g. ``6.1.0-25-amd64``). The model
        answers with the upstream release of its variant's design (``5.19.0``), a proposal
        on top of one as ``<release>+<variant>``."""
        ...

    # -- time and chance -----------------------------------------------------------------
    def monotonic(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...
    def random(self) -> float:
        """A float in [0, 1); in the model, drawn from the scheduler's choice stream."""
        ...
