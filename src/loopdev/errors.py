"""The exceptions users of loopdev catch, and the CLI exit code of each kind.

Every error says what was wrong (naming the image, device or directory) in one line
(``str(e)``); what to do is its own attribute, :attr:`LoopdevError.hint`. An error that comes
from a system call's errno is also an instance of the builtin exception for that errno, as
``OSError(errno, ...)`` would be: ``except FileNotFoundError`` catches a missing image,
``except PermissionError`` a refusal, ``except OSError`` both, with ``errno`` and ``filename``
set. The exit code tells the kind of failure; ``loopdev --help`` documents the table.
"""

from __future__ import annotations

import errno as _errno

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence


def why(e: OSError) -> str:
    """``'Device or resource busy (EBUSY)'`` for an OSError."""
    name = _errno.errorcode.get(e.errno or 0, str(e.errno))
    return f"{e.strerror or name} ({name})"


class Holder:
    """Something that keeps a device or mount busy: a process, a mount or a sysfs holder.

    ``kind``: "process", "mount", "holder" (sysfs) or "kernel"; ``description`` e.g. "pid 4242
    (fio) has /dev/loop3 open as fd 5"; ``pid`` for processes, ``target`` (the mount point)
    for mounts.
    """

    __slots__ = ("description", "kind", "pid", "target")

    kind: str
    description: str
    pid: int | None
    target: str | None

    def __init__(
        self, kind: str, description: str, pid: int | None = None, target: str | None = None
    ) -> None:
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "description", description)
        object.__setattr__(self, "pid", pid)
        object.__setattr__(self, "target", target)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: Holder is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Holder):
            return NotImplemented
        return self._key() == other._key()

    def _key(self) -> tuple[str, str, int | None, str | None]:
        return (self.kind, self.description, self.pid, self.target)

    def __hash__(self) -> int:
        return hash(self._key())

    def __reduce__(self) -> tuple[object, ...]:
        return (Holder, self._key())

    def __repr__(self) -> str:
        return f"Holder(kind={self.kind!r}, description={self.description!r}, pid={self.pid!r})"

    def __str__(self) -> str:
        return self.description


#: errno → the builtin exception ``OSError(errno, ...)`` would be (PEP 3151)
_BUILTIN: dict[int, type[OSError]] = {
    _errno.ENOENT: FileNotFoundError,
    _errno.EEXIST: FileExistsError,
    _errno.EISDIR: IsADirectoryError,
    _errno.ENOTDIR: NotADirectoryError,
    _errno.EACCES: PermissionError,
    _errno.EPERM: PermissionError,
    _errno.ETIMEDOUT: TimeoutError,
    _errno.EINTR: InterruptedError,
    _errno.EAGAIN: BlockingIOError,
    _errno.ESRCH: ProcessLookupError,
}

#: (loopdev class, builtin) → the class of errors that are both
_COMBINED: dict[tuple[type[LoopdevError], type[OSError]], type[LoopdevError]] = {}


def _combined(cls: type[LoopdevError], builtin: type[OSError]) -> type[LoopdevError]:
    sub = _COMBINED.get((cls, builtin))
    if sub is None:
        sub = type(cls.__name__, (cls, builtin), {"__module__": cls.__module__})
        sub.__qualname__ = cls.__qualname__
        sub._loopdev_base = cls
        _COMBINED[cls, builtin] = sub
    return sub


class LoopdevError(Exception):
    """Base class: a one-line message, a hint, the CLI exit code, and where it applies.

    ``errno`` (set when a system call's error is the cause; the error is then also an
    :class:`OSError` of the matching builtin class), ``filename`` (the image or directory)
    and ``device`` (the loop device), each None when it does not apply.
    """

    exit_code = 1
    #: the errno an error of this class carries when none is given (None: not an OSError)
    default_errno: int | None = None
    _loopdev_base: type[LoopdevError] | None = None

    errno: int | None
    strerror: str | None
    filename: str | None

    def __new__(
        cls,
        message: str,
        *,
        hint: str | None = None,
        errno: int | None = None,
        filename: str | None = None,
        device: str | None = None,
        cli_hint: str | None = None,
        **extra: object,
    ) -> LoopdevError:
        code = errno if errno is not None else cls.default_errno
        if code is None or issubclass(cls, OSError):
            return super().__new__(cls, message)
        builtin = _BUILTIN.get(code, OSError)
        return builtin.__new__(_combined(cls, builtin), message)

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        errno: int | None = None,
        filename: str | None = None,
        device: str | None = None,
        cli_hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        #: the hint in the command line's terms (``-t`` rather than ``fstype=``), if it differs
        self.cli_hint = cli_hint
        self.device = device
        code = errno if errno is not None else self.default_errno
        self.errno = code
        self.strerror = _strerror(code)
        self.filename = filename

    def __str__(self) -> str:
        return self.message

    def details(self) -> list[str]:
        """The lines a person reads below the message: what holds it, then the hint."""
        return [f"hint: {self.hint}"] if self.hint else []

    def __reduce__(self) -> tuple[object, ...]:
        base = self._loopdev_base or type(self)
        return (_rebuild, (base, self.message, self.errno, self.filename, dict(self.__dict__)))


