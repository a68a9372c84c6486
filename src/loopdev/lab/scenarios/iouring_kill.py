"""iouring-kill: an io_uring reader on a loop-mounted filesystem is killed with SIGKILL; then
``umount``, an exclusive open of the device, and a re-mount.

On SIGKILL the ring's in-flight requests are cancelled from a kworker and their file
references dropped later, so an immediate umount can fail with EBUSY (RESEARCH §6: 117 of 120
with util-linux). The reader is fio on the real kernel; the model needs its io_uring machinery.
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


def _wait_open(env: Env, pid: int, path: str, timeout: float = 5.0) -> None:
    """Wait until the reader has ``path`` open (then a little longer, so its ring has I/O in
    flight); fio takes from 0.1 to over 1 s to get there, depending on load."""
    k = env.kernel
    t0 = k.monotonic()
    while k.monotonic() - t0 < timeout:
        try:
            fds = k.listdir(f"/proc/{pid}/fd")
            if any(_readlink(env, f"/proc/{pid}/fd/{fd}") == path for fd in fds):
                break
        except OSError:
            pass
        k.sleep(0.01)
    k.sleep(0.15)


def _readlink(env: Env, path: str) -> str:
    try:
        return env.kernel.readlink(path)
    except OSError:
        return ""


@dataclass
class IouringKill:
    """Kill an io_uring reader, then umount, open exclusively and re-mount."""

    udev: bool = False
    model_only: bool = False
    name: str = "iouring-kill"
    title: str = "SIGKILL an io_uring reader; umount; exclusive open; re-mount"
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
        reader = env.start([*FIO, f"--filename={mnt}/data"], "fio")
        _wait_open(env, reader.pid, f"{mnt}/data")
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
