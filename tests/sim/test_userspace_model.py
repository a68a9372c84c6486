"""The modelled util-linux programs on the model kernel, one schedule each: what a user sees."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from loopdev import abi
from loopdev.kernel import RunResult
from loopdev.lab.userspace import register_util_linux
from loopdev.sim.kernel import SimKernel
from loopdev.sim.sched import Scheduler
from loopdev.sim.strategy import RandomWalk


def session(ul: str, body: Callable[[SimKernel], None], variant: str = "v6.11") -> None:
    sched = Scheduler(RandomWalk(0), trace=False)
    k = SimKernel.boot(variant, sched, nr_loop=4)
    register_util_linux(k, ul)
    k.spawn(lambda: body(k), "sh")
    out = sched.run()
    assert out.ok, out.describe()


def sh(k: SimKernel, *argv: str) -> RunResult:
    return k.run(list(argv))


@pytest.mark.parametrize("ul", ["2.37", "2.38"])
def test_mount_umount_and_reuse(ul: str) -> None:
    seen: list[RunResult] = []

    def body(k: SimKernel) -> None:
        k.mkdir("/mnt/a")
        k.mkdir("/mnt/b")
        seen.append(sh(k, "mkfs.ext4", "/tmp/img", "1M"))
        seen.append(sh(k, "mount", "-o", "loop,ro", "/tmp/img", "/mnt/a"))
        seen.append(sh(k, "mount", "-o", "loop,ro", "/tmp/img", "/mnt/b"))  # reuses loop0
        mi = k.readfile("/proc/self/mountinfo").decode()
        seen.append(RunResult(0, mi))
        seen.append(sh(k, "umount", "/mnt/b"))
        seen.append(sh(k, "umount", "/mnt/a"))
        seen.append(sh(k, "umount", "/mnt/a"))

    session(ul, body)
    codes = [r.returncode for r in seen]
    assert codes == [0, 0, 0, 0, 0, 0, 32], seen
    assert seen[3].stdout.count("/dev/loop0") == 2  # the second mount reused the device
    assert seen[6].stderr == "umount: /mnt/a: not mounted.\n"


def test_mount_of_an_unrecognised_image_says_wrong_fs_type_and_frees_the_device() -> None:
    seen: list[RunResult] = []

    def body(k: SimKernel) -> None:
        k.mkdir("/mnt/a")
        fd = k.open("/tmp/junk", abi.O_RDWR | abi.O_CREAT)
        k.pwrite(fd, b"\0" * 65536, 0)
        k.close(fd)
        seen.append(sh(k, "mount", "-o", "loop", "-t", "ext4", "/tmp/junk", "/mnt/a"))
        seen.append(sh(k, "losetup", "-f", "--show", "/tmp/junk"))
        seen.append(sh(k, "losetup", "-d", seen[-1].stdout.strip()))

    session("2.38", body)
    assert seen[0].returncode == 32
    assert seen[0].stderr.startswith(
        "mount: /mnt/a: wrong fs type, bad option, bad superblock on /dev/loop0,"
    )
    assert seen[1].stdout == "/dev/loop0\n"  # the failed mount's device was cleared
    assert seen[2].returncode == 0


def test_umount_of_a_busy_mount_is_ebusy() -> None:
    seen: list[RunResult] = []

    def body(k: SimKernel) -> None:
        k.mkdir("/mnt/a")
        sh(k, "mksquashfs", "/tmp", "/tmp/sq.img")
        sh(k, "mount", "-o", "loop,ro", "/tmp/sq.img", "/mnt/a")
        fd = k.open("/mnt/a", abi.O_DIRECTORY)  # an open directory keeps the mount busy
        seen.append(sh(k, "umount", "/mnt/a"))
        k.close(fd)
        seen.append(sh(k, "umount", "/mnt/a"))

    session("2.38", body)
    assert (seen[0].returncode, seen[0].stderr) == (32, "umount: /mnt/a: target is busy.\n")
    assert seen[1].returncode == 0
