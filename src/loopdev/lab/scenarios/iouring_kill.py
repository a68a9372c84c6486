"""iouring-kill: an io_uring reader on a loop-mounted filesystem is killed with SIGKILL; then
``umount``, an exclusive open of the device, and a re-mount.

On SIGKILL the ring's in-flight requests are cancelled from a kworker and their file
references dropped later, so an immediate umount can fail with EBUSY (117 of 120 trials
with util-linux on 6.18, docs/findings.md). The reader is fio (the real one, or the model's
``fio`` program).

The kill point is chosen the same way on both backends: poll ``/proc/PID/fd`` until fio has
its data file and its ring open (``sched_yield`` between polls, then short sleeps once that
takes long), then sleep a random share (``kernel.random()``: in the model a choice of the
scheduler's stream, so a failure replays) of the timing parameter ``iouring_kill.kill_delay``,
then SIGKILL. fio keeps 64 reads in flight for its whole run (30 s on the real kernel; in the
model its reads take the loop worker's ``loop.service_time`` each), so the kill always lands
in the middle of its I/O.

When the umount right after the kill fails with EBUSY, the trial measures how long the
mount stays busy (``ebusy_clear``: from that umount's return to the start of the first
``umount2`` that succeeds, polling every millisecond) before it reports the failure, on both
backends: the model's clearing delay stands beside the real kernel's.

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
from loopdev.sim.params import KILL_DELAY
from loopdev.sim.sched import param

FIO = (
    "fio", "--name=reader", "--ioengine=io_uring", "--rw=randread", "--bs=4k",
    "--iodepth=64", "--direct=1", "--size=4m", "--time_based", "--runtime=30", "--thread",
    "--output=/dev/null",
)  # fmt: skip
#: polls with only ``sched_yield`` between them, before polling backs off to sleeps
FAST_POLLS = 400
#: the pause between polls after that (seconds)
SLOW_POLL = 0.01
#: how often the clearing measurement retries the umount, and for how long at most (seconds)
CLEAR_POLL = 0.001
CLEAR_LIMIT = 2.0


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


def kill_point(env: Env) -> None:
    """Wait a random share (the port's randomness) of ``iouring_kill.kill_delay`` while fio
    runs."""
    env.kernel.sleep(param(KILL_DELAY) * env.kernel.random())


def measure_clearing(env: Env, mnt: str) -> None:
    """After an EBUSY umount: retry ``umount2`` every :data:`CLEAR_POLL` until it succeeds
    (at most :data:`CLEAR_LIMIT`), and record when the first successful one started."""
    k = env.kernel
    t0 = k.monotonic()
    while True:
        k.sleep(CLEAR_POLL)
        t = k.monotonic()
        if t - t0 > CLEAR_LIMIT:
            return
        try:
            k.umount2(mnt)
        except OSError as e:
            if e.errno == errno.EBUSY:
                continue
            return
        env.measure("ebusy_clear", t - t0)
        return


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

    source: str = "fio --ioengine=io_uring, kill -9, umount (measured on 6.18, docs/findings.md)"

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
            kill_point(env)
        reader.kill(signal.SIGKILL)
        reader.wait(10.0)
        try:
            timed_umount(env, mnt, "umount")
        except ScenarioFailure as f:
            if f.kind == "EBUSY":
                measure_clearing(env, mnt)
            raise
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
