"""attach() on real loop devices: every option, read back through the kernel and losetup."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import time
import warnings
from pathlib import Path

import pytest
from rk import ImageMaker, Tracker, bound_loops

import loopdev
from loopdev import abi


def losetup_row(dev: str) -> dict[str, object]:
    out = subprocess.run(
        [
            "losetup",
            "-J",
            "-l",
            "-O",
            "NAME,OFFSET,SIZELIMIT,RO,AUTOCLEAR,DIO,LOG-SEC,PARTSCAN,BACK-FILE,BACK-INO",
            dev,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows: list[dict[str, object]] = json.loads(out)["loopdevices"]
    assert len(rows) == 1
    return rows[0]


def test_attach_defaults_then_detach(make_image: ImageMaker, tracker: Tracker) -> None:
    img = make_image("raw", size_mib=4)
    dev = loopdev.attach(str(img))
    assert dev.path.startswith("/dev/loop") and not dev.closed
    assert (dev.backing_dev, dev.backing_ino) == (os.stat(img).st_dev, os.stat(img).st_ino)
    assert dev.backing_file == str(img.resolve())
    assert dev.diskseq and dev.diskseq > 0
    row = losetup_row(dev.path)
    assert row["back-file"] == str(img.resolve())
    assert (row["ro"], row["autoclear"], row["offset"]) in ((False, False, 0), ("0", "0", "0"))
    dev.detach()
    assert dev.closed
    assert tracker.leaks() == []
    assert not os.path.isdir(f"/sys/block/loop{dev.number}/loop")


def test_every_option_is_applied(make_image: ImageMaker, tracker: Tracker) -> None:
    img = make_image("raw", size_mib=8)
    dev = loopdev.attach(
        str(img),
        offset=4096,
        sizelimit=1 << 20,
        read_only=True,
        direct_io=True,
        block_size=4096,
        partscan=True,
        loop_ref="test-ref",
    )
    with dev:
        info = dev.info()
        assert (info.offset, info.sizelimit) == (4096, 1 << 20)
        assert info.read_only and info.partscan and info.direct_io
        assert info.block_size == 4096 and info.ref == "test-ref"
        size = subprocess.run(
            ["blockdev", "--getsize64", dev.path], capture_output=True, text=True, check=True
        ).stdout
        assert int(size) == 1 << 20
        with pytest.raises(OSError):  # the kernel refuses writes to a read-only device
            fd = os.open(dev.path, os.O_WRONLY)
            try:
                os.write(fd, b"x" * 4096)
                os.fsync(fd)
            finally:
                os.close(fd)
    assert tracker.leaks() == []


def test_autoclear_device_goes_with_the_last_close(
    make_image: ImageMaker, tracker: Tracker
) -> None:
    img = make_image("raw", size_mib=4)
    dev = loopdev.attach(str(img), autoclear=True)
    assert dev.autoclear and tracker.leaks()
    dev.relinquish()
    assert tracker.wait_clean(1.0) == []


def test_relinquish_leaves_it_attached(make_image: ImageMaker, tracker: Tracker) -> None:
    img = make_image("raw", size_mib=4)
    dev = loopdev.attach(str(img))
    dev.relinquish()
    assert [lp.path for lp in tracker.our_loops()] == [dev.path]
    loopdev.detach(dev.path)
    assert tracker.leaks() == []


def test_loop_ref_interoperates_with_losetup_and_detach_all(
    make_image: ImageMaker, tracker: Tracker
) -> None:
    a, b, c = (make_image("raw", size_mib=2) for _ in range(3))
    devs = [loopdev.attach(str(a), loop_ref="grp-1"), loopdev.attach(str(b), loop_ref="grp-1")]
    other = loopdev.attach(str(c), loop_ref="grp-2")
    for d in devs:
        d.relinquish()
    # util-linux keeps the ref in lo_file_name; losetup -l shows it as the ioctl's file name
    assert {s.ref for s in loopdev.list_devices() if s.path in {d.path for d in devs}} == {"grp-1"}
    detached = loopdev.detach_all("grp-1")
    assert sorted(detached) == sorted(d.path for d in devs)
    assert [lp.path for lp in tracker.our_loops()] == [other.path]
    other.detach()


def test_find_and_list(make_image: ImageMaker) -> None:
    img = make_image("raw", size_mib=4)
    with loopdev.attach(str(img), offset=512) as dev:
        found = loopdev.find(str(img))
        assert [s.path for s in found] == [dev.path]
        assert loopdev.find(str(img), offset=0) == []
        assert dev.path in {s.path for s in loopdev.list_devices()}


def test_set_capacity_sees_a_grown_image(make_image: ImageMaker) -> None:
    img = make_image("raw", size_mib=4)
    with loopdev.attach(str(img)) as dev:
        with open(img, "r+b") as f:
            f.truncate(8 << 20)
        assert dev.set_capacity() == 8 << 20


def test_direct_io_and_block_size_change_on_a_bound_device(make_image: ImageMaker) -> None:
    img = make_image("raw", size_mib=4)
    with loopdev.attach(str(img)) as dev:
        sysfs = f"/sys/block/loop{dev.number}"
        dev.set_direct_io(True)
        assert dev.direct_io and Path(f"{sysfs}/loop/dio").read_text().strip() == "1"
        dev.set_direct_io(False)
        assert not dev.direct_io and Path(f"{sysfs}/loop/dio").read_text().strip() == "0"
        dev.set_block_size(4096)
        assert dev.block_size == 4096
        assert Path(f"{sysfs}/queue/logical_block_size").read_text().strip() == "4096"
        with pytest.raises(loopdev.InvalidArgumentError, match="block size 3000"):
            dev.set_block_size(3000)
        assert dev.block_size == 4096


def test_explicit_device_that_does_not_exist_yet_is_created(
    make_image: ImageMaker, tracker: Tracker
) -> None:
    numbers = {int(n[4:]) for n in os.listdir("/sys/block") if n.startswith("loop")}
    n = max(numbers) + 7
    img = make_image("raw", size_mib=2)
    try:
        with loopdev.attach(str(img), device=f"/dev/loop{n}") as dev:
            assert dev.number == n
    finally:
        loopdev.remove(n)
    assert not os.path.exists(f"/sys/block/loop{n}")


def write_mbr(img: Path, parts: list[tuple[int, int]]) -> None:
    """A DOS partition table with Linux partitions (start sector, sector count)."""
    mbr = bytearray(512)
    for i, (start, count) in enumerate(parts):
        mbr[446 + 16 * i : 446 + 16 * (i + 1)] = struct.pack(
            "<B3sB3sII", 0, b"\0\0\0", 0x83, b"\0\0\0", start, count
        )
    mbr[510:512] = b"\x55\xaa"
    with open(img, "r+b") as f:
        f.write(mbr)


def test_partitions_appear(make_image: ImageMaker, tmp_path: Path) -> None:
    img = make_image("raw", size_mib=8)
    write_mbr(img, [(2048, 4096), (6144, 4096)])
    with loopdev.attach(str(img), partscan=True, wait_partitions=True) as dev:
        assert dev.partscan
        if not any(
            n.startswith(f"loop{dev.number}p") for n in os.listdir(f"/sys/block/loop{dev.number}")
        ):
            pytest.skip("this kernel parses no DOS partition tables (losetup -P finds none either)")
        for p in (1, 2):
            assert os.path.exists(f"{dev.path}p{p}")


def test_blkpg_through_the_port_adds_and_removes_a_partition(make_image: ImageMaker) -> None:
    from loopdev.linux import default_kernel

    k = default_kernel()
    img = make_image("raw", size_mib=8)
    with loopdev.attach(str(img), partscan=True) as dev:
        req = abi.BlkpgRequest(abi.BLKPG_ADD_PARTITION, abi.BlkpgPartition(1 << 20, 2 << 20, 1))
        k.ioctl(dev.fileno(), abi.BLKPG, req.pack())
        part = f"/sys/block/loop{dev.number}/loop{dev.number}p1"
        assert int(Path(f"{part}/size").read_text()) == (2 << 20) // 512
        req = abi.BlkpgRequest(abi.BLKPG_DEL_PARTITION, abi.BlkpgPartition(0, 0, 1))
        k.ioctl(dev.fileno(), abi.BLKPG, req.pack())
        assert not os.path.exists(part)


def test_read_write_on_a_read_only_bind_mount_falls_back(
    make_image: ImageMaker, mount_dir: object, tmp_path: Path, tracker: Tracker
) -> None:
    img = make_image("raw", size_mib=2)
    ro = tmp_path / "ro"
    ro.mkdir()
    tracker.add_mount_dir(ro)
    subprocess.run(["mount", "--bind", str(tmp_path), str(ro)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dev = loopdev.attach(str(ro / img.name))
        with dev:
            assert dev.read_only and dev.read_only_fallback
            assert any(issubclass(w.category, loopdev.ReadOnlyFallbackWarning) for w in caught)
            assert str(ro / img.name) in str(caught[0].message)
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def test_read_write_on_an_immutable_file_falls_back(make_image: ImageMaker) -> None:
    img = make_image("raw", size_mib=2)
    if subprocess.run(["chattr", "+i", str(img)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i not supported here")
    try:
        with (
            pytest.warns(loopdev.ReadOnlyFallbackWarning, match=img.name),
            loopdev.attach(str(img)) as dev,
        ):
            assert dev.read_only_fallback and dev.info().read_only
    finally:
        subprocess.run(["chattr", "-i", str(img)], check=True)


def test_detached_handle_info_says_so(make_image: ImageMaker) -> None:
    img = make_image("raw", size_mib=2)
    dev = loopdev.attach(str(img))
    dup = os.dup(dev.fileno())
    try:
        dev.detach(wait=False)
        status = bytearray(abi.LoopInfo64.SIZE)
        with pytest.raises(OSError):
            import fcntl

            fcntl.ioctl(dup, abi.LOOP_GET_STATUS64, status)
    finally:
        os.close(dup)
    assert all(lp.path != dev.path or lp.backing_ino != dev.backing_ino for lp in bound_loops())


def test_attach_sends_a_change_uevent_with_the_diskseq(make_image: ImageMaker) -> None:
    from loopdev.linux import default_kernel

    k = default_kernel()
    sock = k.uevent_open()
    try:
        img = make_image("raw", size_mib=2)
        with loopdev.attach(str(img)) as dev:
            deadline = time.monotonic() + 2
            seen = []
            while time.monotonic() < deadline:
                ev = k.uevent_read(sock, 0.2)
                if ev and ev.devname == f"loop{dev.number}":
                    seen.append(ev)
                    if ev.action == "change" and ev.diskseq == dev.diskseq:
                        break
            assert any(e.action == "change" and e.diskseq == dev.diskseq for e in seen)
    finally:
        k.close(sock)
