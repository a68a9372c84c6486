"""Real-kernel test helpers that do not use the library under test: discovery of bound loop
devices and mounts by identity, cleanup, and real filesystem images built with mkfs tools."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

LOOP_CLR_FD = 0x4C01
LOOP_GET_STATUS64 = 0x4C05
_INFO64 = struct.Struct("=QQQQQIIII64s64s32sQQ")
MNT_DETACH = 2


# --- identity-based discovery (no library) ---------------------------------------------------


@dataclass(frozen=True)
class BoundLoop:
    """A bound loop device as seen through LOOP_GET_STATUS64 on an open fd."""

    path: str
    number: int
    rdev: int
    backing_dev: int
    backing_ino: int
    offset: int
    flags: int


def _sysfs_backing(name: str) -> str | None:
    try:
        with open(f"/sys/block/{name}/loop/backing_file") as f:
            return f.read().rstrip("\n")
    except OSError:
        return None


def bound_loops(under: list[str] | None = None) -> list[BoundLoop]:
    """Bound loop devices, verified by ioctl (devices vanishing meanwhile are skipped).

    With ``under``, only devices whose sysfs backing_file lies below one of those
    directories (and is not deleted) are opened at all: other people's devices are not
    touched, and a recycled inode number of a deleted file cannot be mistaken for ours.
    """
    found: list[BoundLoop] = []
    for name in sorted(os.listdir("/sys/block")):
        if not name.startswith("loop") or not os.path.isdir(f"/sys/block/{name}/loop"):
            continue
        if under is not None:
            backing = _sysfs_backing(name)
            if backing is None or backing.endswith(" (deleted)"):
                continue
            if not any(_under(backing, b) for b in under):
                continue
        path = f"/dev/{name}"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            buf = bytearray(_INFO64.size)
            fcntl.ioctl(fd, LOOP_GET_STATUS64, buf)
            rdev = os.fstat(fd).st_rdev
        except OSError:
            continue
        finally:
            os.close(fd)
        f = _INFO64.unpack(buf)
        found.append(BoundLoop(path, int(name[4:]), rdev, f[0], f[1], f[3], f[8]))
    return found


def _decode_mountinfo_path(raw: str) -> str:
    return (
        raw.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
    )


@dataclass(frozen=True)
class MountEntry:
    target: str
    dev: int  # st_dev of the mounted filesystem
    source: str
    fstype: str


def mounts() -> list[MountEntry]:
    """The current mount table (``/proc/self/mountinfo``)."""
    out: list[MountEntry] = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            parts = left.split()
            maj, mnr = parts[2].split(":")
            rparts = right.split()
            out.append(
                MountEntry(
                    target=_decode_mountinfo_path(parts[4]),
                    dev=os.makedev(int(maj), int(mnr)),
                    source=_decode_mountinfo_path(rparts[1]) if len(rparts) > 1 else "",
                    fstype=rparts[0],
                )
            )
    return out


def _under(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


@dataclass
class Tracker:
    """Everything a test created on the real kernel, and the code that removes it."""

    base: Path
    inodes: set[tuple[int, int]] = field(default_factory=set)
    mount_dirs: list[str] = field(default_factory=list)
    image_dirs: list[str] = field(default_factory=list)

    def add_image(self, path: str | os.PathLike[str]) -> None:
        """Detach, at the end, every loop device backed by this file (by st_dev/st_ino)."""
        st = os.stat(path)
        self.inodes.add((st.st_dev, st.st_ino))
        self.image_dirs.append(os.path.dirname(os.path.realpath(path)))

    def add_mount_dir(self, path: str | os.PathLike[str]) -> None:
        """Unmount, at the end, whatever is mounted on or below this directory."""
        self.mount_dirs.append(os.path.realpath(path))

    def bases(self) -> list[str]:
        return [str(self.base.resolve()), *self.mount_dirs, *self.image_dirs]

    def our_loops(self) -> list[BoundLoop]:
        """Devices backed by our images: same st_dev/st_ino AND a backing path below our
        directories (inode numbers of deleted files are recycled)."""
        return [
            lp
            for lp in bound_loops(self.bases())
            if (lp.backing_dev, lp.backing_ino) in self.inodes
        ]

    def our_mounts(self) -> list[MountEntry]:
        loops = {lp.rdev for lp in self.our_loops()}
        bases = [str(self.base.resolve()), *self.mount_dirs]
        return [m for m in mounts() if m.dev in loops or any(_under(m.target, b) for b in bases)]

    def leaks(self) -> list[str]:
        """Human-readable list of what is still attached or mounted."""
        return [f"mount {m.target} ({m.source}, {m.fstype})" for m in self.our_mounts()] + [
            f"loop device {lp.path} (backing ino {lp.backing_ino})" for lp in self.our_loops()
        ]

    def wait_clean(self, timeout: float = 2.0) -> list[str]:
        """Leaks still present after waiting out asynchronous autoclear for ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            left = self.leaks()
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.01)

    def cleanup(self) -> None:
        """Unmount (deepest first) and detach everything of ours. Never raises."""
        for _ in range(3):
            for m in sorted(self.our_mounts(), key=lambda m: -len(m.target)):
                for flags in (0, MNT_DETACH):
                    if (
                        subprocess.run(
                            ["umount", *(["-l"] if flags else []), m.target],
                            capture_output=True,
                        ).returncode
                        == 0
                    ):
                        break
            for lp in self.our_loops():
                try:
                    fd = os.open(lp.path, os.O_RDONLY | os.O_CLOEXEC)
                except OSError:
                    continue
                try:
                    buf = bytearray(_INFO64.size)
                    fcntl.ioctl(fd, LOOP_GET_STATUS64, buf)
                    f = _INFO64.unpack(buf)
                    if (f[0], f[1]) == (lp.backing_dev, lp.backing_ino):
                        fcntl.ioctl(fd, LOOP_CLR_FD)
                except OSError as e:
                    if e.errno not in (errno.ENXIO, errno.EBUSY):
                        raise
                finally:
                    os.close(fd)
            if not self.wait_clean(1.0):
                return


