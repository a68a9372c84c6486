"""Every bad input: the right exception class, a message naming the thing, nothing left."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rk import ImageMaker, Tracker

import loopdev


def test_missing_image(tmp_path: Path) -> None:
    missing = tmp_path / "nope.img"
    with pytest.raises(loopdev.ImageError, match=r"nope\.img: no such file") as e:
        loopdev.attach(missing)  # a Path works as well as a str
    # also the builtin a missing file raises, with errno and filename; one line, hint apart
    assert isinstance(e.value, FileNotFoundError)
    assert e.value.errno == errno.ENOENT and e.value.filename == str(missing)
    assert "\n" not in str(e.value) and e.value.hint == "check the image path"


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


def test_empty_image_is_attached_with_losetups_warning(tmp_path: Path, tracker: Tracker) -> None:
    img = tmp_path / "empty.img"
    img.touch()
    tracker.add_image(img)
    with pytest.warns(loopdev.SizeWarning, match="file is smaller than 512 bytes"):
        dev = loopdev.attach(img)
    with dev:
        assert Path(f"/sys/block/loop{dev.number}/size").read_text().strip() == "0"
    assert tracker.leaks() == []


@pytest.mark.parametrize(
    ("kw", "pattern"),
    [
        ({"offset": -512}, "offset must not be negative"),
        ({"sizelimit": -512}, "sizelimit must not be negative"),
        ({"block_size": 3000}, "block size 3000"),
    ],
)
def test_bad_numbers(
    make_image: ImageMaker, tracker: Tracker, kw: dict[str, int], pattern: str
) -> None:
    img = make_image("raw", size_mib=4)
    with pytest.raises(loopdev.InvalidArgumentError, match=pattern) as e:
        loopdev.attach(str(img), **kw)  # type: ignore[arg-type]
    assert isinstance(e.value, ValueError)
    assert tracker.leaks() == []


@pytest.mark.parametrize(
    ("kw", "warning"),
    [
        ({"offset": 100}, "does not fit into a 512-byte sector"),
        ({"sizelimit": 1000}, "does not fit into a 512-byte sector"),
        ({"sizelimit": 100}, "smaller than 512 bytes"),
        ({"offset": 4 << 20}, "smaller than 512 bytes"),
        ({"offset": 8 << 20}, "past the end of the file"),
        ({"offset": 3 << 20, "sizelimit": 2 << 20}, None),
        ({"sizelimit": 8 << 20}, None),
    ],
)
def test_ranges_losetup_accepts_are_accepted_as_losetup_sets_them_up(
    make_image: ImageMaker, tracker: Tracker, kw: dict[str, int], warning: str | None
) -> None:
    """Offsets and size limits that are unaligned or reach past the end: the device is the
    one losetup makes (same size in the kernel), with losetup's warning."""
    img = make_image("raw", size_mib=4)
    argv = [f"--{k}={v}" for k, v in kw.items()]
    ref = subprocess.run(
        ["losetup", "-f", "--show", *argv, str(img)], capture_output=True, text=True, check=True
    )
    theirs = ref.stdout.strip()
    try:
        their_size = Path(f"/sys/block/{theirs[5:]}/size").read_text()
    finally:
        subprocess.run(["losetup", "-d", theirs], check=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dev = loopdev.attach(img, **kw)  # type: ignore[arg-type]
    with dev:
        assert Path(f"/sys/block/loop{dev.number}/size").read_text() == their_size
        assert (dev.offset, dev.sizelimit) == (kw.get("offset", 0), kw.get("sizelimit", 0))
    texts = [str(w.message) for w in caught if issubclass(w.category, loopdev.SizeWarning)]
    if warning is None:
        assert texts == [] and ref.stderr == ""
    else:
        assert len(texts) == 1 and warning in texts[0], texts
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
        assert any(str(a.resolve()) in h.description for h in e.value.holders)
        assert [lp.path for lp in tracker.our_loops()] == [first.path]


def test_detach_of_a_mounted_device_waits_for_the_umount_and_names_the_mount(
    make_image: ImageMaker, mount_dir: Callable[[str], Path], tracker: Tracker
) -> None:
    img = make_image("ext4")
    mnt = mount_dir("m")
    dev = loopdev.attach(img)
    subprocess.run(["mount", dev.path, str(mnt)], check=True)
    try:
        with pytest.raises(loopdev.TeardownTimeoutError, match=r"still attached 0\.3 s") as e:
            loopdev.detach(dev.path, timeout=0.3)
        assert [h.target for h in e.value.holders if h.kind == "mount"] == [str(mnt)]
        assert e.value.hint is not None and f"loopdev umount {mnt}" in e.value.hint
        assert isinstance(e.value, TimeoutError)
        # losetup's -d: the teardown is left to the mount, and said so
        assert loopdev.detach(dev, lazy=True) is False
        assert dev.closed
        assert dev.path in {lp.path for lp in tracker.our_loops()}  # still mounted, attached
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    # the detach asked for takes effect with the umount: nothing stays attached
    assert tracker.wait_clean(2.0) == []


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
        f"import os, sys\nsys.path.insert(0, {str(src)!r})\n"
        "import loopdev, loopdev.linux, loopdev.control, loopdev.mount, loopdev.notices\n"
        "import warnings, logging\n"
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
