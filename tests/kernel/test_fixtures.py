"""The real-kernel fixtures themselves: images mount, and the tracker removes leftovers."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from rk import ImageMaker, Tracker


@pytest.mark.parametrize("kind", ["ext4", "ext2", "xfs", "squashfs", "erofs"])
def test_images_are_real_filesystems(kind: str, make_image: ImageMaker) -> None:
    files = {} if kind == "xfs" else {"hello.txt": b"hi\n"}
    img = make_image(kind, files=files)
    out = subprocess.run(
        ["blkid", "-p", "-o", "value", "-s", "TYPE", str(img)], capture_output=True, text=True
    )
    assert out.stdout.strip() == kind


@pytest.mark.allow_leftovers
def test_tracker_removes_a_leaked_mount_and_device(
    make_image: ImageMaker, mount_dir: Callable[[str], Path], tracker: Tracker
) -> None:
    img = make_image("ext4", files={"a": b"a"})
    mnt = mount_dir("m")
    dev = subprocess.run(
        ["losetup", "-f", "--show", str(img)], capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(["mount", dev, str(mnt)], check=True)
    assert len(tracker.leaks()) == 2
    tracker.cleanup()
    assert tracker.leaks() == []
