"""``loopdev mount`` / ``loopdev umount`` as mount(8) and umount(8) users expect them:
``-o loop=/dev/loopN``, umount of an image or a loop device, ``-R``, ``-l``, ``--rmdir``,
read-only filesystems attached read-only, and output that tells the truth (``-v``, ``--json``)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from rk import ImageMaker, Run, Tracker, bound_loops, mounts

from loopdev import abi


def source_of(mnt: Path) -> str | None:
    found = [m.source for m in mounts() if m.target == str(mnt)]
    return found[-1] if found else None


def loop_of(img: Path) -> list[tuple[str, int]]:
    """(device, lo_flags) of each device bound to ``img``."""
    st = img.stat()
    return [
        (b.path, b.flags)
        for b in bound_loops()
        if (b.backing_dev, b.backing_ino) == (st.st_dev, st.st_ino)
    ]


def test_loop_option_names_the_device(
    run: Run, make_image: ImageMaker, mount_dir: Callable[[str], Path], tracker: Tracker
) -> None:
    img = make_image("ext4", files={"f": b"f"})
    mnt = mount_dir("m")
    free = run("-f")[1].strip()
    code, _, err = run("mount", "-o", f"loop={free},noatime", str(img), str(mnt))
    assert code == 0, err
    assert source_of(mnt) == free and (mnt / "f").read_bytes() == b"f"
    assert run("umount", str(mnt))[0] == 0
    assert tracker.leaks() == []


@pytest.mark.parametrize("kind", ["squashfs", "erofs"])
def test_read_only_filesystems_are_attached_read_only(
    run: Run, make_image: ImageMaker, mount_dir: Callable[[str], Path], tracker: Tracker, kind: str
) -> None:
    img = make_image(kind, files={"f": b"f"})
    mnt = mount_dir("m")
    code, out, err = run("mount", "-v", str(img), str(mnt))  # no -r asked for
    assert code == 0, err
    [(dev, flags)] = loop_of(img)
    assert flags & abi.LO_FLAGS_READ_ONLY  # the device itself, as snapd expects
    assert out == f"{img} mounted on {mnt} ({kind}, ro) via {dev} (new)\n"
    assert run("umount", str(mnt))[0] == 0
    assert tracker.leaks() == []


def test_verbose_and_json_tell_the_truth(
    run: Run, make_image: ImageMaker, mount_dir: Callable[[str], Path], tracker: Tracker
) -> None:
    img = make_image("ext4")
    a, b = mount_dir("a"), mount_dir("b")
    code, out, _ = run("mount", "-J", str(img), str(a))
    assert code == 0
    first = json.loads(out)
    [(dev, flags)] = loop_of(img)
    assert first == {
        "image": str(img),
        "target": str(a),
        "device": dev,
        "diskseq": first["diskseq"],
        "fstype": "ext4",
        "read-only": False,
        "partition": None,
        "reused": False,
    }
    assert isinstance(first["diskseq"], int) and not flags & abi.LO_FLAGS_READ_ONLY
    code, out, _ = run("mount", "-J", str(img), str(b))  # same image, same mode: reused
    second = json.loads(out)
    assert second["device"] == dev and second["reused"] is True
    assert run("umount", str(a))[0] == 0 and run("umount", str(b))[0] == 0
    assert tracker.leaks() == []


def test_attach_json(run: Run, make_image: ImageMaker, tracker: Tracker) -> None:
    img = make_image("raw", size_mib=2)
    code, out, err = run("-f", "-r", "-J", str(img))
    assert code == 0, err
    data = json.loads(out)
    assert data["device"].startswith("/dev/loop") and data["read-only"] is True
    assert data["backing-file"] == str(img) and data["reused"] is False
    assert isinstance(data["diskseq"], int)
    assert run("-d", data["device"])[0] == 0


def test_umount_an_image_or_a_device(
    run: Run, make_image: ImageMaker, mount_dir: Callable[[str], Path], tracker: Tracker
) -> None:
    img = make_image("squashfs", files={"f": b"f"})
    mnt = mount_dir("m")
    assert run("mount", str(img), str(mnt))[0] == 0
    assert run("umount", "-v", str(img)) == (0, f"{img} unmounted\n", "")
    assert source_of(mnt) is None and tracker.leaks() == []
    assert run("mount", str(img), str(mnt))[0] == 0
    dev = source_of(mnt)
    assert dev is not None and run("umount", dev)[0] == 0
    assert source_of(mnt) is None and tracker.leaks() == []
    code, _, err = run("umount", str(img))
    assert code == 11 and err.startswith(f"loopdev umount: {img} is not mounted")


def test_umount_recursive(
    run: Run, make_image: ImageMaker, mount_dir: Callable[[str], Path], tracker: Tracker
) -> None:
    outer, inner = make_image("ext4"), make_image("squashfs", files={"f": b"f"})
    mnt = mount_dir("m")
    assert run("mount", str(outer), str(mnt))[0] == 0
    (mnt / "sub").mkdir()
    assert run("mount", str(inner), str(mnt / "sub"))[0] == 0
    code, _, err = run("umount", str(mnt))
    assert code == 8 and f"{mnt}/sub is mounted below {mnt}" in err
    assert run("umount", "-R", str(mnt))[0] == 0
    assert source_of(mnt) is None and source_of(mnt / "sub") is None
    assert tracker.leaks() == []  # both loop devices gone when umount returned


def test_umount_lazy(
    run: Run, make_image: ImageMaker, mount_dir: Callable[[str], Path], tracker: Tracker
) -> None:
    img = make_image("squashfs", files={"f": b"f"})
    mnt = mount_dir("m")
    assert run("mount", str(img), str(mnt))[0] == 0
    sleeper = subprocess.Popen(["sleep", "60"], cwd=mnt)
    try:
        assert run("umount", "-l", str(mnt))[0] == 0
        assert source_of(mnt) is None  # gone from the tree at once
        assert loop_of(img)  # the filesystem (and its device) lives while it is used
    finally:
        sleeper.kill()
        sleeper.wait()
    assert tracker.wait_clean(2.0) == []


def test_umount_rmdir(run: Run, make_image: ImageMaker, tmp_path: Path, tracker: Tracker) -> None:
    img = make_image("squashfs", files={"f": b"f"})
    mnt = tmp_path / "made-for-the-mount"
    mnt.mkdir()
    tracker.add_mount_dir(mnt)
    assert run("mount", str(img), str(mnt))[0] == 0
    assert run("umount", "--rmdir", str(mnt))[0] == 0
    assert not mnt.exists()
    assert tracker.leaks() == []


def test_a_second_mount_of_a_squashfs_reuses_its_read_only_device(
    run: Run, make_image: ImageMaker, mount_dir: Callable[[str], Path], tracker: Tracker
) -> None:
    img = make_image("squashfs", files={"f": b"f"})
    a, b = mount_dir("a"), mount_dir("b")
    assert run("mount", str(img), str(a))[0] == 0
    code, out, _ = run("mount", "-v", str(img), str(b))  # neither asks for -r
    assert code == 0 and out.endswith("(reused)\n")
    assert len(loop_of(img)) == 1
    assert run("umount", str(a))[0] == 0 and run("umount", str(b))[0] == 0
    assert tracker.leaks() == []
