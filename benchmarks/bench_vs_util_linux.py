"""util-linux vs loopdev, side by side in one run: blocks of back-to-back cycles, alternating.

    sudo .venv/bin/python benchmarks/bench_vs_util_linux.py [--rounds N] [--block K]
        [--dir DIR] [--profile] [--json FILE]

Cycles compared:

* attach+detach: ``losetup -f --show IMG`` + ``losetup -d DEV``  vs  ``attach(IMG)`` +
  ``LoopDevice.detach()`` in this process;
* mount+umount squashfs: ``mount -o loop,ro IMG DIR`` + ``umount DIR``  vs
  ``mount_image(IMG, DIR, read_only=True)`` + ``umount(DIR)``;
* mount+umount ext4 (read-write): ``mount -o loop IMG DIR`` + ``umount DIR``  vs
  ``mount_image(IMG, DIR)`` + ``umount(DIR)``.

Each round runs, for every cycle, one block of K back-to-back cycles per tool: util-linux,
loopdev, ``syscalls`` (exactly the system calls loopdev makes for its guarantees, issued from
Python without the library: what any implementation of the same steps costs) and ``floor``
(the fewest system calls that do the job). The tools' order rotates from round to round, so
none always runs first. A block's median is its figure; the report prints, per tool, the
median of its block medians, and per contender the median over rounds of util-linux's block
median divided by the contender's (the ratio), against the targets (attach+detach >= 25x,
mount+umount >= 8x squashfs, >= 7x ext4), and loopdev's time over its ``syscalls`` time
(target <= 1.5x). Images live on /dev/shm unless ``--dir`` says otherwise. Holds the
machine-wide real-kernel lock; cleans up everything it attached or mounted, also on failure.
``--profile`` adds where loopdev's time goes (port calls vs Python) and a cProfile.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import fcntl
import io
import json
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import loopdev
from loopdev import abi
from loopdev.kernel import Kernel
from loopdev.lab.realkernel import machine_lock
from loopdev.linux import LinuxKernel

TARGETS = {"attach+detach": 25.0, "mount+umount squashfs": 8.0, "mount+umount ext4": 7.0}
#: loopdev's time over the time of its own guarantee system calls, at most
OVERHEAD_TARGET = 1.5


def _run(argv: list[str]) -> str:
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


# --- workspace: images, mount point, cleanup -------------------------------------------------


@dataclass
class Workspace:
    """Images and a mount point in a temporary directory, and the cleanup of both."""

    root: Path
    kernel: Kernel | None = None  # what the library runs on (None: its default)
    raw: Path = field(init=False)
    squashfs: Path = field(init=False)
    ext4: Path = field(init=False)
    mnt: Path = field(init=False)

    def __post_init__(self) -> None:
        self.raw = self.root / "raw.img"
        self.squashfs = self.root / "fs.squashfs"
        self.ext4 = self.root / "fs.ext4"
        self.mnt = self.root / "mnt"
        self.mnt.mkdir()
        with open(self.raw, "wb") as f:
            f.truncate(8 << 20)
        src = self.root / "src"
        src.mkdir()
        (src / "hello.txt").write_text("hello from the benchmark\n")
        _run(["mksquashfs", str(src), str(self.squashfs), "-noappend", "-quiet", "-no-progress"])
        with open(self.ext4, "wb") as f:
            f.truncate(16 << 20)
        _run(["mkfs.ext4", "-q", "-F", "-E", "nodiscard", "-d", str(src), str(self.ext4)])

    def inodes(self) -> set[tuple[int, int]]:
        out = set()
        for p in (self.raw, self.squashfs, self.ext4):
            st = os.stat(p)
            out.add((st.st_dev, st.st_ino))
        return out

    def leftovers(self) -> list[str]:
        """Our mounts and loop devices that are still there."""
        left = []
        with open("/proc/self/mountinfo") as f:
            for line in f:
                if str(self.mnt) in line.split()[4]:
                    left.append(f"mount {line.split()[4]}")
        ours = self.inodes()
        for s in loopdev.list_devices():
            if (s.backing_dev, s.backing_ino) in ours:
                left.append(s.path)
        return left

    def cleanup(self) -> None:
        """Unmount and detach what is ours (by mount point and backing inode), with
        util-linux so that it works even if the library is broken."""
        for _ in range(50):
            left = self.leftovers()
            if not left:
                break
            for item in left:
                if item.startswith("mount "):
                    subprocess.run(["umount", item[6:]], capture_output=True)
                else:
                    subprocess.run(["losetup", "-d", item], capture_output=True)
            time.sleep(0.02)
        shutil.rmtree(self.root, ignore_errors=True)


# --- the cycles ------------------------------------------------------------------------------


def ul_attach_detach(ws: Workspace) -> float:
    t0 = time.perf_counter()
    dev = _run(["losetup", "-f", "--show", str(ws.raw)]).strip()
    _run(["losetup", "-d", dev])
    return time.perf_counter() - t0


def ld_attach_detach(ws: Workspace) -> float:
    t0 = time.perf_counter()
    dev = loopdev.attach(str(ws.raw), kernel=ws.kernel)
    dev.detach()
    return time.perf_counter() - t0


def _ul_mount(image: Path, mnt: Path, ro: bool) -> float:
    t0 = time.perf_counter()
    _run(["mount", "-o", "loop,ro" if ro else "loop", str(image), str(mnt)])
    _run(["umount", str(mnt)])
    return time.perf_counter() - t0


def _ld_mount(ws: Workspace, image: Path, ro: bool) -> float:
    t0 = time.perf_counter()
    loopdev.mount_image(str(image), str(ws.mnt), read_only=ro, kernel=ws.kernel)
    loopdev.umount(str(ws.mnt), kernel=ws.kernel)
    return time.perf_counter() - t0


# --- the floor: the fewest system calls that do the same, no library --------------------------

_LIBC = __import__("ctypes").CDLL(None, use_errno=True)


def _raw_attach(image: Path, flags: int) -> int:
    """open image, LOOP_CTL_GET_FREE, open device, LOOP_CONFIGURE; returns the device fd."""
    bfd = os.open(
        image, (os.O_RDONLY if flags & abi.LO_FLAGS_READ_ONLY else os.O_RDWR) | os.O_CLOEXEC
    )
    ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    try:
        n = fcntl.ioctl(ctl, abi.LOOP_CTL_GET_FREE)
        fd = os.open(f"/dev/loop{n}", os.O_RDWR | os.O_CLOEXEC)
        cfg = abi.LoopConfig(fd=bfd, info=abi.LoopInfo64(lo_flags=flags, lo_file_name=str(image)))
        fcntl.ioctl(fd, abi.LOOP_CONFIGURE, cfg.pack(), True)
        return fd
    finally:
        os.close(ctl)
        os.close(bfd)


def floor_attach_detach(ws: Workspace) -> float:
    t0 = time.perf_counter()
    fd = _raw_attach(ws.raw, 0)
    fcntl.ioctl(fd, abi.LOOP_CLR_FD)
    os.close(fd)
    return time.perf_counter() - t0


def _read_sysfs(path: str) -> bytes:
    sfd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(sfd, 4096)
    finally:
        os.close(sfd)


def _syscalls_attach(image: str, flags: int, *, baseline: bool) -> tuple[int, int, int]:
    """The system calls of loopdev's attach: stat and open the image, its canonical name,
    loop-control lock, GET_FREE, node check, udev lock, LOOP_CONFIGURE, read-back, diskseq
    (and, with ``baseline``, the write counters); returns (device fd, N, device number)."""
    os.stat(image)
    ro = flags & abi.LO_FLAGS_READ_ONLY
    bfd = os.open(image, (os.O_RDONLY if ro else os.O_RDWR) | os.O_CLOEXEC)
    os.readlink(f"/proc/self/fd/{bfd}")
    ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    fcntl.flock(ctl, fcntl.LOCK_EX)
    n = fcntl.ioctl(ctl, abi.LOOP_CTL_GET_FREE)
    fd = os.open(f"/dev/loop{n}", os.O_RDWR | os.O_CLOEXEC)
    rdev = os.fstat(fd).st_rdev
    fcntl.flock(fd, fcntl.LOCK_EX)
    cfg = abi.LoopConfig(fd=bfd, info=abi.LoopInfo64(lo_flags=flags, lo_file_name=image))
    fcntl.ioctl(fd, abi.LOOP_CONFIGURE, cfg.pack(), True)
    fcntl.ioctl(fd, abi.LOOP_GET_STATUS64, bytearray(abi.LoopInfo64.SIZE))
    fcntl.ioctl(fd, abi.BLKGETDISKSEQ, bytearray(8))
    if baseline:
        _read_sysfs(f"/sys/block/loop{n}/stat")  # write counters at attach (T20 baseline)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(ctl)
    os.close(bfd)
    return fd, n, rdev


def syscalls_attach_detach(ws: Workspace) -> float:
    """The system calls loopdev's attach+detach makes for its guarantees, issued straight
    from Python with no library logic: what any implementation doing the same steps costs.

    On top of the floor: stat the image first (refuse FIFOs and devices), canonical path,
    loop-control lock (T8), node check (T26), udev lock (T6/T7), read-back (T4), diskseq
    (T15), write counters for the fsync decision (T20, at attach and at detach), the
    exclusive-open probe (tells a mounted device, whose teardown is deferred), LOOP_CLR_FD
    (6.11+: the teardown runs in the close), and the final unbound check (T22).
    """
    t0 = time.perf_counter()
    fd, n, _ = _syscalls_attach(str(ws.raw), 0, baseline=True)
    dev = f"/dev/loop{n}"
    probe = os.open(dev, os.O_RDONLY | os.O_EXCL | os.O_NONBLOCK | os.O_CLOEXEC)
    os.close(probe)
    _read_sysfs(f"/sys/block/loop{n}/stat")  # write counters at detach
    fcntl.ioctl(fd, abi.LOOP_CLR_FD)
    os.close(fd)
    os.access(f"/sys/block/loop{n}/loop", os.F_OK)
    return time.perf_counter() - t0


def _floor_mount(image: Path, mnt: Path, fstype: str, ro: bool) -> float:
    t0 = time.perf_counter()
    fd = _raw_attach(image, abi.LO_FLAGS_AUTOCLEAR | (abi.LO_FLAGS_READ_ONLY if ro else 0))
    name = os.readlink(f"/proc/self/fd/{fd}")
    try:
        if _LIBC.mount(
            name.encode(), str(mnt).encode(), fstype.encode(), abi.MS_RDONLY if ro else 0, None
        ):
            raise OSError(__import__("ctypes").get_errno(), "mount")
    finally:
        os.close(fd)
    if _LIBC.umount2(str(mnt).encode(), 0):
        raise OSError(__import__("ctypes").get_errno(), "umount2")
    return time.perf_counter() - t0


_STATX = getattr(_LIBC, "statx", None)
_AT_FDCWD = -100


def _stat_dir(path: str) -> None:
    """What LinuxKernel.stat does for a directory: stat(2), then statx(2) for MOUNT_ROOT."""
    os.stat(path)
    if _STATX is not None:
        buf = (__import__("ctypes").c_char * 256)()
        _STATX(_AT_FDCWD, path.encode(), 0, 0, buf)


def _realpath(path: str) -> str:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def _read_whole(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = b""
        while chunk := os.read(fd, 65536):
            data += chunk
        return data
    finally:
        os.close(fd)


_O_NOATIME = 0o1000000


def _syscalls_mount(image: Path, mnt: Path, fstype: str, ro: bool) -> float:
    """The system calls loopdev's mount_image + umount make for a new device, from Python
    without the library: target check (stat + statx, canonical path), superblock sniff
    (O_NOATIME open + read), reuse scan (image identity, /proc/partitions), image open +
    canonical name, loop-control lock, node check, udev lock, LOOP_CONFIGURE (AUTOCLEAR),
    read-back, diskseq, mount(2); umount: target check, loop device and diskseq from sysfs,
    umount2, unbound check."""
    t0 = time.perf_counter()
    target, img = str(mnt), str(image)
    _stat_dir(target)
    canonical = _realpath(target)
    sniff = os.open(img, os.O_RDONLY | _O_NOATIME | os.O_CLOEXEC)
    os.pread(sniff, 4096, 0)
    os.close(sniff)
    os.stat(img)
    _read_whole("/proc/partitions")
    flags = abi.LO_FLAGS_AUTOCLEAR | (abi.LO_FLAGS_READ_ONLY if ro else 0)
    fd, n, rdev = _syscalls_attach(img, flags, baseline=False)
    dev = f"/dev/loop{n}"
    try:
        if _LIBC.mount(
            dev.encode(), canonical.encode(), fstype.encode(), abi.MS_RDONLY if ro else 0, None
        ):
            raise OSError(__import__("ctypes").get_errno(), "mount")
    finally:
        os.close(fd)
    _stat_dir(target)
    os.readlink(f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}")
    _read_sysfs(f"/sys/devices/virtual/block/loop{n}/diskseq")
    if _LIBC.umount2(target.encode(), 0):
        raise OSError(__import__("ctypes").get_errno(), "umount2")
    os.access(f"/sys/devices/virtual/block/loop{n}/loop", os.F_OK)
    return time.perf_counter() - t0


# --- where the library's time goes: every port call timed -------------------------------------


class PortTimer:
    """A Kernel that forwards to LinuxKernel and adds up the time spent in each method."""

    def __init__(self) -> None:
        self._k = LinuxKernel()
        self.name = self._k.name
        self.calls: dict[str, int] = {}
        self.seconds: dict[str, float] = {}

    def __getattr__(self, attr: str) -> object:
        fn = getattr(self._k, attr)
        if not callable(fn):
            return fn

        def timed(*a: object, **kw: object) -> object:
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                key = attr
                if attr == "ioctl" and len(a) > 1:
                    key = f"ioctl {_IOCTL_NAMES.get(int(a[1]), hex(int(a[1])))}"  # type: ignore[call-overload]
                elif attr in ("open", "readfile", "stat") and a:
                    key = f"{attr} {_path_kind(str(a[0]))}"
                self.calls[key] = self.calls.get(key, 0) + 1
                self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - t0

        return timed


_IOCTL_NAMES = {
    getattr(abi, n): n
    for n in dir(abi)
    if n.startswith(("LOOP_", "BLK"))
    and isinstance(getattr(abi, n), int)
    and getattr(abi, n) > 0x1000
}


def _path_kind(path: str) -> str:
    if path.startswith("/sys/"):
        return "/sys/" + path.rsplit("/", 1)[-1]
    if path.startswith("/proc/"):
        return "/proc/" + path.rsplit("/", 1)[-1]
    if path.startswith("/dev/loop"):
        return "/dev/loop*"
    return "<file>"


@dataclass(frozen=True)
class Cycle:
    name: str
    util_linux: Callable[[Workspace], float]
    loopdev: Callable[[Workspace], float]
    floor: Callable[[Workspace], float]
    #: the library's own system calls without the library
    syscalls: Callable[[Workspace], float]


CYCLES = (
    Cycle(
        "attach+detach",
        ul_attach_detach,
        ld_attach_detach,
        floor_attach_detach,
        syscalls_attach_detach,
    ),
    Cycle(
        "mount+umount squashfs",
        lambda ws: _ul_mount(ws.squashfs, ws.mnt, True),
        lambda ws: _ld_mount(ws, ws.squashfs, True),
        lambda ws: _floor_mount(ws.squashfs, ws.mnt, "squashfs", True),
        lambda ws: _syscalls_mount(ws.squashfs, ws.mnt, "squashfs", True),
    ),
    Cycle(
        "mount+umount ext4",
        lambda ws: _ul_mount(ws.ext4, ws.mnt, False),
        lambda ws: _ld_mount(ws, ws.ext4, False),
        lambda ws: _floor_mount(ws.ext4, ws.mnt, "ext4", False),
        lambda ws: _syscalls_mount(ws.ext4, ws.mnt, "ext4", False),
    ),
)


#: What each util-linux cycle is compared with: the library, the library's system calls
#: without the library, the floor.
CONTENDERS = ("loopdev", "syscalls", "floor")


#: every tool, in the order of the first round (rotated by one each round)
TOOLS = ("util-linux", *CONTENDERS)


@dataclass
class Samples:
    """Per tool, the median of each of its blocks, one per round (same round, same index)."""

    blocks: dict[str, list[float]] = field(default_factory=lambda: {t: [] for t in TOOLS})

    def times(self, tool: str) -> list[float]:
        return self.blocks[tool]

    def ratios(self, contender: str) -> list[float]:
        """Per round: util-linux's block median / the contender's, measured side by side."""
        return [
            u / x for u, x in zip(self.blocks["util-linux"], self.blocks[contender], strict=True)
        ]

    def overhead(self) -> list[float]:
        """Per round: loopdev's block median / that of its own system calls."""
        return [x / y for x, y in zip(self.blocks["loopdev"], self.blocks["syscalls"], strict=True)]


