"""What a scenario is, and the environment it runs in.

A scenario is written once against the :class:`loopdev.kernel.Kernel` port and a
:class:`Userspace` (real util-linux binaries, a model of util-linux, or the loopdev library).
It asserts only what a user observes: it raises :class:`ScenarioFailure` with the step and the
message a user would see, or :class:`Unsupported` when the backend lacks something it needs
(a missing program, ENOSYS): that is "not yet checkable", never a verdict.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from loopdev.kernel import Kernel, Process


class ScenarioFailure(Exception):
    """A user-visible failure: ``step`` (e.g. "umount outer"), ``kind`` (e.g. "EBUSY")."""

    def __init__(self, step: str, kind: str, message: str) -> None:
        super().__init__(f"{step}: {kind}: {message}")
        self.step = step
        self.kind = kind
        self.message = message

    @property
    def key(self) -> str:
        return f"{self.step}: {self.kind}"


class Unsupported(Exception):
    """The backend cannot run this scenario (capability missing)."""


#: errnos that mean "the backend does not implement this", not "the kernel refused".
CAPABILITY_ERRNOS = frozenset({errno.ENOSYS, errno.ENOTTY, errno.EOPNOTSUPP})


def errname(e: OSError) -> str:
    return errno.errorcode.get(e.errno or 0, f"errno {e.errno}")


class Userspace(Protocol):
    """The userspace side of a scenario: how images get mounted, unmounted, attached."""

    name: str

    def mount_loop(self, image: str, target: str, *, read_only: bool, step: str) -> None:
        """``mount -o loop[,ro] image target``; raises ScenarioFailure."""
        ...

    def umount(self, target: str, *, step: str) -> None:
        """``umount target``; raises ScenarioFailure."""
        ...

    def attach(self, image: str, *, step: str, partscan: bool = False) -> str:
        """Attach ``image`` to a free loop device (``partscan``: with LO_FLAGS_PARTSCAN, as
        ``losetup -P`` does); returns its path."""
        ...

    def detach(self, device: str, *, step: str) -> None:
        """Detach ``device``."""
        ...


class ImageMaker(Protocol):
    """Builds a filesystem image of ``kind`` at ``path`` (real mkfs or the model's)."""

    def __call__(
        self, kind: str, path: str, *, size_mib: int = 16, files: dict[str, bytes] | None = None
    ) -> str: ...


Starter = Callable[[Sequence[str], str], Process]


@dataclass
class Env:
    """Everything one scenario run sees."""

    kernel: Kernel
    userspace: Userspace
    workdir: str
    make_image: ImageMaker
    start: Starter  # start a program in the background (fio); raises Unsupported if missing
    is_model: bool
    udev: bool
    measurements: dict[str, float] = field(default_factory=dict)
    measure_latency: bool = False  # record detach delay / umount latency (real kernel)
    #: the model's trial shape on a real kernel too: a trial repeats its cycle back to back
    #: (mount-loop: three mount/umount cycles, no wait for the detach in between) instead of
    #: one cycle followed by a wait for the teardown; None: only in the model
    back_to_back: bool | None = None

    @property
    def repeats_back_to_back(self) -> bool:
        """Whether a trial runs its cycles back to back (the model's trial shape)."""
        return self.is_model if self.back_to_back is None else self.back_to_back

    def path(self, name: str) -> str:
        return f"{self.workdir.rstrip('/')}/{name}"

    def measure(self, name: str, seconds: float) -> None:
        self.measurements[name] = seconds


class Scenario(Protocol):
    """A race scenario. ``prepare`` builds images and directories (once per real-kernel
    session, once per model run), ``trial`` is one attempt, ``cleanup`` undoes everything."""

    @property
    def name(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def udev(self) -> bool: ...
    @property
    def model_only(self) -> bool: ...

    def prepare(self, env: Env) -> None: ...
    def trial(self, env: Env) -> None: ...
    def cleanup(self, env: Env) -> None: ...
