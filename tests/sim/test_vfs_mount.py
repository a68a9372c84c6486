"""The model VFS through the port: files, stat, /proc and /sys views, flock, mount/umount of
model filesystems on loop devices."""

from __future__ import annotations

import errno
from typing import Any

import pytest
from simkit import VARIANTS, attach, errno_of, make_image, run_model

from loopdev import abi
from loopdev.mountinfo import parse_mountinfo
from loopdev.sim.kernel import SimKernel


def test_files_fds_and_stat() -> None:
    def main(k: SimKernel, notes: dict[str, Any]) -> None:
        fd = k.open("/tmp/f", abi.O_RDWR | abi.O_CREAT, 0o600)
        notes["fd"] = fd
        k.write(fd, b"hello ")
        k.write(fd, b"world")
        notes["pread"] = k.pread(fd, 5, 6)
        fd2 = k.open("/tmp/f", abi.O_RDONLY)
        notes["fd2"] = fd2
        notes["read"] = k.read(fd2, 100)
        notes["eof"] = k.read(fd2, 100)
        k.close(fd)
        notes["reuse"] = k.open("/dev/null", abi.O_RDWR)
        st = k.stat("/tmp/f")
        notes["st"] = st
        notes["fst"] = k.fstat(fd2)
        notes["link"] = k.readlink(f"/proc/self/fd/{fd2}")
        notes["fds"] = k.listdir("/proc/self/fd")
        notes["via_proc"] = k.stat(f"/proc/{k.getpid()}/fd/{fd2}")
        notes["excl"] = errno_of(lambda: k.open("/tmp/f", abi.O_CREAT | abi.O_EXCL | abi.O_RDWR))
        notes["noent"] = errno_of(lambda: k.open("/tmp/nope", abi.O_RDONLY))
        notes["notdir"] = errno_of(lambda: k.stat("/tmp/f/x"))
        notes["isdir"] = errno_of(lambda: k.open("/tmp", abi.O_RDWR))
        notes["badf"] = errno_of(lambda: k.close(99))
        notes["realpath"] = k.realpath("/sys/block/loop0/../loop1")
        notes["comm"] = k.readfile("/proc/self/comm")
        k.unlink("/tmp/f")
        notes["after_unlink"] = k.pread(fd2, 5, 0)

    run = run_model("v6.11", main)
    assert run.ok, run.outcome.describe()
    n = run.notes
    assert (n["fd"], n["fd2"], n["reuse"]) == (0, 1, 0)
    assert n["pread"] == b"world" and n["read"] == b"hello world" and n["eof"] == b""
    assert n["st"].is_reg and n["st"].size == 11 and n["st"] == n["fst"] == n["via_proc"]
    assert n["link"] == "/tmp/f"
    assert n["fds"] == ["0", "1"]
    assert (n["excl"], n["noent"], n["notdir"], n["isdir"], n["badf"]) == (
        errno.EEXIST, errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EBADF,
    )  # fmt: skip
    assert n["realpath"] == "/sys/devices/virtual/block/loop1"
    assert n["comm"] == b"main\n"
    assert n["after_unlink"] == b"hello"


