"""The mount table, from /proc/self/mountinfo, read through the port."""

from __future__ import annotations

from loopdev import abi

TYPE_CHECKING = False
if TYPE_CHECKING:
    from loopdev.kernel import Kernel

MOUNTINFO = "/proc/self/mountinfo"


class MountEntry:
    """One line of mountinfo: ``dev`` is the st_dev (MAJ:MIN) of the mounted filesystem."""

    __slots__ = ("dev", "fstype", "mount_id", "options", "source", "target")

    def __init__(
        self, mount_id: int, target: str, dev: int, fstype: str, source: str, options: str
    ) -> None:
        self.mount_id = mount_id
        self.target = target
        self.dev = dev
        self.fstype = fstype
        self.source = source
        self.options = options

    def __repr__(self) -> str:
        return f"MountEntry({self.mount_id}, {self.target!r}, {self.source!r}, {self.fstype!r})"


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