def _tool(c: Cycle, tool: str) -> Callable[[Workspace], float]:
    fn: Callable[[Workspace], float] = c.util_linux if tool == "util-linux" else getattr(c, tool)
    return fn


def measure(ws: Workspace, rounds: int, warmup: int, block: int) -> dict[str, Samples]:
    """Rounds of blocks: in each round, for every cycle, each tool runs ``block`` cycles back
    to back and the block's median is kept; the tools' order rotates by one each round."""
    results = {c.name: Samples() for c in CYCLES}
    for r in range(warmup + rounds):
        order = TOOLS[r % len(TOOLS) :] + TOOLS[: r % len(TOOLS)]
        for c in CYCLES:
            for tool in order:
                fn = _tool(c, tool)
                median = statistics.median(fn(ws) for _ in range(block))
                if r >= warmup:
                    results[c.name].blocks[tool].append(median)
    return results


def port_breakdown(ws: Workspace, cycles: int) -> str:
    """Per loopdev cycle: time inside the port (system calls, by kind) vs the rest (Python)."""
    out = io.StringIO()
    for c in CYCLES:
        timer = PortTimer()
        ws.kernel = timer  # type: ignore[assignment]
        try:
            total = sum(c.loopdev(ws) for _ in range(cycles)) / cycles
        finally:
            ws.kernel = None
        in_port = sum(timer.seconds.values()) / cycles
        out.write(
            f"\n=== where a loopdev {c.name} cycle goes ({cycles} cycles, mean): "
            f"{total * 1e6:.0f} us total, {in_port * 1e6:.0f} us in port calls, "
            f"{(total - in_port) * 1e6:.0f} us in library Python ===\n"
        )
        for key in sorted(timer.seconds, key=lambda k: -timer.seconds[k]):
            out.write(
                f"  {key:<32}{timer.calls[key] / cycles:>6.1f} calls"
                f"{timer.seconds[key] / cycles * 1e6:>9.1f} us\n"
            )
    return out.getvalue()


