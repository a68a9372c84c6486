"""LinuxKernel details the hot paths rely on: statx-backed stat, O_PATH realpath, and
filesystem detection bounded to the byte range a loop device shows."""

from __future__ import annotations

import os
from pathlib import Path

from rk import ImageMaker

from loopdev import abi
from loopdev.fsdetect import detect
from loopdev.linux import LinuxKernel


def test_stat_matches_os_stat_and_knows_mount_roots(tmp_path: Path) -> None:
    k = LinuxKernel()
    f = tmp_path / "f"
    f.write_bytes(b"12345")
    link = tmp_path / "link"
    link.symlink_to(f)
    for path, follow in (
        (str(f), True),
        (str(link), True),
        (str(link), False),
        ("/dev/null", True),
    ):
        st = k.stat(path, follow_symlinks=follow)
        ref = os.stat(path, follow_symlinks=follow)
        assert (st.mode, st.ino, st.dev, st.rdev, st.size, st.nlink, st.uid) == (
            ref.st_mode,
            ref.st_ino,
            ref.st_dev,
            ref.st_rdev,
            ref.st_size,
            ref.st_nlink,
            ref.st_uid,
        )
    assert k.stat("/").mount_root is True
    assert k.stat("/proc").mount_root is True
    assert k.stat(str(tmp_path)).mount_root is False
    missing = tmp_path / "missing"
    try:
        k.stat(str(missing))
    except FileNotFoundError as e:
        assert e.filename == str(missing)
    else:
        raise AssertionError("stat of a missing path succeeded")


def test_realpath_resolves_like_os_path_realpath(tmp_path: Path) -> None:
    k = LinuxKernel()
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "l").symlink_to(tmp_path / "d")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for p in ("l/e", "./l/../d/e/", str(tmp_path / "l"), "missing/x", "l/missing", "/"):
            assert k.realpath(p) == os.path.realpath(p), p
    finally:
        os.chdir(cwd)


def test_detect_reads_only_the_devices_byte_range(make_image: ImageMaker, tmp_path: Path) -> None:
    k = LinuxKernel()
    squash = make_image("squashfs", files={"a": b"a"}).read_bytes()
    img = tmp_path / "offset.img"
    img.write_bytes(bytes(8192) + squash)
    fd = k.open(str(img), abi.O_RDONLY)
    try:
        assert detect(k, fd) is None
        assert detect(k, fd, 8192, len(squash)) == "squashfs"
        assert detect(k, fd, 8192, 0) is None  # a zero-length device shows nothing
        assert detect(k, fd, 4096, 4096) is None
    finally:
        k.close(fd)
