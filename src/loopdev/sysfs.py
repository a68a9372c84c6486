"""Reads of /sys/block/loopN and /sys/dev/block through the port; missing files mean the
device is not (or no longer) there and read as None/False."""

from __future__ import annotations

from loopdev import abi

TYPE_CHECKING = False
if TYPE_CHECKING:
    from loopdev.kernel import Kernel

SYS_BLOCK = "/sys/block"
#: Where /sys/block/loopN points: loop disks have no parent device, so they always live here.
#: Reading attributes through it skips resolving the /sys/block symlink (a quarter of the
#: cost of an attribute read).
LOOP_SYSFS = "/sys/devices/virtual/block/loop"


def _read(kernel: Kernel, path: str) -> str | None:
    """A sysfs attribute: one read returns all of it (attributes are at most a page)."""
    try:
        fd = kernel.open(path, abi.O_RDONLY)
    except OSError:
        return None
    try:
        return kernel.read(fd, 4096).decode("utf-8", "surrogateescape").rstrip("\n")
    except OSError:
        return None
    finally:
        kernel.close(fd)


def attr(kernel: Kernel, number: int, name: str) -> str | None:
    """``/sys/block/loopN/<name>``."""
    return _read(kernel, f"{LOOP_SYSFS}{number}/{name}")


def is_bound(kernel: Kernel, number: int) -> bool:
    """``/sys/block/loopN/loop/`` exists only while the device is bound (one access(2), no
    exception raised on the usual answer: unbound)."""
    return kernel.access(f"{LOOP_SYSFS}{number}/loop", 0)


def diskseq(kernel: Kernel, number: int) -> int | None:
    raw = attr(kernel, number, "diskseq")
    return int(raw) if raw and raw.isdigit() else None


def backing_file(kernel: Kernel, number: int) -> str | None:
    raw = attr(kernel, number, "loop/backing_file")
    return raw if raw else None


def loop_paths(number: int) -> tuple[str, str, str]:
    """(/dev/loopN, its sysfs ``stat``, its sysfs ``loop`` directory), made once per number."""
    paths = _PATHS.get(number)
    if paths is None:
        base = f"{LOOP_SYSFS}{number}/"
        paths = _PATHS[number] = (f"/dev/loop{number}", base + "stat", base + "loop")
    return paths


_PATHS: dict[int, tuple[str, str, str]] = {}


def _stat_fields(kernel: Kernel, stat_path: str) -> list[bytes] | None:
    try:
        fd = kernel.open(stat_path, abi.O_RDONLY)
    except OSError:
        return None
    try:
        fields = kernel.read(fd, 4096).split()
    except OSError:
        return None
    finally:
        kernel.close(fd)
    return fields if len(fields) >= 9 else None


def write_baseline(kernel: Kernel, stat_path: str) -> bytes | None:
    """What :func:`write_mark` reads later if the device wrote nothing meanwhile (the sectors
    written now, nothing in flight); None if unknown. ``stat_path``: loopN's sysfs ``stat``
    (:func:`loop_paths`)."""
    fields = _stat_fields(kernel, stat_path)
    return None if fields is None else fields[6] + b"/0"


def write_mark(kernel: Kernel, stat_path: str) -> bytes | None:
    """``sectors written/requests in flight`` from loopN's sysfs ``stat`` (the counters
    accumulate over the device's whole life: compare with a :func:`write_baseline`)."""
    fields = _stat_fields(kernel, stat_path)
    return None if fields is None else fields[6] + b"/" + fields[8]


def rdev(kernel: Kernel, number: int) -> int | None:
    raw = attr(kernel, number, "dev")
    if not raw or ":" not in raw:
        return None
    maj, mnr = raw.split(":", 1)
    return abi.makedev(int(maj), int(mnr))


def holders(kernel: Kernel, number: int) -> list[str]:
    try:
        return sorted(kernel.listdir(f"{SYS_BLOCK}/loop{number}/holders"))
    except OSError:
        return []


def partitions(kernel: Kernel, number: int) -> list[str]:
    """Names of loopN's partitions (``loopNp1`` ...)."""
    try:
        entries = kernel.listdir(f"{SYS_BLOCK}/loop{number}")
    except OSError:
        return []
    prefix = f"loop{number}p"
    return sorted(e for e in entries if e.startswith(prefix) and e[len(prefix) :].isdigit())


def loop_numbers(kernel: Kernel) -> list[int]:
    """Numbers of every loop device the kernel has (bound or not)."""
    try:
        names = kernel.listdir(SYS_BLOCK)
    except OSError:
        return []
    return sorted(int(n[4:]) for n in names if n.startswith("loop") and n[4:].isdigit())


def _block_link(kernel: Kernel, dev: int) -> list[str]:
    """The path components of /sys/dev/block/MAJ:MIN's target (empty if there is none)."""
    try:
        link = kernel.readlink(f"/sys/dev/block/{abi.major(dev)}:{abi.minor(dev)}")
    except OSError:
        return []
    return link.rstrip("/").split("/")


def block_name(kernel: Kernel, dev: int) -> str | None:
    """Kernel name of the block device ``dev`` (``loop3``), via /sys/dev/block/MAJ:MIN."""
    parts = _block_link(kernel, dev)
    return parts[-1] if parts else None


def loop_of(kernel: Kernel, dev: int) -> int | None:
    """N when the block device ``dev`` is loopN or one of its partitions (loopNpM: the
    partition's sysfs directory lies inside loopN's), else None."""
    parts = _block_link(kernel, dev)
    for name in parts[-2:]:
        if name.startswith("loop") and name[4:].isdigit():
            return int(name[4:])
    return None


def sized_loop_numbers(kernel: Kernel) -> list[int]:
    """Loop devices with a non-zero capacity (/proc/partitions lists only those): a cheap
    superset filter for bound devices of non-empty images, in one read."""
    try:
        text = kernel.readfile("/proc/partitions").decode()
    except OSError:
        return loop_numbers(kernel)
    out = []
    major = str(abi.LOOP_MAJOR)
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] == major and parts[3][4:].isdigit():
            out.append(int(parts[3][4:]))
    return sorted(out)