# --- real images --------------------------------------------------------------------------

IMAGE_KINDS = ("ext4", "ext2", "xfs", "squashfs", "erofs", "raw")
_MIN_MIB = {"xfs": 300}


def _run(argv: list[str]) -> None:
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({r.returncode}): {r.stderr.strip()}")


def build_image(
    kind: str,
    path: Path,
    *,
    size_mib: int = 16,
    files: dict[str, bytes] | None = None,
    tmpdir: Path | None = None,
) -> Path:
    """Build a real ``kind`` image at ``path`` holding ``files`` (name → content)."""
    if kind not in IMAGE_KINDS:
        raise ValueError(f"unknown image kind {kind!r}")
    size_mib = max(size_mib, _MIN_MIB.get(kind, 1))
    tool = {
        "ext4": "mkfs.ext4",
        "ext2": "mkfs.ext2",
        "xfs": "mkfs.xfs",
        "squashfs": "mksquashfs",
        "erofs": "mkfs.erofs",
    }.get(kind)
    if tool and shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed (scripts/setup.sh installs it)")
    src = (tmpdir or path.parent) / f".{path.name}.src"
    src.mkdir(parents=True, exist_ok=True)
    for name, data in (files or {}).items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    if kind in ("squashfs", "erofs"):
        if kind == "squashfs":
            _run(["mksquashfs", str(src), str(path), "-noappend", "-quiet", "-no-progress"])
        else:
            _run(["mkfs.erofs", "--quiet", str(path), str(src)])
    else:
        with open(path, "wb") as f:
            f.truncate(size_mib << 20)
        if kind in ("ext4", "ext2"):
            _run([f"mkfs.{kind}", "-q", "-F", "-E", "nodiscard", "-d", str(src), str(path)])
        elif kind == "xfs":
            if files:
                raise ValueError("xfs images are built empty here")
            _run(["mkfs.xfs", "-q", "-f", "-K", str(path)])
    shutil.rmtree(src)
    return path


ImageMaker = Callable[..., Path]
#: the ``run`` fixture: ``run(*argv) -> (exit code, stdout, stderr)`` of the CLI
Run = Callable[..., tuple[int, str, str]]


# --- partitioned images ---------------------------------------------------------------------

_MIB = 1 << 20


def build_partitioned(path: Path, parts: list[Path], *, tmpdir: Path | None = None) -> list[int]:
    """A disk image at ``path`` with an MBR (DOS) partition table and one Linux partition
    (type 0x83) per image in ``parts``, each copied in at a 1 MiB-aligned start; returns the
    partitions' byte offsets. Written here, not with sfdisk (not installed everywhere)."""
    offsets: list[int] = []
    at = _MIB
    for p in parts:
        offsets.append(at)
        at += -(-p.stat().st_size // _MIB) * _MIB
    mbr = bytearray(512)
    for i, (p, start) in enumerate(zip(parts, offsets, strict=True)):
        sectors = -(-p.stat().st_size // 512)
        entry = struct.pack(
            "<B3sB3sII", 0, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff", start // 512, sectors
        )
        mbr[446 + 16 * i : 446 + 16 * (i + 1)] = entry
    mbr[510:512] = b"\x55\xaa"
    with open(path, "wb") as f:
        f.truncate(at + _MIB)
        f.write(mbr)
        for p, start in zip(parts, offsets, strict=True):
            f.seek(start)
            f.write(p.read_bytes())
    return offsets