def _strerror(code: int | None) -> str | None:
    if code is None:
        return None
    import os

    return os.strerror(code)


def _rebuild(
    cls: type[LoopdevError],
    message: str,
    code: int | None,
    filename: str | None,
    state: dict[str, object],
) -> LoopdevError:
    """Unpickle: the errno decides the builtin class again."""
    e = cls.__new__(cls, message, errno=code)
    LoopdevError.__init__(e, message, errno=code, filename=filename)
    e.__dict__.update(state)
    return e


class NotPermittedError(LoopdevError):
    """The caller lacks privilege (not root / no CAP_SYS_ADMIN). A PermissionError."""

    exit_code = 3
    default_errno = _errno.EPERM


class ImageError(LoopdevError):
    """The backing image cannot be used: missing (FileNotFoundError), not a regular file,
    unreadable (PermissionError)."""

    exit_code = 4


class InvalidArgumentError(LoopdevError, ValueError):
    """An option value is wrong: offset or sizelimit negative, unaligned or past the end.
    A ValueError."""

    exit_code = 5


class NotALoopDeviceError(LoopdevError):
    """A path that was given as a loop device is not one (not a block device of major 7)."""

    exit_code = 6


class NoFreeDeviceError(LoopdevError):
    """No free loop device could be found or created within the retry limit."""

    exit_code = 7


class BusyError(LoopdevError):
    """A device or mount is in use (EBUSY); ``holders`` says by whom."""

    exit_code = 8
    default_errno = _errno.EBUSY

    def __init__(
        self,
        message: str,
        *,
        holders: Sequence[Holder] = (),
        hint: str | None = None,
        errno: int | None = None,
        filename: str | None = None,
        device: str | None = None,
        cli_hint: str | None = None,
    ) -> None:
        super().__init__(
            message, hint=hint, errno=errno, filename=filename, device=device, cli_hint=cli_hint
        )
        self.holders = tuple(holders)

    def details(self) -> list[str]:
        return [f"held by: {h}" for h in self.holders] + super().details()


class TeardownTimeoutError(BusyError):
    """A detach or umount did not finish within the timeout (a TimeoutError); ``holders``
    says what still holds the device."""

    exit_code = 9
    default_errno = _errno.ETIMEDOUT


class MountError(LoopdevError):
    """mount(2) failed: unknown filesystem, unreadable superblock, bad target directory."""

    exit_code = 10


class NotMountedError(LoopdevError):
    """``umount`` was given a path that is not a mount point (EINVAL)."""

    exit_code = 11
    default_errno = _errno.EINVAL


class NotAttachedError(LoopdevError):
    """The loop device exists but is not attached (ENXIO: not bound to a backing file)."""

    exit_code = 12
    default_errno = _errno.ENXIO


#: exit code → meaning, for ``--help``.
EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "other failure",
    2: "bad command line",
    NotPermittedError.exit_code: "not permitted (run as root)",
    ImageError.exit_code: "image missing, unreadable or not a regular file",
    InvalidArgumentError.exit_code: "bad offset, size limit or other option value",
    NotALoopDeviceError.exit_code: "the device given is not a loop device",
    NoFreeDeviceError.exit_code: "no free loop device could be found or created",
    BusyError.exit_code: "device or mount point busy (the holders are named)",
    TeardownTimeoutError.exit_code: "detach/umount did not finish in time (holders named)",
    MountError.exit_code: "mount failed (unknown filesystem, bad target, unreadable image)",
    NotMountedError.exit_code: "not mounted",
    NotAttachedError.exit_code: "the loop device is not attached",
}
