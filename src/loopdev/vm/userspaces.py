"""The userspace rows a guest runs, all through :class:`loopdev.linux.LinuxKernel`.

* ``util-linux-2.37`` / ``util-linux-2.38``: the lab's modelled mount(8)/umount(8)/losetup(8)
  (``loopdev.lab.userspace``) run *in process* on the real kernel. Each run starts, as in the
  model, with a program start-up of 1-3 ms (:func:`~loopdev.lab.userspace.program.exec_time`,
  a real sleep here): the start-up a program has on hardware, not the ~50x slower fork + exec
  of an emulated CPU. This is how claim 1 gets a pre-2.38 mount(8) on a real kernel, and how
  steps run without a process start between them.
* ``util-linux-2.38-bin``: the real util-linux binaries of the host (Debian 12: 2.38.1), one
  process per command, as the host's real column runs them. Under TCG their start-up is ~50x
  slower than on hardware, so these cells are timing-distorted.
* ``loopdev``: the loopdev library, in process.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from loopdev.kernel import RunResult
from loopdev.lab.backends import LoopdevLibrary, UtilLinux
from loopdev.lab.scenarios.base import Userspace
from loopdev.lab.userspace import Program, util_linux_programs
from loopdev.lab.userspace.program import exec_time
from loopdev.linux import LinuxKernel

#: row id -> what it is (for reports)
USERSPACES: dict[str, str] = {
    "util-linux-2.37": "util-linux 2.37 programs (modelled, in process, real kernel)",
    "util-linux-2.38": "util-linux 2.38 programs (modelled, in process, real kernel)",
    "util-linux-2.38-bin": "util-linux binaries (real processes; timing-distorted under TCG)",
    "loopdev": "the loopdev library (in process)",
}
#: rows whose timing the emulated CPU distorts (a process start per step)
TIMING_DISTORTED = frozenset({"util-linux-2.38-bin"})


#: why detach-open's race is not timed as on hardware in a guest (docs/findings.md)
PROBER_DISTORTION = (
    "the prober holds the device ~20x longer under TCG (1.2-2.3 ms a probe, 52-108 us on "
    "hardware, while the teardown's RCU grace period keeps real time)"
)
#: scenarios (by exact name) whose background program is a real process under emulation, or
#: whose race turns on how long an emulated program holds the device: detach-open and its
#: partitioned variant, whose prober and scanner are detach-open's. Not detach-open[held]:
#: its opener always lands while the holder keeps its fd across LOOP_CLR_FD, so what it sees
#: depends on the design alone
_REAL_PROGRAMS = {
    "iouring-kill": "fio runs as a real process, ~50x slower under TCG",
    "detach-open": PROBER_DISTORTION,
    "detach-open[partscan]": PROBER_DISTORTION,
}


#: why a cell with a real udevd is not timed as on hardware (measured with ftrace on lo_open
#: and lo_release in a taskwork guest, 1 vCPU, host load ~1.5; docs/findings.md, claim 3)
UDEV_DISTORTION = (
    "udevd and the programs run emulated while the RCU grace period keeps real time "
    "(udevd's last close 3-44 ms after losetup returns, the model's 0-5 ms, and mount(8)'s loop "
    "scan 5-24 ms after it starts, the model's 1-3 ms)"
)


def timing_distortion(scenario: str, scenario_udev: bool, row: str) -> str:
    """Why a guest cell's timing is not hardware's ('' when it is comparable): every step a
    fresh process (the -bin row), a real udevd beside programs that run emulated while the
    teardown's RCU grace period keeps real time, or a real background program."""
    why = []
    if row in TIMING_DISTORTED:
        why.append("a process start per step (~50x slower under TCG)")
    if scenario_udev:
        why.append(UDEV_DISTORTION)
    if scenario in _REAL_PROGRAMS:
        why.append(_REAL_PROGRAMS[scenario])
    return "; ".join(why)


class GuestKernel(LinuxKernel):
    """The guest's real kernel; ``uname_release()`` answers with the release of the loop
    design the module implements (as the model kernel does), not Debian's ``6.1.0-N-amd64``,
    so the library picks its detach for that design (``loopdev.teardown``)."""

    def __init__(self, release: str | None = None) -> None:
        super().__init__()
        self.design_release = release

    def uname_release(self) -> str:
        return self.design_release or super().uname_release()


class InProcessKernel(GuestKernel):
    """The real kernel, with util-linux's programs run in this process: ``run(["mount", ...])``
    calls the modelled program (after its modelled start-up time) instead of exec()."""

    def __init__(self, programs: dict[str, Program], release: str | None = None) -> None:
        super().__init__(release)
        self.programs = programs

    def run(
        self, argv: Sequence[str], input: bytes | None = None, timeout: float | None = None
    ) -> RunResult:
        prog = self.programs.get(os.path.basename(argv[0])) if argv else None
        if prog is None:
            return super().run(argv, input, timeout)
        exec_time(self)
        return prog(self, list(argv))


def make_userspace(row: str, release: str | None = None) -> tuple[LinuxKernel, Userspace]:
    """The kernel port and the userspace of row ``row`` on the running (guest) kernel, whose
    ``uname_release()`` is ``release`` when given; KeyError if the row is unknown."""
    if row == "loopdev":
        kernel = GuestKernel(release)
        return kernel, LoopdevLibrary(kernel)
    if row == "util-linux-2.38-bin":
        kernel = GuestKernel(release)
        return kernel, UtilLinux(kernel, row)
    if row in ("util-linux-2.37", "util-linux-2.38"):
        programs = util_linux_programs(row.removeprefix("util-linux-"))
        kernel = InProcessKernel(programs, release)
        return kernel, UtilLinux(kernel, row)
    raise KeyError(f"unknown userspace {row!r}; known: {', '.join(USERSPACES)}")
