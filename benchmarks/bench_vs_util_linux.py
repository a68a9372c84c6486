"""util-linux vs loopdev, side by side in one run, interleaved rounds.

    sudo .venv/bin/python benchmarks/bench_vs_util_linux.py [--rounds N] [--profile]

Cycles compared (each round runs every cycle once with each tool, alternating which goes
first):

* attach+detach: ``losetup -f --show IMG`` + ``losetup -d DEV``  vs  ``attach(IMG)`` +
  ``LoopDevice.detach()`` in this process;
* mount+umount squashfs (read-only): ``mount -o loop,ro IMG DIR`` + ``umount DIR``  vs
  ``mount_image(IMG, DIR, read_only=True)`` + ``umount(DIR)``;
* mount+umount ext4 (read-write): ``mount -o loop IMG DIR`` + ``umount DIR``  vs
  ``mount_image(IMG, DIR)`` + ``umount(DIR)``.

Prints the median time per cycle of each tool and the median of the per-round ratios
(util-linux time / loopdev time), against the targets (attach+detach >= 25x, mount+umount
>= 8x). Holds the machine-wide real-kernel lock; cleans up everything it attached or mounted,
also on failure. ``--profile`` adds a cProfile of the loopdev cycles.
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


CYCLES = (
    Cycle("attach+detach", ul_attach_detach, ld_attach_detach, floor_attach_detach),
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


@dataclass
class Samples:
    util_linux: list[float] = field(default_factory=list)
    loopdev: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        return [u / d for u, d in zip(self.util_linux, self.loopdev, strict=True)]


def measure(ws: Workspace, rounds: int, warmup: int) -> dict[str, Samples]:
    """Interleaved rounds: every cycle with both tools, alternating which goes first."""
    results = {c.name: Samples() for c in CYCLES}
    for r in range(warmup + rounds):
        for c in CYCLES:
            if r % 2:
                d = c.loopdev(ws)
                u = c.util_linux(ws)
            else:
                u = c.util_linux(ws)
                d = c.loopdev(ws)
            f = c.floor(ws)
            if r >= warmup:
                results[c.name].util_linux.append(u)
                results[c.name].loopdev.append(d)
                results[c.name].floor.append(f)
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


def report(results: dict[str, Samples], rounds: int) -> tuple[str, bool]:
    ul = _run(["losetup", "--version"]).strip()
    lines = [
        f"loopdev {loopdev.__version__} vs {ul}; kernel {platform.release()}; "
        f"{os.cpu_count()} CPUs; {rounds} interleaved rounds",
        "",
        f"{'cycle':<24}{'util-linux':>12}{'loopdev':>12}{'ratio':>9}{'target':>11}"
        f"{'floor':>16}{'floor ratio':>13}",
    ]
    ok = True
    for name, s in results.items():
        u_ms = statistics.median(s.util_linux) * 1e3
        d_ms = statistics.median(s.loopdev) * 1e3
        ratio = statistics.median(s.ratios)
        target = TARGETS[name]
        hit = ratio >= target
        ok &= hit
        f_ms = statistics.median(s.floor) * 1e3
        f_ratio = statistics.median([u / f for u, f in zip(s.util_linux, s.floor, strict=True)])
        lines.append(
            f"{name:<24}{u_ms:>9.3f} ms{d_ms:>9.3f} ms{ratio:>8.1f}x{'>=':>4}{target:>3.0f}x "
            f"{'ok' if hit else 'MISSED':<7}{f_ms:>9.3f} ms{f_ratio:>12.1f}x"
        )
    lines += [
        "",
        "times: median per cycle; ratio: median over rounds of (util-linux / loopdev);",
        "floor: the fewest system calls doing the same from Python, without the library",
        "(attach: open image, GET_FREE, open device, LOOP_CONFIGURE; mount with a known type).",
    ]
    return "\n".join(lines), ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=200, help="measured rounds (default 200)")
    ap.add_argument("--warmup", type=int, default=10, help="unmeasured rounds first")
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
        ws = Workspace(Path(tempfile.mkdtemp(prefix="loopdev-bench-")))
        try:
            results = measure(ws, args.rounds, args.warmup)
            text, ok = report(results, args.rounds)
            print(text)
            if args.profile:
                print(port_breakdown(ws, max(100, args.rounds)))
                print(profile(ws, max(50, args.rounds)))
            if args.json:
                Path(args.json).write_text(
                    json.dumps(
                        {
                            n: {"util_linux": s.util_linux, "loopdev": s.loopdev, "floor": s.floor}
                            for n, s in results.items()
                        }
                    )
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
