"""Teardown races with the real systemd-udevd running: util-linux vs loopdev, counted.

    sudo .venv/bin/python benchmarks/stress.py            # full: 1000 nested, 50 kill trials
    sudo .venv/bin/python benchmarks/stress.py --short    # a few of each (the CI suite)

1. Nested loop mounts (xfstests xfs/049's shape): an xfs image is loop-mounted on OUTER, an
   ext2 image stored in that xfs is loop-mounted on INNER; then ``umount INNER; umount OUTER``.
   util-linux: ``mount -o loop`` / ``umount``. loopdev: ``mount_image()`` / ``umount()``. A
   cycle fails when any step fails; the usual failure is EBUSY on the outer umount because the
   inner loop device (closed last by udevd) still holds its backing file.
2. ``kill -9`` of ``fio --ioengine=io_uring`` reading from a loop mount, then an immediate
   umount. util-linux's ``umount`` sees EBUSY while the killed ring's requests still hold the
   file; loopdev's ``umount`` waits those kernel references out (bounded).

The tools alternate cycle by cycle. Holds the machine lock; starts systemd-udevd as a child
(and restores /dev afterwards); cleans up every mount and device it made.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import loopdev
from loopdev.lab.realkernel import machine_lock
from loopdev.lab.realudev import RealUdevd, running_udevd_pids

CLEANUP_TIMEOUT = 10.0


def sh(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True)


def must(argv: list[str]) -> None:
    r = sh(argv)
    if r.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip()}")


class StepFailed(Exception):
    """One step of a cycle failed; the message says which and why."""


def _mounted(target: Path) -> bool:
    t = str(target)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == t for line in f)


# --- the workspace ---------------------------------------------------------------------------


@dataclass
class Workspace:
    root: Path
    outer_img: Path = field(init=False)
    data_img: Path = field(init=False)
    outer: Path = field(init=False)
    inner: Path = field(init=False)
    kmnt: Path = field(init=False)

    def __post_init__(self) -> None:
        self.outer_img = self.root / "outer.xfs"
        self.data_img = self.root / "data.ext4"
        self.outer = self.root / "outer"
        self.inner = self.root / "inner"
        self.kmnt = self.root / "kill"
        for d in (self.outer, self.inner, self.kmnt):
            d.mkdir()

    @property
    def inner_img(self) -> Path:
        return self.outer / "inner.ext2"

    def build(self) -> None:
        """xfs image holding an ext2 image; ext4 image holding a 16 MiB data file."""
        with open(self.outer_img, "wb") as f:
            f.truncate(300 << 20)
        must(["mkfs.xfs", "-q", "-f", "-K", str(self.outer_img)])
        must(["mount", "-o", "loop", str(self.outer_img), str(self.outer)])
        try:
            with open(self.inner_img, "wb") as f:
                f.truncate(16 << 20)
            must(["mkfs.ext2", "-q", "-F", "-E", "nodiscard", str(self.inner_img)])
        finally:
            self.umount_hard(self.outer)
        with open(self.data_img, "wb") as f:
            f.truncate(64 << 20)
        must(["mkfs.ext4", "-q", "-F", "-E", "nodiscard", str(self.data_img)])
        must(["mount", "-o", "loop", str(self.data_img), str(self.kmnt)])
        try:
            (self.kmnt / "data").write_bytes(os.urandom(16 << 20))
        finally:
            self.umount_hard(self.kmnt)

    def umount_hard(self, target: Path) -> None:
        """Unmount ``target`` whatever it takes (bounded): retry, then lazily."""
        deadline = time.monotonic() + CLEANUP_TIMEOUT
        while _mounted(target):
            if sh(["umount", str(target)]).returncode == 0:
                break
            if time.monotonic() > deadline:
                sh(["umount", "-l", str(target)])
                break
            time.sleep(0.01)

    def our_devices(self) -> list[str]:
        idents = set()
        for p in (self.outer_img, self.data_img):
            with contextlib.suppress(OSError):
                st = p.stat()
                idents.add((st.st_dev, st.st_ino))
        return [
            s.path for s in loopdev.list_devices() if (s.backing_dev, s.backing_ino) in idents
        ] + [s.path for s in loopdev.list_devices() if s.backing_file.startswith(str(self.outer))]

    def clean(self) -> None:
        """Between cycles and at the end: nothing of ours mounted or attached."""
        for t in (self.inner, self.kmnt, self.outer):
            self.umount_hard(t)
        deadline = time.monotonic() + CLEANUP_TIMEOUT
        while (left := self.our_devices()) and time.monotonic() < deadline:
            for d in left:
                sh(["losetup", "-d", d])
            time.sleep(0.01)

    def leftovers(self) -> list[str]:
        mounts = [str(t) for t in (self.inner, self.kmnt, self.outer) if _mounted(t)]
        return mounts + self.our_devices()


# --- the tools -------------------------------------------------------------------------------


class UtilLinux:
    name = "util-linux"

    def mount(self, image: Path, target: Path) -> None:
        r = sh(["mount", "-o", "loop", str(image), str(target)])
        if r.returncode:
            raise StepFailed(f"mount {image.name}: {r.stderr.strip()}")

    def umount(self, target: Path) -> None:
        r = sh(["umount", str(target)])
        if r.returncode:
            raise StepFailed(f"umount {target.name}: {r.stderr.strip()}")


class Loopdev:
    name = "loopdev"

    def mount(self, image: Path, target: Path) -> None:
        try:
            loopdev.mount_image(str(image), str(target))
        except loopdev.LoopdevError as e:
            raise StepFailed(f"mount {image.name}: {e.message}") from None

    def umount(self, target: Path) -> None:
        try:
            loopdev.umount(str(target))
        except loopdev.LoopdevError as e:
            raise StepFailed(f"umount {target.name}: {e.message}") from None


Tool = UtilLinux | Loopdev


@dataclass
class Tally:
    runs: int = 0
    failures: int = 0
    examples: dict[str, int] = field(default_factory=dict)

    def record(self, error: str | None) -> None:
        self.runs += 1
        if error is not None:
            self.failures += 1
            key = error if len(error) < 160 else error[:157] + "..."
            self.examples[key] = self.examples.get(key, 0) + 1

    def line(self) -> str:
        pct = 100.0 * self.failures / self.runs if self.runs else 0.0
        return f"{self.failures:>5} of {self.runs:<5} failed ({pct:5.1f}%)"


# --- the two races ---------------------------------------------------------------------------


def nested_cycle(ws: Workspace, tool: Tool) -> str | None:
    """mount outer, mount inner (image inside outer), umount inner, umount outer."""
    try:
        tool.mount(ws.outer_img, ws.outer)
        tool.mount(ws.inner_img, ws.inner)
        tool.umount(ws.inner)
        tool.umount(ws.outer)
        return None
    except StepFailed as e:
        return str(e)
    finally:
        ws.clean()


def fio_argv(path: Path) -> list[str]:
    return [
        "fio",
        "--name=r",
        f"--filename={path}",
        "--rw=randread",
        "--bs=4k",
        "--ioengine=io_uring",
        "--iodepth=64",
        "--direct=1",
        "--time_based",
        "--runtime=30",
        "--size=16M",
        "--thread",  # one process: SIGKILL kills every job at once
    ]


def kill_cycle(ws: Workspace, tool: Tool, settle: float) -> str | None:
    """mount, fio io_uring reads, kill -9, wait for it to die, umount at once."""
    try:
        tool.mount(ws.data_img, ws.kmnt)
        fio = subprocess.Popen(
            fio_argv(ws.kmnt / "data"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
        )
        try:
            time.sleep(settle)
            if fio.poll() is not None:
                return f"fio exited early ({fio.returncode}): no I/O in flight"
        finally:
            fio.send_signal(signal.SIGKILL)
            fio.wait()
        tool.umount(ws.kmnt)
        return None
    except StepFailed as e:
        return str(e)
    finally:
        ws.clean()


def run(
    name: str, n: int, tools: list[Tool], cycle: Callable[[Tool], str | None], progress: bool
) -> dict[str, Tally]:
    tallies = {t.name: Tally() for t in tools}
    t0 = time.monotonic()
    for i in range(n):
        order = tools if i % 2 == 0 else tools[::-1]
        for tool in order:
            tallies[tool.name].record(cycle(tool))
        if progress and (i + 1) % max(1, n // 10) == 0:
            state = ", ".join(f"{k} {v.failures}" for k, v in tallies.items())
            print(
                f"  {name}: {i + 1}/{n} ({time.monotonic() - t0:.0f} s; failures: {state})",
                file=sys.stderr,
            )
    return tallies


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--short", action="store_true", help="a few cycles of each (for CI)")
    ap.add_argument("--nested", type=int, help="nested umount cycles per tool (default 1000)")
    ap.add_argument("--kills", type=int, help="kill -9 trials per tool (default 50)")
    ap.add_argument(
        "--tool", choices=("both", "util-linux", "loopdev"), default="both", help="who runs"
    )
    ap.add_argument("--settle", type=float, default=0.4, help="seconds fio runs before kill")
    ap.add_argument(
        "--no-lock", action="store_true", help="the caller already holds the machine lock"
    )
    args = ap.parse_args(argv)
    nested = args.nested if args.nested is not None else (20 if args.short else 1000)
    kills = args.kills if args.kills is not None else (3 if args.short else 50)
    if os.geteuid() != 0:
        print("stress: needs root (loop devices, mount, udevd)", file=sys.stderr)
        return 3
    for tool_bin in ("mkfs.xfs", "mkfs.ext2", "fio"):
        if shutil.which(tool_bin) is None:
            print(f"stress: {tool_bin} is not installed", file=sys.stderr)
            return 4
    tools: list[Tool] = [t for t in (UtilLinux(), Loopdev()) if args.tool in ("both", t.name)]
    with contextlib.nullcontext() if args.no_lock else machine_lock(timeout=None):
        ws = Workspace(Path(tempfile.mkdtemp(prefix="loopdev-stress-")))
        results: dict[str, dict[str, Tally]] = {}
        try:
            ws.build()
            with RealUdevd() as udevd:
                print(f"systemd-udevd running as pid {udevd.pid}", file=sys.stderr)
                results["umount inner; umount outer"] = run(
                    "nested", nested, tools, lambda t: nested_cycle(ws, t), not args.short
                )
                results["kill -9 io_uring fio; umount"] = run(
                    "kill", kills, tools, lambda t: kill_cycle(ws, t, args.settle), not args.short
                )
                ws.clean()
        finally:
            ws.clean()
            left = ws.leftovers()
            shutil.rmtree(ws.root, ignore_errors=True)
    print(f"{'race':<32}{'tool':<12}result")
    for race, tallies in results.items():
        for tool_name, tally in tallies.items():
            print(f"{race:<32}{tool_name:<12}{tally.line()}")
            for msg, count in sorted(tally.examples.items(), key=lambda kv: -kv[1])[:3]:
                print(f"{'':<44}{count:>4} x {msg}")
    if left:
        print(f"LEFT BEHIND: {left}", file=sys.stderr)
    if running_udevd_pids():
        print(f"systemd-udevd still running: {running_udevd_pids()}", file=sys.stderr)
        return 1
    ld_failures = sum(t["loopdev"].failures for t in results.values() if "loopdev" in t)
    return 1 if left or ld_failures else 0


if __name__ == "__main__":
    sys.exit(main())
