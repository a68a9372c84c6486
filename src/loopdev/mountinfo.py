"""The mount table, from /proc/self/mountinfo, read through the port."""

from __future__ import annotations

from dataclasses import dataclass

from loopdev import abi
from loopdev.kernel import Kernel

MOUNTINFO = "/proc/self/mountinfo"


@dataclass(frozen=True)
class MountEntry:
    """One line of mountinfo."""

    mount_id: int
    target: str
    dev: int  # st_dev of the mounted filesystem (MAJ:MIN)
    fstype: str
    source: str
    options: str


def _unescape(raw: str) -> str:
    out = raw
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        out = out.replace(code, char)
    return out


def read_mountinfo(kernel: Kernel) -> str:
    return kernel.readfile(MOUNTINFO, 16 << 20).decode("utf-8", "surrogateescape")


def parse_mountinfo(text: str) -> list[MountEntry]:
    entries: list[MountEntry] = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        parts = left.split()
        rparts = right.split()
        if not sep or len(parts) < 6 or not rparts:
            continue
        maj, _, mnr = parts[2].partition(":")
        entries.append(
            MountEntry(
                mount_id=int(parts[0]),
                target=_unescape(parts[4]),
                dev=abi.makedev(int(maj), int(mnr)),
                fstype=rparts[0],
                source=_unescape(rparts[1]) if len(rparts) > 1 else "",
                options=parts[5],
            )
        )
    return entries


def mounts(kernel: Kernel) -> list[MountEntry]:
    return parse_mountinfo(read_mountinfo(kernel))


def mounts_of_device(kernel: Kernel, dev: int) -> list[MountEntry]:
    """Mounts whose filesystem lives on block device ``dev``."""
    return [m for m in mounts(kernel) if m.dev == dev]


def mount_at(kernel: Kernel, target: str) -> MountEntry | None:
    """The topmost mount on exactly ``target`` (a canonical path), or None."""
    found = [m for m in mounts(kernel) if m.target == target]
    return found[-1] if found else None