def profile(ws: Workspace, cycles: int) -> str:
    """cProfile of the loopdev cycles (cumulative time, top entries)."""
    out = io.StringIO()
    for c in CYCLES:
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(cycles):
            c.loopdev(ws)
        prof.disable()
        out.write(f"\n=== cProfile: loopdev {c.name}, {cycles} cycles ===\n")
        stats = pstats.Stats(prof, stream=out)
        stats.sort_stats("cumulative").print_stats(25)
        stats.sort_stats("tottime").print_stats(12)
    return out.getvalue()


def _load() -> str:
    """The load average, as /proc/loadavg says it (1, 5, 15 minutes)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def report(results: dict[str, Samples], rounds: int, block: int, where: str) -> tuple[str, bool]:
    ul = _run(["losetup", "--version"]).strip()
    lines = [
        f"loopdev {loopdev.__version__} vs {ul}; kernel {platform.release()}; "
        f"{os.cpu_count()} CPUs; load {_load()}",
        f"{rounds} rounds, each with one block of {block} back-to-back cycles per tool and "
        f"cycle, the tools' order rotating; images on {where}",
        "",
        f"{'cycle':<22}{'util-linux':>12}{'loopdev':>11}{'ratio':>8}{'target':>10}"
        f"{'syscalls':>11}{'ld/sc':>7}{'<=1.5':>7}{'ratio':>8}{'floor':>11}{'ratio':>8}",
    ]
    ok = True
    for name, s in results.items():
        ratio = statistics.median(s.ratios("loopdev"))
        target = TARGETS[name]
        overhead = statistics.median(s.overhead())
        hit = ratio >= target
        lean = overhead <= OVERHEAD_TARGET
        ok &= hit and lean

        def ms(tool: str, s: Samples = s) -> str:
            return f"{statistics.median(s.times(tool)) * 1e3:>8.3f}ms"

        lines.append(
            f"{name:<22}{ms('util-linux'):>12}{ms('loopdev'):>11}{ratio:>7.1f}x"
            f"{'>=' + format(target, '.0f') + 'x':>6} {'ok' if hit else 'MISSED':<4}"
            f"{ms('syscalls'):>11}{overhead:>6.2f}x {'ok' if lean else 'MISSED':<6}"
            f"{statistics.median(s.ratios('syscalls')):>7.1f}x"
            f"{ms('floor'):>11}{statistics.median(s.ratios('floor')):>7.1f}x"
        )
    lines += [
        "",
        "times: median of the tool's block medians; ratio: median over rounds of util-linux's",
        "block median / that tool's; ld/sc: loopdev's block median / its system calls' (<= 1.5);",
        "syscalls: the system calls loopdev makes for its guarantees (locks, node check,",
        "read-back, diskseq, write counters, exclusive-open probe, reuse scan, superblock sniff,",
        "unbound check), issued from Python without the library;",
        "floor: the fewest system calls doing the same from Python, without the library",
        "(attach: open image, GET_FREE, open device, LOOP_CONFIGURE; mount with a known type).",
    ]
    return "\n".join(lines), ok


def _default_dir() -> str:
    """/dev/shm when it is a writable tmpfs (images in RAM: the backing file's fsync inside
    LOOP_CONFIGURE costs nothing, so the figures are the tools' own), else the temp dir."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return "/dev/shm"
    return tempfile.gettempdir()


def _fs_type(path: str) -> str:
    """The filesystem type of the mount holding ``path`` (from /proc/self/mountinfo)."""
    best, fstype = "", "?"
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            mnt = fields[4]
            inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
            if inside and len(mnt) >= len(best):
                best, fstype = mnt, fields[fields.index("-") + 1]
    return f"{path} ({fstype})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20, help="measured rounds (default 20)")
    ap.add_argument("--warmup", type=int, default=2, help="unmeasured rounds first (default 2)")
    ap.add_argument(
        "--block",
        type=int,
        default=15,
        metavar="K",
        help="back-to-back cycles per tool in each block (default 15)",
    )
    ap.add_argument(
        "--dir",
        default=None,
        help="where the images live (default /dev/shm: in RAM, so storage flushes do not "
        "hide the tools' own cost; give a disk directory to include them)",
    )
    ap.add_argument("--profile", action="store_true", help="cProfile the loopdev cycles too")
    ap.add_argument("--json", metavar="FILE", help="also write the raw samples as JSON")
    ap.add_argument(
        "--no-lock", action="store_true", help="the caller already holds the machine lock"
    )
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_vs_util_linux: needs root (loop devices, mount)", file=sys.stderr)
        return 3
    with contextlib.nullcontext() if args.no_lock else machine_lock(timeout=None):
        where = args.dir or _default_dir()
        ws = Workspace(Path(tempfile.mkdtemp(prefix="loopdev-bench-", dir=where)))
        try:
            results = measure(ws, args.rounds, args.warmup, max(1, args.block))
            text, ok = report(results, args.rounds, max(1, args.block), _fs_type(where))
            print(text)
            if args.profile:
                print(port_breakdown(ws, max(100, args.rounds)))
                print(profile(ws, max(50, args.rounds)))
            if args.json:
                Path(args.json).write_text(json.dumps({n: s.blocks for n, s in results.items()}))
            left = ws.leftovers()
        finally:
            ws.cleanup()
    if left:
        print(f"left behind (cleaned up now): {left}", file=sys.stderr)
        return 1
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