def test_flock_shared_exclusive_nonblocking_and_release_on_close() -> None:
    def other(k: SimKernel, notes: dict[str, Any]) -> None:
        k.sleep(0.001)
        fd = k.open("/dev/loop0", abi.O_RDONLY)
        notes["nb"] = errno_of(lambda: k.flock(fd, abi.LOCK_EX | abi.LOCK_NB))
        k.flock(fd, abi.LOCK_SH)  # shared with the other shared lock
        notes["shared"] = True
        k.flock(fd, abi.LOCK_UN)
        k.flock(fd, abi.LOCK_EX)  # blocks until main closes its fd
        notes["ex_at"] = k.monotonic()
        k.close(fd)

    def main(k: SimKernel, notes: dict[str, Any]) -> None:
        fd = k.open("/dev/loop0", abi.O_RDONLY)
        k.flock(fd, abi.LOCK_SH)
        k.sleep(0.01)
        notes["closed_at"] = k.monotonic()
        k.close(fd)

    run = run_model("v6.11", main, helpers=(("other", other),))
    assert run.ok, run.outcome.describe()
    assert run.notes["nb"] == errno.EWOULDBLOCK
    assert run.notes["shared"] is True
    assert run.notes["ex_at"] >= run.notes["closed_at"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_mount_umount_ext2_image_on_loop(variant: str) -> None:
    def main(k: SimKernel, notes: dict[str, Any]) -> None:
        make_image(k, "/tmp/a.img")
        n, lfd = attach(k, "/tmp/a.img", flags=abi.LO_FLAGS_AUTOCLEAR)
        k.mkdir("/mnt/x")
        k.mount(f"/dev/loop{n}", "/mnt/x", "ext2")
        k.close(lfd)
        fd = k.open("/mnt/x/file", abi.O_RDWR | abi.O_CREAT)
        k.write(fd, b"persist")
        notes["st"] = k.fstat(fd)
        notes["info"] = parse_mountinfo(k.readfile("/proc/self/mountinfo").decode())
        notes["busy"] = errno_of(lambda: k.umount2("/mnt/x"))
        k.close(fd)
        k.umount2("/mnt/x")
        notes["not_mounted"] = errno_of(lambda: k.umount2("/mnt/x"))
        notes["gone"] = k.listdir("/mnt/x")
        # mount again: the files of the model fs are kept with the image
        n, lfd = attach(k, "/tmp/a.img", flags=abi.LO_FLAGS_AUTOCLEAR)
        k.mount(f"/dev/loop{n}", "/mnt/x", "ext4")
        k.close(lfd)
        notes["again"] = k.readfile("/mnt/x/file")
        k.umount2("/mnt/x")

    run = run_model(variant, main)
    assert run.ok, run.outcome.describe()
    n = run.notes
    assert n["st"].dev == abi.makedev(7, 0)
    entry = [m for m in n["info"] if m.target == "/mnt/x"]
    assert [(m.dev, m.fstype, m.source) for m in entry] == [
        (abi.makedev(7, 0), "ext2", "/dev/loop0")
    ]
    assert n["busy"] == errno.EBUSY
    assert n["not_mounted"] == errno.EINVAL
    assert n["gone"] == []
    assert n["again"] == b"persist"


def test_mount_errors() -> None:
    def main(k: SimKernel, notes: dict[str, Any]) -> None:
        make_image(k, "/tmp/x.img", "xfs")
        n, lfd = attach(k, "/tmp/x.img")
        k.mkdir("/mnt/x")
        notes["wrong_type"] = errno_of(lambda: k.mount(f"/dev/loop{n}", "/mnt/x", "ext2"))
        notes["unknown_type"] = errno_of(lambda: k.mount(f"/dev/loop{n}", "/mnt/x", "iso9660"))
        notes["unbound"] = errno_of(lambda: k.mount("/dev/loop3", "/mnt/x", "xfs"))
        notes["not_blk"] = errno_of(lambda: k.mount("/tmp/x.img", "/mnt/x", "xfs"))
        notes["no_target"] = errno_of(lambda: k.mount(f"/dev/loop{n}", "/mnt/none", "xfs"))
        k.mount(f"/dev/loop{n}", "/mnt/x", "xfs")
        k.mkdir("/mnt/x/sub")
        k.mount("tmpfs", "/mnt/x/sub", "tmpfs")
        notes["child"] = errno_of(lambda: k.umount2("/mnt/x"))
        k.umount2("/mnt/x", abi.MNT_DETACH)
        notes["after_lazy"] = [m for m in k.listdir("/mnt/x")]
        k.close(lfd)

    run = run_model("v6.11", main)
    assert run.ok, run.outcome.describe()
    n = run.notes
    assert n["wrong_type"] == errno.EINVAL
    assert n["unknown_type"] == errno.ENODEV
    assert n["unbound"] == errno.EIO  # capacity 0: "can't read superblock" (as on 6.18)
    assert n["not_blk"] == errno.ENOTBLK
    assert n["no_target"] == errno.ENOENT
    assert n["child"] == errno.EBUSY
    assert n["after_lazy"] == []


def test_lazy_umount_releases_the_device_at_last_close() -> None:
    def main(k: SimKernel, notes: dict[str, Any]) -> None:
        make_image(k, "/tmp/a.img")
        n, lfd = attach(k, "/tmp/a.img", flags=abi.LO_FLAGS_AUTOCLEAR)
        k.mkdir("/mnt/x")
        k.mount(f"/dev/loop{n}", "/mnt/x", "ext2")
        k.close(lfd)
        fd = k.open("/mnt/x/f", abi.O_RDWR | abi.O_CREAT)
        k.umount2("/mnt/x", abi.MNT_DETACH)
        notes["bound_while_open"] = k.readfile(f"/sys/block/loop{n}/size") != b"0\n"
        k.close(fd)
        notes["size_after"] = k.readfile(f"/sys/block/loop{n}/size")

    run = run_model("v6.11", main)
    assert run.ok, run.outcome.describe()
    assert run.notes["bound_while_open"] is True
    assert run.notes["size_after"] == b"0\n"
