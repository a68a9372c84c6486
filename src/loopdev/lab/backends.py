"""Scenario backends: the :class:`~loopdev.lab.scenarios.base.Userspace` a scenario row runs
with — util-linux's commands (real binaries on the real kernel, the models of
:mod:`loopdev.lab.userspace` in the model, both through ``Kernel.run``) or the loopdev library.

Failures are reported as what a user sees: util-linux's exit status and message, classified
into an errno-like kind from the message text (the same classification for real and modelled
programs), or the library's exception.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Sequence

from loopdev.control import attach
from loopdev.device import detach
from loopdev.kernel import Kernel, RunResult
from loopdev.lab.scenarios.base import CAPABILITY_ERRNOS, ScenarioFailure, Unsupported, errname
from loopdev.lab.scenarios.common import library_step
from loopdev.mount import mount_image, umount

#: util-linux / libmount messages → the errno they report (libmount's mnt_context_get_*_excode
#: and losetup's messages).
_MESSAGES: tuple[tuple[str, str], ...] = (
    (r"target is busy", "EBUSY"),
    (r"can't read superblock", "EIO"),
    (r"unable to read|I/O error|Input/output error", "EIO"),
    (r"already mounted or mount point busy|Device or resource busy", "EBUSY"),
    (r"No such device or address", "ENXIO"),
    (r"No such device\b", "ENODEV"),
    (r"wrong fs type|bad superblock", "EINVAL"),
    (r"not mounted", "EINVAL"),
    (r"No such file or directory|does not exist", "ENOENT"),
    (r"failed to set ?up loop device|cannot find an unused loop device", "ELOOPSETUP"),
    (r"Permission denied|Operation not permitted|must be superuser|permitted for root only",
     "EPERM"),
)


def error_kind(result: RunResult) -> str:
    """The errno-like kind of a failed util-linux run, from its message."""
    text = f"{result.stderr}\n{result.stdout}"
    for pattern, kind in _MESSAGES:
        if re.search(pattern, text, re.IGNORECASE):
            return kind
    return f"exit {result.returncode}"


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


class UtilLinux:
    """util-linux mount(8)/umount(8)/losetup(8), run through the port."""

    def __init__(self, kernel: Kernel, name: str) -> None:
        self.kernel = kernel
        self.name = name

    def _run(self, argv: Sequence[str], step: str) -> RunResult:
        try:
            r = self.kernel.run(argv, timeout=60.0)
        except FileNotFoundError as e:
            raise Unsupported(f"{argv[0]} is not available here") from e
        except OSError as e:
            if e.errno in CAPABILITY_ERRNOS | {errno.ENOENT}:
                raise Unsupported(f"{argv[0]}: {e.strerror} (not modelled)") from e
            raise ScenarioFailure(step, errname(e), str(e)) from e
        if r.returncode == 127 or "command not found" in r.stderr:
            raise Unsupported(f"{argv[0]} is not available here")
        if r.returncode != 0:
            raise ScenarioFailure(step, error_kind(r), _first_line(r.stderr or r.stdout))
        return r

    def mount_loop(self, image: str, target: str, *, read_only: bool, step: str) -> None:
        opts = "loop,ro" if read_only else "loop"
        self._run(["mount", "-o", opts, image, target], step)

    def umount(self, target: str, *, step: str) -> None:
        self._run(["umount", target], step)

    def attach(self, image: str, *, step: str, partscan: bool = False) -> str:
        r = self._run(["losetup", *(["-P"] if partscan else []), "-f", "--show", image], step)
        dev = _first_line(r.stdout)
        if not dev.startswith("/dev/"):
            raise ScenarioFailure(step, "no device", f"losetup printed {dev!r}")
        return dev

    def detach(self, device: str, *, step: str) -> None:
        self._run(["losetup", "-d", device], step)


class LoopdevLibrary:
    """The loopdev library: mount_image / umount / attach / detach on the given kernel."""

    name = "loopdev"

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    def mount_loop(self, image: str, target: str, *, read_only: bool, step: str) -> None:
        with library_step(step):
            mount_image(image, target, read_only=read_only, kernel=self.kernel)

    def umount(self, target: str, *, step: str) -> None:
        with library_step(step):
            umount(target, kernel=self.kernel)

    def attach(self, image: str, *, step: str, partscan: bool = False) -> str:
        with library_step(step):
            dev = attach(image, partscan=partscan, kernel=self.kernel)
            path = str(dev.path)
            dev.relinquish()
            return path

    def detach(self, device: str, *, step: str) -> None:
        with library_step(step):
            detach(device, kernel=self.kernel)


#: userspace ids → display names
USERSPACES: dict[str, str] = {
    "util-linux-2.37": "util-linux <2.38",
    "util-linux-2.38": "util-linux ≥2.38",
    "loopdev": "loopdev",
}
