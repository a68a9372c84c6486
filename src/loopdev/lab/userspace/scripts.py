"""The shell loops of the 2022 reports, as port-level scripts over the modelled programs.

Each script runs programs through ``kernel.run`` (so they are the registered util-linux models
in the model, the real binaries on Linux) and returns what a user would have seen: the first
failing command's line ``"<step>: exit <status>: <stderr>"``, or None when all succeeded.
The probe scripts for claims 5 and 7 use the port's system calls directly and return
:class:`ProbeSeen` records.
"""

from __future__ import annotations

import contextlib
import errno
from dataclasses import dataclass

from loopdev import abi
from loopdev.kernel import Kernel, Process


def _sh(kernel: Kernel, argv: list[str], step: str) -> str | None:
    r = kernel.run(argv)
    if r.returncode:
        return f"{step}: exit {r.returncode}: {r.stderr.strip()}"
    return None


def mount_loop(
    kernel: Kernel, iterations: int = 3, image: str = "/tmp/isofs.img", mnt: str = "/mnt/isofs"
) -> str | None:
    """LTP isofs.sh / Jan Kara's reproducer:
    ``while :; do mount -o loop,ro isofs.iso isofs/; umount isofs/; done`` (squashfs image)."""
    failed = _sh(kernel, ["mksquashfs", "/tmp", image, "-noappend"], "mksquashfs")
    if failed:
        return failed
    kernel.mkdir(mnt)
    for i in range(iterations):
        failed = _sh(kernel, ["mount", "-o", "loop,ro", image, mnt], f"mount #{i}")
        failed = failed or _sh(kernel, ["umount", mnt], f"umount #{i}")
        if failed:
            return failed
    return None


def nested_umount(kernel: Kernel, iterations: int = 1) -> str | None:
    """xfstests xfs/049's shape: an ext2 image on an xfs loop mount;
    ``umount inner; umount outer``."""
    kernel.mkdir("/mnt/outer")
    kernel.mkdir("/mnt/inner")
    failed = _sh(kernel, ["mkfs.xfs", "/tmp/outer.img", "1M"], "mkfs.xfs")
    for i in range(iterations):
        failed = failed or _sh(
            kernel, ["mount", "-o", "loop", "/tmp/outer.img", "/mnt/outer"], f"mount outer #{i}"
        )
        if i == 0:
            failed = failed or _sh(kernel, ["mkfs.ext2", "/mnt/outer/inner.img", "256K"], "mkfs")
        failed = failed or _sh(
            kernel,
            ["mount", "-o", "loop", "/mnt/outer/inner.img", "/mnt/inner"],
            f"mount inner #{i}",
        )
        failed = failed or _sh(kernel, ["umount", "/mnt/inner"], f"umount inner #{i}")
        failed = failed or _sh(kernel, ["umount", "/mnt/outer"], f"umount outer #{i}")
        if failed:
            return failed
    return None


@dataclass
class ProbeSeen:
    """What a concurrent opener saw: open errno, LOOP_GET_STATUS64 errno, then a read."""

    open_errno: int = 0
    status_errno: int | None = None  # None: not tried (open failed)
    read_errno: int | None = None
    read_bytes: int = 0

    @property
    def verified(self) -> bool:
        """Opened, and LOOP_GET_STATUS64 on that fd succeeded."""
        return self.open_errno == 0 and self.status_errno == 0

    def describe(self) -> str:
        def name(code: int | None) -> str:
            if code is None:
                return "-"
            return "ok" if code == 0 else errno.errorcode.get(code, str(code))

        return (
            f"open {name(self.open_errno)}, GET_STATUS64 {name(self.status_errno)}, "
            f"read {name(self.read_errno)} ({self.read_bytes} bytes)"
        )


def probe_device(kernel: Kernel, device: str, seen: ProbeSeen) -> None:
    """Open ``device``, verify it with LOOP_GET_STATUS64 on that fd, read its first block."""
    try:
        fd = kernel.open(device, abi.O_RDONLY | abi.O_CLOEXEC)
    except OSError as e:
        seen.open_errno = e.errno or errno.EIO
        return
    try:
        try:
            kernel.ioctl(fd, abi.LOOP_GET_STATUS64, abi.LoopInfo64.buffer())
            seen.status_errno = 0
        except OSError as e:
            seen.status_errno = e.errno or errno.EIO
        try:
            seen.read_bytes = len(kernel.pread(fd, 4096, 0))
            seen.read_errno = 0
        except OSError as e:
            seen.read_errno = e.errno or errno.EIO
    finally:
        kernel.close(fd)


def attach(kernel: Kernel, image: str, flags: int) -> tuple[str, int]:
    """LOOP_CTL_GET_FREE + LOOP_CONFIGURE; returns the device and its open fd."""
    ctl = kernel.open("/dev/loop-control", abi.O_RDWR | abi.O_CLOEXEC)
    try:
        n = kernel.ioctl(ctl, abi.LOOP_CTL_GET_FREE)
    finally:
        kernel.close(ctl)
    device = f"/dev/loop{n}"
    fd = kernel.open(device, abi.O_RDWR | abi.O_CLOEXEC)
    backing = kernel.open(image, abi.O_RDWR | abi.O_CLOEXEC)
    try:
        info = abi.LoopInfo64(lo_flags=flags, lo_file_name=image)
        kernel.ioctl(fd, abi.LOOP_CONFIGURE, abi.LoopConfig(backing, 0, info).pack())
    finally:
        kernel.close(backing)
    return device, fd


def _opener(kernel: Kernel, box: list[str], seen: ProbeSeen) -> Process:
    """A task started before the device is set up (a fork after it would inherit the
    device's fd), which probes the device as soon as it has a name."""

    def run() -> None:
        for _ in range(1000):
            if box:
                probe_device(kernel, box[0], seen)
                return
            kernel.sleep(0)

    return kernel.spawn(run, "opener")


def last_close_vs_opener(kernel: Kernel, image: str, seen: ProbeSeen) -> None:
    """Claim 5: an autoclear device's last close (which starts the teardown) races with a
    new opener that verifies the device and reads from it."""
    box: list[str] = []
    opener = _opener(kernel, box, seen)
    device, fd = attach(kernel, image, abi.LO_FLAGS_AUTOCLEAR)
    box.append(device)
    kernel.close(fd)
    opener.wait()


def clr_fd_vs_opener(kernel: Kernel, image: str, seen: ProbeSeen) -> None:
    """Claim 7: ``LOOP_CLR_FD`` by the only opener, then its close, racing with a new
    opener that verifies the device and reads from it."""
    box: list[str] = []
    opener = _opener(kernel, box, seen)
    device, fd = attach(kernel, image, 0)
    box.append(device)
    with contextlib.suppress(OSError):  # a refusal shows in what the opener saw
        kernel.ioctl(fd, abi.LOOP_CLR_FD, 0)
    kernel.close(fd)
    opener.wait()
