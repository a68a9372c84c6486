"""The exceptions users of loopdev catch, and the CLI exit code of each kind.

Every error says what was wrong (naming the image, device or directory) and what to do. The
exit code tells the kind of failure; ``loopdev --help`` documents the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Holder:
    """Something that keeps a device or mount busy: a process, a mount or a sysfs holder."""

    kind: str  # "process", "mount", "holder" (sysfs), "kernel"
    description: str  # e.g. "pid 4242 (fio) has /dev/loop3 open as fd 5"
    pid: int | None = None

    def __str__(self) -> str:
        return self.description


class LoopdevError(Exception):
    """Base class: a message for people, a hint, and the CLI exit code."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class NotPermittedError(LoopdevError):
    """The caller lacks privilege (not root / no CAP_SYS_ADMIN)."""

    exit_code = 3


class ImageError(LoopdevError):
    """The backing image cannot be used: missing, not a regular file, unreadable."""

    exit_code = 4


class InvalidArgumentError(LoopdevError):
    """An option value is wrong: offset or sizelimit negative, unaligned or past the end."""

    exit_code = 5


class NotALoopDeviceError(LoopdevError):
    """A path that was given as a loop device is not one (not a block device of major 7)."""

    exit_code = 6


class NoFreeDeviceError(LoopdevError):
    """No free loop device could be found or created within the retry limit."""

    exit_code = 7


class BusyError(LoopdevError):
    """A device or mount is in use; ``holders`` says by whom."""

    exit_code = 8

    def __init__(
        self, message: str, *, holders: Sequence[Holder] = (), hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.holders = tuple(holders)

    def __str__(self) -> str:
        lines = [self.message, *(f"  held by: {h}" for h in self.holders)]
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)


class TeardownTimeoutError(BusyError):
    """A detach or umount did not finish within the timeout; ``holders`` says what still
    holds the device."""

    exit_code = 9


class MountError(LoopdevError):
    """mount(2) failed: unknown filesystem, unreadable superblock, bad target directory."""

    exit_code = 10


class NotMountedError(LoopdevError):
    """``umount`` was given a path that is not a mount point."""

    exit_code = 11


class NotAttachedError(LoopdevError):
    """The loop device exists but is not attached (not bound to a backing file)."""

    exit_code = 12


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
