"""mount_image / umount on real loop devices: data, reuse, nested mounts under a udev-like
opener, and io_uring references after kill -9."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from rk import ImageMaker, Tracker, build_image

import loopdev


def test_data_survives_umount_detach_and_remount(
    make_image: ImageMaker, mount_dir: Callable[[str], Path], tracker: Tracker
) -> None:
    img = make_image("ext4", size_mib=32)
    mnt = mount_dir("m")
    payload = {f"f{i}": os.urandom(random.randint(1, 1 << 20)) for i in range(5)}
    m = loopdev.mount_image(str(img), str(mnt))
    assert m.fstype == "ext4" and not m.read_only and m.target == str(mnt.resolve())
    for name, data in payload.items():
        (mnt / name).write_bytes(data)
    loopdev.umount(str(mnt))
    assert tracker.leaks() == []  # umount returned only after the device was detached
    with loopdev.mounted(str(img), str(mnt), read_only=True) as m2:
        assert m2.read_only
        for name, data in payload.items():
            assert (
                hashlib.sha256((mnt / name).read_bytes()).digest() == hashlib.sha256(data).digest()
            )
    assert tracker.leaks() == []


@pytest.mark.parametrize("kind", ["ext4", "ext2", "xfs", "squashfs", "erofs"])
def test_detects_each_filesystem(
    kind: str, make_image: ImageMaker, mount_dir: Callable[[str], Path], tracker: Tracker
) -> None:
    files = {} if kind == "xfs" else {"hello.txt": b"hello\n"}
    img = make_image(kind, files=files)
    with loopdev.mounted(str(img), str(mount_dir("m")), read_only=True) as m:
        assert m.fstype == kind
        if files:
            assert (Path(m.target) / "hello.txt").read_bytes() == b"hello\n"
    assert tracker.leaks() == []


def test_reuse_holds_the_device_and_outlives_the_first_umount(
    make_image: ImageMaker, mount_dir: Callable[[str], Path], tracker: Tracker
) -> None:
    img = make_image("squashfs", files={"a": b"a"})
    a, b = mount_dir("a"), mount_dir("b")
    m1 = loopdev.mount_image(str(img), str(a), read_only=True)
    m2 = loopdev.mount_image(str(img), str(b), read_only=True)
    assert m2.reused and m2.device == m1.device
    loopdev.umount(str(a))  # still mounted on b: umount must not wait for the device
    assert (b / "a").read_bytes() == b"a"
    loopdev.umount(str(b))
    assert tracker.leaks() == []


def test_busy_mount_names_the_process(
    make_image: ImageMaker, mount_dir: Callable[[str], Path], tracker: Tracker
) -> None:
    img = make_image("ext4")
    mnt = mount_dir("m")
    loopdev.mount_image(str(img), str(mnt))
    holder = subprocess.Popen(["sleep", "30"], cwd=mnt)
    try:
        with pytest.raises(loopdev.BusyError, match="in use") as e:
            loopdev.umount(str(mnt), timeout=5)
        assert any(h.pid == holder.pid and "sleep" in h.description for h in e.value.holders)
    finally:
        holder.kill()
        holder.wait()
    loopdev.umount(str(mnt))
    assert tracker.leaks() == []


def _opener(dev: str, stop: str) -> None:
    """A udev-like prober: opens the device O_RDONLY for 1-5 ms, again and again."""
    rng = random.Random()
    while not os.path.exists(stop):
        try:
            fd = os.open(dev, os.O_RDONLY)
        except OSError:
            time.sleep(0.001)
            continue
        time.sleep(rng.uniform(0.001, 0.005))
        os.close(fd)
        time.sleep(rng.uniform(0, 0.002))


def test_nested_umount_inner_then_outer_never_fails(
    make_image: ImageMaker, mount_dir: Callable[[str], Path], tmp_path: Path, tracker: Tracker
) -> None:
    """ext2 image on an xfs loop mount, with a concurrent opener of the inner device:
    ``umount inner; umount outer`` must succeed every time (xfs/049's shape)."""
    from loopdev.linux import default_kernel

    k = default_kernel()
    outer_img = make_image("xfs", size_mib=300)
    outer, inner = mount_dir("outer"), mount_dir("inner")
    rounds = 12
    for i in range(rounds):
        loopdev.mount_image(str(outer_img), str(outer))
        inner_img = outer / "inner.img"
        if i == 0 or not inner_img.exists():
            build_image("ext2", inner_img, size_mib=8, files={"x": b"x"}, tmpdir=tmp_path)
        tracker.add_image(inner_img)
        m = loopdev.mount_image(str(inner_img), str(inner))
        stop = tmp_path / "stop"
        stop.unlink(missing_ok=True)
        proc = k.spawn(lambda dev=m.device, s=str(stop): _opener(dev, s), "opener")
        try:
            time.sleep(random.uniform(0.005, 0.03))
            loopdev.umount(str(inner))
            loopdev.umount(str(outer))
        finally:
            stop.touch()
            assert proc.wait(5) == 0
    assert tracker.leaks() == []


@pytest.mark.skipif(shutil.which("fio") is None, reason="fio not installed")
def test_umount_after_kill_9_of_io_uring_fio(
    make_image: ImageMaker, mount_dir: Callable[[str], Path], tracker: Tracker
) -> None:
    img = make_image("ext4", size_mib=64)
    mnt = mount_dir("m")
    for _ in range(3):
        loopdev.mount_image(str(img), str(mnt))
        data = mnt / "data"
        if not data.exists():
            data.write_bytes(os.urandom(16 << 20))
        fio = subprocess.Popen(
            [
                "fio",
                "--name=r",
                f"--filename={data}",
                "--rw=randread",
                "--bs=4k",
                "--ioengine=io_uring",
                "--iodepth=64",
                "--direct=1",
                "--time_based",
                "--runtime=30",
                "--size=16M",
                "--thread",  # one process: SIGKILL kills every job
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
        )
        try:
            time.sleep(0.4)
        finally:
            fio.send_signal(signal.SIGKILL)  # --thread: one process, so this kills every job
            fio.wait()
        loopdev.umount(str(mnt))  # must wait out the io_uring references, not fail
        assert tracker.leaks() == []


def test_mount_is_a_context_manager_and_umounts_itself(
    make_image: ImageMaker, mount_dir: Callable[[str], Path], tracker: Tracker
) -> None:
    img = make_image("ext4", files={"f": b"f"})
    mnt = mount_dir("m")
    with loopdev.mount_image(img, mnt) as m:  # pathlib paths, as everywhere in the API
        assert (m.image, m.target) == (str(img), str(mnt))
        assert (mnt / "f").read_bytes() == b"f"
    assert tracker.leaks() == []  # unmounted, and its device detached, when the block ended
    m = loopdev.mount_image(img, mnt, read_only=True)
    m.umount()
    assert tracker.leaks() == []


def test_open_an_existing_device(make_image: ImageMaker, tracker: Tracker) -> None:
    img = make_image("raw", size_mib=2)
    dev = loopdev.attach(img, loop_ref="open-me")
    dev.relinquish()
    handle = loopdev.LoopDevice.open(dev.path)
    assert (handle.number, handle.loop_ref, handle.diskseq) == (dev.number, "open-me", dev.diskseq)
    assert handle.info().backing_file == str(img)
    assert handle.detach() is True
    with pytest.raises(loopdev.NotAttachedError, match=f"{dev.path} is not attached"):
        loopdev.LoopDevice.open(dev.path)
    assert tracker.leaks() == []
