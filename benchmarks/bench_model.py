"""Model-kernel benchmarks and the library-on-model exploration, in one command.

Run: .venv/bin/python benchmarks/bench_model.py [--quick] [--only NAME ...]

1. scheduler: schedules/s on 3 tasks x 30 steps (benchmarks/bench_sched.py), target >= 5,000.
2. mount: schedules/s of one ``mount -o loop,ro`` + ``umount`` (modelled util-linux 2.38 and
   udevd, v6.11, tracing off), target >= 200.
3. claims: median wall time to the first failing schedule of claims 1 and 2 (the 2022
   reports' shell loops below: CLAIM1, CLAIM2) over 20 seeds, target < 2 s.
4. library: the loopdev library's attach/detach/mount_image/umount on v6.11 with udevd over
   5,000 random + 5,000 PCT schedules (the lab's library-users scenario); failures must be 0,
   each printed with its replay token.

The shell loops run the modelled util-linux through ``kernel.run`` on a machine made by the
lab's :func:`loopdev.lab.model.boot`; a run "fails" when the loop prints what a user would
have seen fail.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sched import STEPS, TASKS, measure

from loopdev.kernel import Kernel
from loopdev.lab import model
from loopdev.lab.hunt import hunt, pct, random, scenario_failure, scenario_setup
from loopdev.lab.userspace.udevd import start_udevd
from loopdev.sim.explore import RunSetup
from loopdev.sim.kernel import SimKernel
from loopdev.sim.sched import RunOutcome, Scheduler
from loopdev.sim.strategy import PCT, RandomWalk, Strategy

#: (label, clock): wall-clock time, and this process's CPU time (what the model costs on a
#: machine shared with other work: the load average is printed alongside)
CLOCKS: tuple[tuple[str, Callable[[], float]], ...] = (
    ("wall", time.perf_counter),
    ("cpu", time.process_time),
)


# -- the 2022 reports' shell loops, over the modelled util-linux --------------------------

#: registry key where a shell loop stores what the user saw (a failure line, or None)
SEEN = "bench.seen"


def _sh(kernel: Kernel, argv: list[str], step: str) -> str | None:
    r = kernel.run(argv)
    if r.returncode:
        return f"{step}: exit {r.returncode}: {r.stderr.strip()}"
    return None


def mount_loop(kernel: Kernel, iterations: int) -> str | None:
    """LTP isofs.sh / Jan Kara's reproducer:
    ``while :; do mount -o loop,ro isofs.iso isofs/; umount isofs/; done`` (squashfs image)."""
    image, mnt = "/tmp/isofs.img", "/mnt/isofs"
    failed = _sh(kernel, ["mksquashfs", "/tmp", image, "-noappend"], "mksquashfs")
    if failed:
        return failed
    kernel.mkdir(mnt)
    for i in range(iterations):
        failed = _sh(kernel, ["mount", "-o", "loop,ro", image, mnt], f"mount #{i}")
        failed = failed or _sh(kernel, ["umount", mnt], f"umount #{i}")
        if failed:
            return failed
    return None


def nested_umount(kernel: Kernel) -> str | None:
    """xfstests xfs/049's shape: an ext2 image on an xfs loop mount;
    ``umount inner; umount outer``."""
    kernel.mkdir("/mnt/outer")
    kernel.mkdir("/mnt/inner")
    return (
        _sh(kernel, ["mkfs.xfs", "/tmp/outer.img", "1M"], "mkfs.xfs")
        or _sh(kernel, ["mount", "-o", "loop", "/tmp/outer.img", "/mnt/outer"], "mount outer #0")
        or _sh(kernel, ["mkfs.ext2", "/mnt/outer/inner.img", "256K"], "mkfs")
        or _sh(
            kernel, ["mount", "-o", "loop", "/mnt/outer/inner.img", "/mnt/inner"], "mount inner #0"
        )
        or _sh(kernel, ["umount", "/mnt/inner"], "umount inner #0")
        or _sh(kernel, ["umount", "/mnt/outer"], "umount outer #0")
    )


Script = Callable[[SimKernel], "str | None"]


def shell(variant: str, ul: str, udev: bool, script: Script) -> RunSetup:
    """``script`` as the shell of a fresh machine (util-linux ``ul``), with or without udevd
    running alongside."""

    def setup(sched: Scheduler) -> None:
        k, _ = model.boot(sched, variant, f"util-linux-{ul}", nr_loop=4)

        def sh() -> None:
            d = start_udevd(k) if udev else None
            try:
                sched.registry[SEEN] = script(k)
            finally:
                if d is not None:
                    d.stop()

        k.spawn(sh, "sh")

    return setup


def user_failure(sched: Scheduler, out: RunOutcome) -> str | None:
    """The failure line the shell loop stored, if any."""
    seen = sched.registry.get(SEEN)
    return seen if isinstance(seen, str) else None


#: claim 1: v5.17-rc1 + udev + util-linux 2.37's mount loop fails reading the superblock
CLAIM1 = ("v5.17-rc1", "2.37", True, lambda k: mount_loop(k, iterations=3))
#: claim 2: v5.17-rc1, nested loop mounts: the outer umount is EBUSY
CLAIM2 = ("v5.17-rc1", "2.38", False, nested_umount)


def _load() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def bench_scheduler(seconds: float) -> None:
    print(f"== scheduler: {TASKS} tasks x {STEPS} steps, target >= 5,000 schedules/s "
          f"(load average {_load()})")  # fmt: skip
    for name, make in (("random", lambda: RandomWalk(1)), ("pct(d=3)", lambda: PCT(1))):
        cols = []
        for label, clock in CLOCKS:
            per_s, pts = measure(make(), trace=False, seconds=seconds / 2, clock=clock)
            cols.append(f"{per_s:>8,.0f} schedules/s ({pts:>9,.0f} points/s) {label}")
        print(f"   {name:<10} " + "   ".join(cols))


def _rate(
    program: RunSetup,
    strategy: Strategy,
    seconds: float,
    clock: Callable[[], float],
) -> float:
    """Best-of-5 schedules/s of ``program`` (tracing off) by ``clock``."""
    best = 0.0
    for _ in range(5):
        runs = 0
        start = clock()
        deadline = start + seconds / 5
        while True:
            sched = Scheduler(strategy, trace=False)
            program(sched)
            out = sched.run()
            assert out.ok, out.describe()
            runs += 1
            now = clock()
            if now >= deadline:
                break
        best = max(best, runs / (now - start))
    return best


def bench_mount(seconds: float) -> None:
    print("== mount: one `mount -o loop,ro` + `umount` (util-linux 2.38, udevd, v6.11), "
          f"target >= 200 schedules/s (load average {_load()})")  # fmt: skip
    prog = shell("v6.11", "2.38", True, lambda k: mount_loop(k, iterations=1))
    for name, make in (("random", lambda: RandomWalk(7)), ("pct(d=3)", lambda: PCT(7))):
        cols = [
            f"{_rate(prog, make(), seconds / 2, clock):>8,.0f} schedules/s {label}"
            for label, clock in CLOCKS
        ]
        print(f"   {name:<10} " + "   ".join(cols))


def bench_claims(seeds: int) -> None:
    print(f"== claims: median time to the first failure over {seeds} seeds, target < 2 s")
    for label, (variant, ul, udev, script), make in (
        ("claim 1 (v5.17-rc1, 2.37, udev, pct)", CLAIM1, pct),
        ("claim 2 (v5.17-rc1, 2.38, nested, random)", CLAIM2, random),
    ):
        prog = shell(variant, ul, udev, script)
        times: list[float] = []
        runs: list[int] = []
        missed = 0
        for seed in range(seeds):
            h = hunt(prog, make(seed * 1000), 1000, user_failure)
            if h.seconds_to_first is None or h.first is None:
                missed += 1
                continue
            times.append(h.seconds_to_first)
            runs.append(h.first + 1)
        med = statistics.median(times) if times else float("nan")
        runs_med = statistics.median(runs) if runs else float("nan")
        miss = f", {missed} seed(s) found none in 1000 runs" if missed else ""
        print(f"   {label:<44} median {med:6.3f} s ({runs_med:g} runs), "
              f"max {max(times, default=float('nan')):.3f} s{miss}")  # fmt: skip


def bench_library(budget: int) -> int:
    print(f"== library on the model: attach/detach + mount_image/umount, v6.11 + udevd, "
          f"{budget} random + {budget} PCT schedules (failures must be 0)")  # fmt: skip
    prog = scenario_setup("library-users", "loopdev", "v6.11")
    total = 0
    for name, strategy in (("random", random(0)), ("pct(d=3)", PCT(0, depth=3))):
        start = time.perf_counter()
        h = hunt(prog, strategy, budget, scenario_failure, stop_on_failure=False)
        elapsed = time.perf_counter() - start
        failed = sum(h.failures.values()) + len(h.model_errors)
        total += failed
        print(f"   {name:<10} {h.runs} schedules, {failed} failures "
              f"({h.runs / elapsed:,.0f} schedules/s)")  # fmt: skip
        for msg, n in h.failures.most_common(5):
            print(f"      {n}x {msg}")
        for err in h.model_errors[:5]:
            print(f"      {err.splitlines()[0]}")
        if h.token:
            print(f"      replay token of the first failure: {h.token}")
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small budgets (a smoke run)")
    ap.add_argument(
        "--only", nargs="*", choices=["scheduler", "mount", "claims", "library"], default=None
    )
    args = ap.parse_args()
    only = set(args.only or ["scheduler", "mount", "claims", "library"])
    seconds = 1.0 if args.quick else 5.0
    failures = 0
    if "scheduler" in only:
        bench_scheduler(seconds)
    if "mount" in only:
        bench_mount(seconds)
    if "claims" in only:
        bench_claims(4 if args.quick else 20)
    if "library" in only:
        failures = bench_library(100 if args.quick else 5000)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
