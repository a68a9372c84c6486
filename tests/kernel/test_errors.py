"""Every bad input: the right exception class, a message naming the thing, nothing left."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rk import ImageMaker, Tracker

import loopdev


def test_missing_image(tmp_path: Path) -> None:
    with pytest.raises(loopdev.ImageError, match=r"nope\.img: no such file"):
        loopdev.attach(str(tmp_path / "nope.img"))


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (lambda p: (p.mkdir(), p)[1], "a directory"),
        (lambda p: (os.mkfifo(p), p)[1], "a FIFO"),
        (lambda p: Path("/dev/null"), "a character device"),
    ],
)
def test_image_of_the_wrong_kind(
    tmp_path: Path, tracker: Tracker, make: Callable[[Path], Path], what: str
) -> None:
    path = make(tmp_path / "thing")
    with pytest.raises(loopdev.ImageError, match=what) as e:
        loopdev.attach(str(path))
    assert str(path) in str(e.value)


def test_empty_image(tmp_path: Path) -> None:
    img = tmp_path / "empty.img"
    img.touch()
    with pytest.raises(loopdev.InvalidArgumentError, match="empty"):
        loopdev.attach(str(img))


@pytest.mark.parametrize(
    ("kw", "pattern"),
    [
        ({"offset": -512}, "offset must not be negative"),
        ({"sizelimit": -512}, "sizelimit must not be negative"),
        ({"offset": 100}, "offset 100 is not a multiple of 512"),
        ({"sizelimit": 1000}, "sizelimit 1000 is not a multiple of 512"),
        ({"offset": 8 << 20}, "past the end"),
        ({"offset": 1 << 20, "sizelimit": 4 << 20}, "past the end"),
        ({"block_size": 3000}, "block size 3000"),
    ],
)
def test_bad_numbers(
    make_image: ImageMaker, tracker: Tracker, kw: dict[str, int], pattern: str
) -> None:
    img = make_image("raw", size_mib=4)
    with pytest.raises(loopdev.InvalidArgumentError, match=pattern):
        loopdev.attach(str(img), **kw)  # type: ignore[arg-type]
    assert tracker.leaks() == []


def test_device_that_is_not_a_loop_device(make_image: ImageMaker, tracker: Tracker) -> None:
    img = make_image("raw", size_mib=2)
    with pytest.raises(
        loopdev.NotALoopDeviceError, match="/dev/null is not a loop device: it is a character"
    ):
        loopdev.attach(str(img), device="/dev/null")
    disk = next(
        f"/dev/{n}" for n in sorted(os.listdir("/sys/block")) if not n.startswith(("loop", "ram"))
    )
    with pytest.raises(loopdev.NotALoopDeviceError, match=f"{disk} is not a loop device"):
        loopdev.attach(str(img), device=disk)
    with pytest.raises(loopdev.NotALoopDeviceError, match="not a loop device"):
        loopdev.detach(disk)
    assert tracker.leaks() == []


def test_busy_named_device(make_image: ImageMaker, tracker: Tracker) -> None:
    """The honest 'no free device': the one asked for is taken. (Exhausting every loop
    device on a shared machine would be too invasive; GET_FREE creates more anyway.)"""
    a, b = make_image("raw", size_mib=2), make_image("raw", size_mib=2)
    with loopdev.attach(str(a)) as first:
        with pytest.raises(loopdev.BusyError, match=f"{first.path} is already in use") as e:
            loopdev.attach(str(b), device=first.path)
        assert str(a.resolve()) in str(e.value)
        assert [lp.path for lp in tracker.our_loops()] == [first.path]


def test_detach_of_a_mounted_device_names_the_mount(
    make_image: ImageMaker, mount_dir: Callable[[str], Path], tracker: Tracker
) -> None:
    img = make_image("ext4")
    mnt = mount_dir("m")
    with loopdev.attach(str(img)) as dev:
        subprocess.run(["mount", dev.path, str(mnt)], check=True)
        try:
            with pytest.raises(loopdev.BusyError, match=str(mnt)) as e:
                loopdev.detach(dev.path)
            assert any(h.kind == "mount" for h in e.value.holders)
            with pytest.raises(loopdev.BusyError):
                dev.detach()
            assert dev.closed  # the handle is released even when detach is refused
            assert dev.path in {lp.path for lp in tracker.our_loops()}
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    loopdev.detach(dev.path)
    assert tracker.leaks() == []


def test_detach_of_an_unattached_device(tracker: Tracker) -> None:
    free = subprocess.run(
        ["losetup", "-f"], capture_output=True, text=True, check=True
    ).stdout.strip()
    with pytest.raises(loopdev.NotAttachedError, match=f"{free} is not attached"):
        loopdev.detach(free)


def test_mount_target_missing_not_a_dir_or_already_mounted(
    make_image: ImageMaker, mount_dir: Callable[[str], Path], tmp_path: Path, tracker: Tracker
) -> None:
    img = make_image("ext4")
    with pytest.raises(loopdev.MountError, match="does not exist") as e:
        loopdev.mount_image(str(img), str(tmp_path / "nodir"))
    assert e.value.hint and "mkdir" in e.value.hint
    f = tmp_path / "file"
    f.touch()
    with pytest.raises(loopdev.MountError, match="is not a directory"):
        loopdev.mount_image(str(img), str(f))
    mnt = mount_dir("m")
    m = loopdev.mount_image(str(img), str(mnt))
    try:
        with pytest.raises(loopdev.MountError, match="already a mount point"):
            loopdev.mount_image(str(make_image("ext4")), str(mnt))
    finally:
        loopdev.umount(m.target)
    assert tracker.leaks() == []


def test_unknown_filesystem(
    make_image: ImageMaker, mount_dir: Callable[[str], Path], tracker: Tracker
) -> None:
    img = make_image("raw", size_mib=4)
    with pytest.raises(loopdev.MountError, match="unknown filesystem") as e:
        loopdev.mount_image(str(img), str(mount_dir("m")))
    assert str(img) in str(e.value)
    assert tracker.wait_clean(0.5) == []
    with pytest.raises(loopdev.MountError, match="unknown filesystem type 'nosuchfs'"):
        loopdev.mount_image(str(make_image("ext4")), str(mount_dir("m")), fstype="nosuchfs")
    assert tracker.wait_clean(0.5) == []


def test_wrong_explicit_filesystem(
    make_image: ImageMaker, mount_dir: Callable[[str], Path], tracker: Tracker
) -> None:
    img = make_image("ext4")
    with pytest.raises(loopdev.MountError, match="as xfs: wrong filesystem type"):
        loopdev.mount_image(str(img), str(mount_dir("m")), fstype="xfs")
    assert tracker.wait_clean(0.5) == []


def test_umount_of_a_non_mount_point(tmp_path: Path) -> None:
    with pytest.raises(loopdev.NotMountedError, match="is not a mount point"):
        loopdev.umount(str(tmp_path))
    with pytest.raises(loopdev.NotMountedError):
        loopdev.umount(str(tmp_path / "missing"))


def _as_nobody(code: str) -> subprocess.CompletedProcess[str]:
    src = Path(loopdev.__file__).parent.parent
    # import everything as root (the interpreter lives under /root), then drop privileges
    prog = (
        f"import os, sys\nsys.path.insert(0, {str(src)!r})\nimport loopdev, loopdev.linux\n"
        "loopdev.linux.default_kernel()\nos.setgroups([])\nos.setgid(65534)\nos.setuid(65534)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", prog + textwrap.dedent(code)], capture_output=True, text=True
    )


@pytest.fixture
def public_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory nobody can reach (pytest's own tmp tree is root-only)."""
    d = Path(tempfile.mkdtemp(prefix="loopdev-nobody-"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_not_root(make_image: ImageMaker, public_dir: Path, tracker: Tracker) -> None:
    img = make_image("raw", size_mib=2, directory=public_dir)
    os.chmod(img, 0o644)
    r = _as_nobody(
        f"""
        import loopdev
        try:
            loopdev.attach({str(img)!r}, read_only=True)
        except loopdev.NotPermittedError as e:
            print("NotPermitted:", e)
        """
    )
    assert "NotPermitted: cannot open /dev/loop-control: permission denied" in r.stdout, r.stderr
    assert tracker.leaks() == []


def test_unreadable_image(make_image: ImageMaker, public_dir: Path) -> None:
    """Root reads everything, so the unreadable case runs as nobody: the image check comes
    before the privilege check, so the error names the image."""
    img = make_image("raw", size_mib=2, directory=public_dir)
    os.chmod(img, 0o000)
    r = _as_nobody(
        f"""
        import loopdev
        try:
            loopdev.attach({str(img)!r}, read_only=True)
        except loopdev.ImageError as e:
            print("ImageError:", e)
        """
    )
    assert f"ImageError: {img}: cannot read it: permission denied" in r.stdout, r.stderr
