"""iouring-kill: an io_uring reader on a loop-mounted filesystem is killed with SIGKILL; then
``umount``, an exclusive open of the device, and a re-mount.

On SIGKILL the ring's in-flight requests are cancelled from a kworker and their file
references dropped later, so an immediate umount can fail with EBUSY (RESEARCH §6: 117 of 120
with util-linux). The reader is fio (the real one, or the model's ``fio`` program).

The kill point is chosen the same way on both backends: poll ``/proc/PID/fd`` until fio has
its data file and its ring open (``sched_yield`` between polls, then short sleeps once that
takes long), then a random number of further polls (``kernel.random()``: in the model a choice
of the scheduler's stream, so a failure replays), then SIGKILL. In the model fio's I/O takes
no virtual time, so a fixed sleep would let it run to the end before the kill; polls with
``sched_yield`` let the scheduler interleave the kill with fio's I/O instead.

``IouringKill(io_uring="exit-cancel-wait")`` is the same scenario on a kernel whose io_uring
waits, at exit, for every request and the file references they held (model only: the row
``iouring-kill[exit-cancel-wait]``).
"""

from __future__ import annotations

import errno
import signal
from dataclasses import dataclass

from loopdev import abi
from loopdev.lab.scenarios.base import Env, ScenarioFailure
from loopdev.lab.scenarios.common import (
    detach_backed_by,
    ensure_dir,
    force_umount,
    mount_source,
    remove,
    timed_umount,
)

FIO = (
    "fio", "--name=reader", "--ioengine=io_uring", "--rw=randread", "--bs=4k",
    "--iodepth=64", "--direct=1", "--size=4m", "--time_based", "--runtime=30", "--thread",
    "--output=/dev/null",
)  # fmt: skip
#: polls with only ``sched_yield`` between them, before polling backs off to sleeps
FAST_POLLS = 400
#: the pause between polls after that (seconds)
SLOW_POLL = 0.01
#: at most this many polls after fio is ready, before the kill (drawn uniformly: the kill lands
#: anywhere in fio's run; on the real kernel 0 to ~100 ms after its ring exists)
KILL_POLLS = 1500


def _open_files(env: Env, pid: int) -> list[str] | None:
    """What ``/proc/PID/fd`` points at; None once the process is gone."""
    k = env.kernel
    try:
        fds = k.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    out = []
    for fd in fds:
        try:
            out.append(k.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return out


def _ready(files: list[str] | None, path: str) -> bool:
    """fio has its data file and an io_uring open (its job has started issuing I/O)."""
    return files is not None and path in files and any("io_uring" in f for f in files)


def _pause(env: Env, polls: int) -> None:
    env.kernel.sleep(0 if polls < FAST_POLLS else SLOW_POLL)


def wait_ready(env: Env, pid: int, path: str, timeout: float = 5.0) -> bool:
    """Bounded wait until the reader is :func:`_ready`; False if it is gone or timed out."""
    k = env.kernel
    t0 = k.monotonic()
    polls = 0
    while True:
        files = _open_files(env, pid)
        if _ready(files, path):
            return True
        if files is None or k.monotonic() - t0 >= timeout:
            return False
        _pause(env, polls)
        polls += 1


def kill_point(env: Env, pid: int, path: str) -> None:
    """A random number (from the port's randomness) of further polls while fio runs."""
    for _ in range(int(env.kernel.random() * KILL_POLLS)):
        if not _ready(_open_files(env, pid), path):
            return
        env.kernel.sleep(0)


@dataclass
class IouringKill:
    """Kill an io_uring reader, then umount, open exclusively and re-mount."""

    udev: bool = False
    #: the kernel's io_uring variant (model only); None: the kernel's own
    io_uring: str | None = None

    @property
    def model_only(self) -> bool:
        return self.io_uring is not None

    @property
    def name(self) -> str:
        return "iouring-kill" + (f"[{self.io_uring}]" if self.io_uring else "")

    @property
    def title(self) -> str:
        on = f" (io_uring {self.io_uring})" if self.io_uring else ""
        return f"SIGKILL an io_uring reader; umount; exclusive open; re-mount{on}"

    source: str = "RESEARCH §6 (fio --ioengine=io_uring, kill -9, umount)"

    def _paths(self, env: Env) -> tuple[str, str]:
        return env.path("uring.img"), env.path("uring")

    def prepare(self, env: Env) -> None:
        image, mnt = self._paths(env)
        env.make_image("ext4", image, size_mib=32, files={"data": b"\xa5" * (4 << 20)})
        ensure_dir(env, mnt)

    def trial(self, env: Env) -> None:
        image, mnt = self._paths(env)
        k = env.kernel
        env.userspace.mount_loop(image, mnt, read_only=False, step="mount")
        dev = mount_source(env, mnt) or ""
        data = f"{mnt}/data"
        reader = env.start([*FIO, f"--filename={data}"], "fio")
        if wait_ready(env, reader.pid, data):
            kill_point(env, reader.pid, data)
        reader.kill(signal.SIGKILL)
        reader.wait(10.0)
        timed_umount(env, mnt, "umount")
        if dev.startswith("/dev/"):
            try:
                fd = k.open(dev, abi.O_RDONLY | abi.O_EXCL)
            except OSError as e:
                if e.errno != errno.ENXIO:  # gone already: nothing holds it
                    name = errno.errorcode.get(e.errno or 0, "?")
                    raise ScenarioFailure(
                        "exclusive open", name, f"{dev}: {e.strerror} after umount returned"
                    ) from e
            else:
                k.close(fd)
        env.userspace.mount_loop(image, mnt, read_only=False, step="re-mount")
        env.userspace.umount(mnt, step="umount after re-mount")

    def cleanup(self, env: Env) -> None:
        image, mnt = self._paths(env)
        force_umount(env, mnt, timeout=5.0)
        detach_backed_by(env, image)
        remove(env, mnt, image)
