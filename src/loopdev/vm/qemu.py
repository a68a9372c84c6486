"""Starting and stopping one QEMU guest: the command line, and a process that is always killed
by its PID (never by name) and reaped."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from loopdev.vm.debian import VmSetupError

QEMU = "qemu-system-x86_64"


@dataclass(frozen=True)
class Machine:
    """The virtual hardware of one guest."""

    vcpus: int = 1  # one vCPU per guest: under TCG a second one slows RCU (docs/vm.md)
    memory_mib: int = 1024
    accel: str = "tcg"  # "tcg" (emulation) or "kvm"


def qemu_binary() -> str:
    path = shutil.which(QEMU)
    if path is None:
        raise VmSetupError(f"{QEMU} is not installed (apt-get install qemu-system-x86)")
    return path


#: a minimal firmware (Debian's qemu-system-data ships it) that hands over to ``-kernel`` a
#: second sooner than SeaBIOS under emulation
QBOOT = Path("/usr/share/qemu/qboot.rom")


def command(
    machine: Machine,
    kernel: Path,
    initrd: Path,
    job_dir: Path,
    console: Path,
    append: str,
) -> list[str]:
    """The QEMU command line: no default devices, the console on a file, the host's ``/``
    read-only over 9p (tag ``host``) and ``job_dir`` read-write (tag ``job``)."""
    return [
        qemu_binary(),
        "-accel", machine.accel,
        "-cpu", "host" if machine.accel == "kvm" else "max",
        "-m", str(machine.memory_mib),
        "-smp", str(machine.vcpus),
        *(["-bios", str(QBOOT)] if machine.accel == "tcg" and QBOOT.exists() else []),
        "-nodefaults", "-no-user-config", "-no-reboot",
        "-display", "none",
        "-monitor", "none",
        "-serial", f"file:{console}",
        "-kernel", str(kernel),
        "-initrd", str(initrd),
        "-append", append,
        "-virtfs", "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap",
        "-virtfs", f"local,path={job_dir},mount_tag=job,security_model=none",
    ]  # fmt: skip


#: the guest kernel's command line: serial console, reboot (= QEMU exit) on panic
KERNEL_ARGS = "console=ttyS0 rdinit=/init panic=-1 oops=panic mitigations=off tsc=reliable"


def kernel_args(loglevel: int) -> str:
    """:data:`KERNEL_ARGS` with the console log level: messages more severe than ``loglevel``
    reach the console (4 keeps warnings, lockdep's reports among them, off it; 5 shows them)."""
    return f"{KERNEL_ARGS} loglevel={loglevel}"


#: every QEMU this process started and has not reaped yet (for :func:`kill_all`)
_LIVE: set[QemuProcess] = set()
_LIVE_LOCK = threading.Lock()


class QemuProcess:
    """A running QEMU, in its own process group; :meth:`kill` ends it by its PID."""

    def __init__(self, argv: list[str], log: Path) -> None:
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        with _LIVE_LOCK:
            _LIVE.add(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def kill(self) -> None:
        """SIGKILL QEMU by its PID and reap it."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        with _LIVE_LOCK:
            _LIVE.discard(self)


def kill_all() -> None:
    """Kill every guest this process started (Ctrl-C, an error in another guest's thread):
    each by its PID; their watchers then see them gone and clean up."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for q in live:
        if q.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(q.proc.pid, signal.SIGKILL)
