"""The library's two ways of detaching, timed on this kernel: AUTOCLEAR + close (before 6.11)
against LOOP_CLR_FD (from 6.11), docs/library.md's "Why this way, measured".

    sudo flock /run/loopdev-realkernel.lock .venv/bin/python benchmarks/bench_detach_ways.py [N]
    loopdev vm script --variant v5.19 benchmarks/bench_detach_ways.py 20 partscan   # a design

The library picks its way from ``Kernel.uname_release()``; two kernel ports answering 5.19 and
6.11 make it take each (the hook the lab's guest kernels use). Each detach: attach a 16 MiB
image with the library, wait 50 ms for probes of the new device, then time ``detach()`` until
it returns with the device unbound. The ways alternate, N each after one warm-up each; with
``partscan`` also on an image with two MSDOS partitions (real sfdisk) attached with partition
scanning. Prints median, p10 and p90 in ms as JSON. Every device it attaches is detached,
also on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from loopdev import sysfs
from loopdev.control import attach
from loopdev.device import detach
from loopdev.errors import LoopdevError
from loopdev.linux import LinuxKernel

LAYOUT = b"label: dos\nstart=2048, size=12288, type=83\nstart=14336, type=83\n"


class As(LinuxKernel):
    """This kernel, reporting ``release`` to the library."""

    def __init__(self, release: str) -> None:
        super().__init__()
        self.release = release
        self.name = f"linux-as-{release}"

    def uname_release(self) -> str:
        return self.release


def measure(image: str, n: int, partscan: bool) -> dict[str, dict[str, float]]:
    ways = {"autoclear+close": As("5.19.0"), "LOOP_CLR_FD": As("6.11.0")}
    times: dict[str, list[float]] = {w: [] for w in ways}
    for i in range(2 * n + 2):
        way = list(ways)[i % 2]
        k = ways[way]
        dev = attach(image, partscan=partscan, kernel=k)
        if partscan and len(sysfs.partitions(k, dev.number)) != 2:
            dev.detach()
            raise SystemExit("this kernel found no partitions (no MSDOS parser?)")
        path = str(dev.path)
        dev.relinquish()
        try:
            time.sleep(0.05)
            t0 = time.monotonic()
            detach(path, kernel=k)
            dt = time.monotonic() - t0
        except BaseException:
            with contextlib.suppress(LoopdevError):
                detach(path, kernel=k)
            raise
        if i >= 2:
            times[way].append(dt * 1000)
    out = {}
    for way, ts in times.items():
        ts.sort()
        out[way] = {
            "n": len(ts),
            "median_ms": round(statistics.median(ts), 3),
            "p10_ms": round(ts[len(ts) // 10], 3),
            "p90_ms": round(ts[(len(ts) * 9) // 10], 3),
        }
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    result: dict[str, object] = {"release": os.uname().release}
    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        image = os.path.join(d, "t.img")
        with open(image, "wb") as f:
            f.truncate(16 << 20)
        result["plain"] = measure(image, n, False)
        if "partscan" in sys.argv[2:]:
            subprocess.run(
                ["sfdisk", "-q", "--no-reread", "--no-tell-kernel", image], input=LAYOUT, check=True
            )
            result["partscan"] = measure(image, n, True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
