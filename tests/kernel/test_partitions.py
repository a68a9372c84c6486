"""Partitioned images: -P returns once the partition nodes exist, ``loopdev mount --partition``,
and no stale partitions after a detach (18048c1af783 reported some).

The kernel must parse the image's DOS partition table (CONFIG_MSDOS_PARTITION). The
development host's 6.18 kernel does not, so most tests here skip there, saying so; they run in
the real-kernel guest (Debian's 6.1 kernel parses MSDOS tables): ``loopdev vm`` runs this
module there.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rk import ImageMaker, Run, Tracker, build_image, build_partitioned

import loopdev


@pytest.fixture
def disk(tmp_path: Path, tracker: Tracker) -> Path:
    """An MBR disk image: partition 1 ext4 (file a), partition 2 squashfs (file b)."""
    ext4 = build_image("ext4", tmp_path / "p1.ext4", size_mib=8, files={"a": b"in partition 1\n"})
    sq = build_image("squashfs", tmp_path / "p2.sqfs", files={"b": b"in partition 2\n"})
    img = tmp_path / "disk.img"
    build_partitioned(img, [ext4, sq])
    tracker.add_image(img)
    return img


_PARSES: list[bool] = []


def kernel_parses_partitions(disk: Path) -> bool:
    """Whether this kernel finds the partitions of an MBR image (asked once per session)."""
    if not _PARSES:
        with loopdev.attach(disk, partscan=True, read_only=True) as dev:
            _PARSES.append(bool(_parts(dev.number)))
    return _PARSES[0]


def _parts(number: int) -> list[str]:
    prefix = f"loop{number}p"
    return sorted(n for n in os.listdir(f"/sys/block/loop{number}") if n.startswith(prefix))


@pytest.fixture
def parsed(disk: Path) -> Iterator[Path]:
    """``disk``, or a skip naming why: this kernel does not parse DOS partition tables."""
    if not kernel_parses_partitions(disk):
        pytest.skip(
            f"this kernel ({os.uname().release}) does not parse DOS partition tables "
            "(no CONFIG_MSDOS_PARTITION): run in the real-kernel guest (loopdev vm)"
        )
    yield disk


def test_partscan_returns_with_the_partition_nodes(parsed: Path, tracker: Tracker) -> None:
    with loopdev.attach(parsed, partscan=True) as dev:
        # no waiting in the test: they exist as block devices when attach returns
        for n in (1, 2):
            assert Path(f"{dev.path}p{n}").is_block_device()
        assert _parts(dev.number) == [f"loop{dev.number}p1", f"loop{dev.number}p2"]
    assert tracker.wait_clean(2.0) == []


def test_cli_partscan_returns_with_the_partition_nodes(
    run: Run, parsed: Path, tracker: Tracker
) -> None:
    code, out, err = run("-f", "-P", "--show", str(parsed))
    assert code == 0, err
    dev = out.strip()
    try:
        assert Path(f"{dev}p1").is_block_device() and Path(f"{dev}p2").is_block_device()
    finally:
        assert run("-d", dev)[0] == 0
    assert tracker.wait_clean(2.0) == []


def test_mount_a_partition(
    run: Run, parsed: Path, mount_dir: Callable[[str], Path], tracker: Tracker
) -> None:
    mnt = mount_dir("m")
    code, out, err = run("mount", "--partition", "2", "-J", str(parsed), str(mnt))
    assert code == 0, err
    assert (mnt / "b").read_text() == "in partition 2\n"
    assert '"fstype": "squashfs"' in out and '"partition": 2' in out
    assert '"read-only": true' in out
    assert run("umount", str(mnt))[0] == 0
    assert tracker.leaks() == []  # umount returned once the whole device was gone


def test_mount_partition_read_write_then_again(
    parsed: Path, mount_dir: Callable[[str], Path], tracker: Tracker
) -> None:
    mnt = mount_dir("m")
    with loopdev.mount_image(parsed, mnt, partition=1) as m:
        assert m.fstype == "ext4" and not m.read_only and m.device.endswith("p1")
        (mnt / "new").write_text("written\n")
    assert tracker.leaks() == []
    with loopdev.mounted(parsed, mnt, partition=1, read_only=True):
        assert (mnt / "new").read_text() == "written\n"
    assert tracker.leaks() == []


def test_no_such_partition(
    run: Run, parsed: Path, mount_dir: Callable[[str], Path], tracker: Tracker
) -> None:
    code, _, err = run("mount", "--partition", "3", str(parsed), str(mount_dir("m")))
    assert code == 10
    assert "it has partitions 1, 2" in err
    assert tracker.wait_clean(2.0) == []


def test_no_stale_partitions_after_detach(parsed: Path, tracker: Tracker) -> None:
    """After the detach the partitions are gone with the device (18048c1af783)."""
    dev = loopdev.attach(parsed, partscan=True)
    number = dev.number
    with open(f"{dev.path}p1", "rb"):  # a prober holding a partition during the detach
        assert dev.detach(lazy=True) is False  # deferred to the prober's close
    assert loopdev.wait_detached(number, timeout=2.0)
    assert _parts(number) == []
    assert not Path(f"/dev/loop{number}p1").exists()
    assert tracker.wait_clean(2.0) == []


def test_detach_deletes_the_partitions_while_the_device_is_still_bound(
    parsed: Path, tracker: Tracker
) -> None:
    """A detach deferred by another opener of the whole device takes the partitions away at
    once: a scanner that comes meanwhile finds no partition node instead of a partition the
    teardown deletes under it (whose reads then fail with EIO on an unbound device)."""
    dev = loopdev.attach(parsed, partscan=True)
    number = dev.number
    fd = os.open(dev.path, os.O_RDONLY)  # someone else holding the whole device
    try:
        assert dev.detach(lazy=True) is False  # deferred to our close
        assert Path(f"/sys/block/loop{number}/loop/backing_file").exists()  # still bound
        assert _parts(number) == []
        assert not Path(f"/dev/loop{number}p1").exists()
        with pytest.raises(FileNotFoundError):
            os.open(f"/dev/loop{number}p2", os.O_RDONLY)
        assert len(os.pread(fd, 4096, 0)) == 4096  # the device itself still reads
    finally:
        os.close(fd)
    assert loopdev.wait_detached(number, timeout=2.0)
    assert tracker.wait_clean(2.0) == []


# --- everywhere: an image without a partition table ------------------------------------------


def test_partition_of_an_unpartitioned_image(
    run: Run, make_image: ImageMaker, mount_dir: Callable[[str], Path], tracker: Tracker
) -> None:
    img = make_image("ext4")
    code, out, err = run("mount", "--partition", "1", str(img), str(mount_dir("m")))
    assert (code, out) == (10, "")
    assert "the kernel found no partition table" in err and str(img) in err
    assert tracker.wait_clean(2.0) == []
    code, _, err = run("mount", "--partition", "0", str(img), str(mount_dir("m")))
    assert code == 5 and "not a partition number" in err


def test_partitions_are_seen_by_losetup_too(parsed: Path, tracker: Tracker) -> None:
    """What the library attached with -P is what losetup reports (PARTSCAN column)."""
    with loopdev.attach(parsed, partscan=True) as dev:
        r = subprocess.run(
            ["losetup", "-l", "-n", "-O", "PARTSCAN", dev.path],
            capture_output=True,
            text=True,
            check=True,
        )
        assert r.stdout.strip() == "1"
    assert tracker.wait_clean(2.0) == []
