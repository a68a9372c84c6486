"""Many images at once: N squashfs images mounted and unmounted by the library from T threads,
against ``mount -o loop,ro`` + ``umount`` of the same images in a shell loop, in one run.

    sudo .venv/bin/python benchmarks/bench_bulk.py [--images 100] [--threads 4]
        [--rounds 3] [--dir DIR]

Each round times both (their order alternating from round to round): the library mounts
every image on its own directory and unmounts it again, spread over the threads (each image
a mount_image + umount, which returns once its loop device is gone); the shell runs one
``mount -o loop,ro IMG DIR; umount DIR`` per image, one after the other. Prints each
round's totals, the medians and their ratio, and checks the figures that must be exact:
0 failures, and 0 loop devices or mounts left behind. Images live on /dev/shm unless
``--dir`` says otherwise. Holds the machine-wide real-kernel lock.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import loopdev
from loopdev.lab.realkernel import machine_lock


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def make_images(root: Path, count: int) -> list[tuple[Path, Path]]:
    """``count`` small squashfs images (each with its own file) and a directory for each."""
    src = root / "src"
    pairs = []
    for i in range(count):
        shutil.rmtree(src, ignore_errors=True)
        src.mkdir()
        (src / f"file-{i}").write_text(f"image {i}\n")
        img = root / f"img-{i:03d}.squashfs"
        subprocess.run(
            ["mksquashfs", str(src), str(img), "-noappend", "-quiet", "-no-progress"], check=True
        )
        mnt = root / f"mnt-{i:03d}"
        mnt.mkdir()
        pairs.append((img, mnt))
    shutil.rmtree(src)
    return pairs


def library(pairs: list[tuple[Path, Path]], threads: int) -> tuple[float, list[str]]:
    """Seconds for every image mounted (checked) and unmounted through the library; the
    failures, each as 'image: message'."""

    def one(pair: tuple[Path, Path]) -> str | None:
        img, mnt = pair
        try:
            m = loopdev.mount_image(img, mnt, read_only=True)
            if not any(mnt.iterdir()):
                m.umount()
                return f"{img.name}: mounted, but its file is not there"
            m.umount()
        except loopdev.LoopdevError as e:
            return f"{img.name}: {e}"
        return None

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(one, pairs))
    return time.perf_counter() - t0, [r for r in results if r]


def shell(pairs: list[tuple[Path, Path]]) -> tuple[float, list[str]]:
    """Seconds for ``mount -o loop,ro`` + ``umount`` of every image in one shell loop."""
    script = "\n".join(
        f"mount -o loop,ro '{img}' '{mnt}' && test -e '{mnt}'/file-* && umount '{mnt}' "
        f"|| echo 'FAILED {img.name}'"
        for img, mnt in pairs
    )
    t0 = time.perf_counter()
    r = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    return elapsed, [line for line in r.stdout.splitlines() if line.startswith("FAILED")]


def leftovers(pairs: list[tuple[Path, Path]]) -> list[str]:
    """Our mounts and loop devices that are still there."""
    ours = {(st.st_dev, st.st_ino) for st in (os.stat(img) for img, _ in pairs)}
    dirs = {str(mnt) for _, mnt in pairs}
    left = [
        f"mount {line.split()[4]}"
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4] in dirs
    ]
    left += [s.path for s in loopdev.list_devices() if (s.backing_dev, s.backing_ino) in ours]
    return left


def cleanup(pairs: list[tuple[Path, Path]]) -> None:
    for _ in range(20):
        left = leftovers(pairs)
        if not left:
            return
        for item in left:
            if item.startswith("mount "):
                subprocess.run(["umount", "-l", item[6:]], capture_output=True)
            else:
                subprocess.run(["losetup", "-d", item], capture_output=True)
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds of each (default 3)")
    ap.add_argument("--dir", default="/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_bulk: needs root (loop devices, mount)", file=sys.stderr)
        return 3
    root = Path(tempfile.mkdtemp(prefix="loopdev-bulk-", dir=args.dir))
    failures: list[str] = []
    left: list[str] = []
    times: dict[str, list[float]] = {"loopdev": [], "mount -o loop": []}
    try:
        pairs = make_images(root, args.images)
        with machine_lock(timeout=None):
            try:
                for r in range(args.rounds):
                    runs: list[tuple[str, Callable[[], tuple[float, list[str]]]]] = [
                        ("loopdev", lambda: library(pairs, args.threads)),
                        ("mount -o loop", lambda: shell(pairs)),
                    ]
                    for name, fn in runs if r % 2 == 0 else runs[::-1]:
                        seconds, failed = fn()
                        times[name].append(seconds)
                        failures += [f"round {r} {name}: {f}" for f in failed]
                        stray = leftovers(pairs)
                        if stray:
                            left += [f"round {r} after {name}: {x}" for x in stray]
                            cleanup(pairs)
                    print(
                        f"round {r}: loopdev {times['loopdev'][-1]:.3f} s, "
                        f"mount -o loop {times['mount -o loop'][-1]:.3f} s",
                        flush=True,
                    )
            finally:
                cleanup(pairs)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ld, ul = statistics.median(times["loopdev"]), statistics.median(times["mount -o loop"])
    rows = (
        (f"loopdev, {args.threads} threads", ld),
        ("mount -o loop + umount, shell loop", ul),
    )
    print(
        f"\n{args.images} squashfs images mounted + unmounted, load {_load()}, "
        f"{args.rounds} rounds (median of the totals):"
    )
    for label, total in rows:
        print(f"  {label:<36}{total:8.3f} s  ({total / args.images * 1e3:.2f} ms per image)")
    print(f"  {'ratio':<36}{ul / ld:8.1f}x\n  failures: {len(failures)}; left behind: {len(left)}")
    for line in failures + left:
        print(f"  {line}")
    return 1 if failures or left else 0


if __name__ == "__main__":
    sys.exit(main())
