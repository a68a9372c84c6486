"""util-linux vs loopdev, side by side in one run, interleaved rounds.

    sudo .venv/bin/python benchmarks/bench_vs_util_linux.py [--rounds N] [--repeat K]
        [--dir DIR] [--profile]

Cycles compared (each round runs every cycle with each contender beside a util-linux cycle of
its own, alternating which of the two goes first):

* attach+detach: ``losetup -f --show IMG`` + ``losetup -d DEV``  vs  ``attach(IMG)`` +
  ``LoopDevice.detach()`` in this process;
* mount+umount squashfs (read-only): ``mount -o loop,ro IMG DIR`` + ``umount DIR``  vs
  ``mount_image(IMG, DIR, read_only=True)`` + ``umount(DIR)``;
* mount+umount ext4 (read-write): ``mount -o loop IMG DIR`` + ``umount DIR``  vs
  ``mount_image(IMG, DIR)`` + ``umount(DIR)``.

Prints the median time per cycle of each tool and the median of the per-round ratios
(util-linux time / loopdev time), against the targets (attach+detach >= 25x, mount+umount
>= 8x), and the same for two more contenders: ``syscalls`` (the system calls loopdev makes
for its guarantees, without the library: what any implementation of those steps costs) and
``floor`` (the fewest system calls that do the job). Images live on /dev/shm unless
``--dir`` says otherwise. Holds the machine-wide real-kernel lock; cleans up everything it
attached or mounted, also on failure. ``--profile`` adds a cProfile of the loopdev cycles.
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

TARGETS = {"attach+detach": 25.0, "mount+umount squashfs": 8.0, "mount+umount ext4": 8.0}


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


def syscalls_attach_detach(ws: Workspace) -> float:
    """The system calls loopdev's attach+detach makes for its guarantees, issued straight
    from Python with no library logic: what any implementation doing the same steps costs.

    On top of the floor: stat the image first (refuse FIFOs and devices), canonical path,
    loop-control lock (T8), node check (T26), udev lock (T6/T7), read-back (T4), diskseq
    (T15), write counters for the fsync decision (T20, at attach and at detach), the
    exclusive-open probe (a mounted device is refused, not lazily detached), and the
    final unbound check (T22).
    """
    t0 = time.perf_counter()
    image = str(ws.raw)
    os.stat(image)
    bfd = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    os.readlink(f"/proc/self/fd/{bfd}")
    ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    fcntl.flock(ctl, fcntl.LOCK_EX)
    n = fcntl.ioctl(ctl, abi.LOOP_CTL_GET_FREE)
    dev = f"/dev/loop{n}"
    fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    os.fstat(fd)
    fcntl.flock(fd, fcntl.LOCK_EX)
    cfg = abi.LoopConfig(fd=bfd, info=abi.LoopInfo64(lo_file_name=image))
    fcntl.ioctl(fd, abi.LOOP_CONFIGURE, cfg.pack(), True)
    fcntl.ioctl(fd, abi.LOOP_GET_STATUS64, bytearray(abi.LoopInfo64.SIZE))
    fcntl.ioctl(fd, abi.BLKGETDISKSEQ, bytearray(8))
    _read_sysfs(f"/sys/block/loop{n}/stat")  # write counters at attach (T20 baseline)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(ctl)
    os.close(bfd)
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
    #: the library's own system calls without the library (attach+detach only)
    syscalls: Callable[[Workspace], float] | None = None


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
    ),
    Cycle(
        "mount+umount ext4",
        lambda ws: _ul_mount(ws.ext4, ws.mnt, False),
        lambda ws: _ld_mount(ws, ws.ext4, False),
        lambda ws: _floor_mount(ws.ext4, ws.mnt, "ext4", False),
    ),
)


#: What each util-linux cycle is compared with: the library, the library's system calls
#: without the library, the floor.
CONTENDERS = ("loopdev", "syscalls", "floor")


@dataclass
class Samples:
    """Per contender, one (util-linux seconds, contender seconds) pair per round."""

    pairs: dict[str, list[tuple[float, float]]] = field(
        default_factory=lambda: {n: [] for n in CONTENDERS}
    )

    def util_linux(self) -> list[float]:
        return [u for pairs in self.pairs.values() for u, _ in pairs]

    def times(self, contender: str) -> list[float]:
        return [x for _, x in self.pairs[contender]]

    def ratios(self, contender: str) -> list[float]:
        """Per round: util-linux time / the contender's time, measured side by side."""
        return [u / x for u, x in self.pairs[contender]]


def _sample(fn: Callable[[Workspace], float], ws: Workspace, repeat: int) -> float:
    """One round's sample: the median of ``repeat`` back-to-back cycles."""
    if repeat == 1:
        return fn(ws)
    return statistics.median(fn(ws) for _ in range(repeat))


def measure(ws: Workspace, rounds: int, warmup: int, repeat: int = 1) -> dict[str, Samples]:
    """Interleaved rounds: each contender (loopdev, its system calls, the floor) side by side
    with a util-linux cycle of its own, alternating which of the two goes first, so that
    every contender runs in the same place (right after a util-linux cycle).

    ``repeat`` 1: each sample is one cycle. ``repeat`` K: the median of K back-to-back
    cycles of the same tool.
    """
    results = {c.name: Samples() for c in CYCLES}
    for r in range(warmup + rounds):
        for c in CYCLES:
            for name in CONTENDERS:
                fn: Callable[[Workspace], float] | None = getattr(c, name)
                if fn is None:
                    continue
                if r % 2:
                    x = _sample(fn, ws, repeat)
                    u = _sample(c.util_linux, ws, repeat)
                else:
                    u = _sample(c.util_linux, ws, repeat)
                    x = _sample(fn, ws, repeat)
                if r >= warmup:
                    results[c.name].pairs[name].append((u, x))
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


def report(results: dict[str, Samples], rounds: int, repeat: int, where: str) -> tuple[str, bool]:
    ul = _run(["losetup", "--version"]).strip()
    mode = (
        "each sample one cycle, right after the other tool's"
        if repeat == 1
        else f"each sample the median of {repeat} back-to-back cycles"
    )
    lines = [
        f"loopdev {loopdev.__version__} vs {ul}; kernel {platform.release()}; "
        f"{os.cpu_count()} CPUs; {rounds} interleaved rounds ({mode}); images on {where}",
        "",
        f"{'cycle':<24}{'util-linux':>12}{'loopdev':>12}{'ratio':>9}{'target':>11}"
        f"{'syscalls':>16}{'ratio':>8}{'floor':>12}{'ratio':>8}",
    ]
    ok = True
    for name, s in results.items():
        ratio = statistics.median(s.ratios("loopdev"))
        target = TARGETS[name]
        hit = ratio >= target
        ok &= hit
        cols = ""
        for contender in CONTENDERS[1:]:
            if s.pairs[contender]:
                cols += (
                    f"{statistics.median(s.times(contender)) * 1e3:>9.3f} ms"
                    f"{statistics.median(s.ratios(contender)):>7.1f}x"
                )
            else:
                cols += f"{'-':>12}{'-':>8}"
        lines.append(
            f"{name:<24}{statistics.median(s.util_linux()) * 1e3:>9.3f} ms"
            f"{statistics.median(s.times('loopdev')) * 1e3:>9.3f} ms"
            f"{ratio:>8.1f}x{'>=':>4}{target:>3.0f}x {'ok' if hit else 'MISSED':<7}{cols}"
        )
    lines += [
        "",
        "times: median per sample; ratio: median over rounds of (util-linux / that column);",
        "syscalls: the system calls loopdev makes for its guarantees (locks, node check,",
        "read-back, diskseq, write counters, exclusive-open probe, unbound check), issued",
        "from Python without the library;",
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
    ap.add_argument("--rounds", type=int, default=200, help="measured rounds (default 200)")
    ap.add_argument("--warmup", type=int, default=10, help="unmeasured rounds first")
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="K",
        help="each sample is the median of K back-to-back cycles of one tool (default 1: one "
        "cycle, started right after the other tool's)",
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
            results = measure(ws, args.rounds, args.warmup, max(1, args.repeat))
            text, ok = report(results, args.rounds, max(1, args.repeat), _fs_type(where))
            print(text)
            if args.profile:
                print(port_breakdown(ws, max(100, args.rounds)))
                print(profile(ws, max(50, args.rounds)))
            if args.json:
                Path(args.json).write_text(
                    json.dumps({n: {c: s.pairs[c] for c in CONTENDERS} for n, s in results.items()})
                )
            left = ws.leftovers()
        finally:
            ws.cleanup()
    if left:
        print(f"left behind (cleaned up now): {left}", file=sys.stderr)
        return 1
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
