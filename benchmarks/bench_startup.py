"""Start-up of the ``loopdev`` command against losetup's, in one run: ``-V`` and ``-a``.

    .venv/bin/python benchmarks/bench_startup.py [--runs 30]

Each command runs ``--runs`` times, the loopdev and losetup runs alternating (pairs), every
run a whole process (posix_spawn to exit, output to /dev/null). Prints the median and spread
per command, loopdev's median against the target (<= 25 ms), and for reference the bare
interpreter's start-up (``python -c pass``), the floor of any Python command. The package's
bytecode is compiled first, as an installed package has it (a development shell may set
PYTHONDONTWRITEBYTECODE, and compiling on every start would be measured instead). Listing
devices reads the real kernel: run it as root for ``-a`` to see them all.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import loopdev

TARGET = 0.025
LOOPDEV = str(Path(sys.executable).with_name("loopdev"))


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def once(argv: list[str]) -> float:
    """Wall seconds of one run of ``argv``, start to exit."""
    actions = [
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
    ]
    t0 = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)
    _, status = os.waitpid(pid, 0)
    elapsed = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {os.waitstatus_to_exitcode(status)}")
    return elapsed


def compile_bytecode() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    package = str(Path(loopdev.__file__).parent)
    subprocess.run([sys.executable, "-m", "compileall", "-q", package], check=True, env=env)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=30, help="runs of each command (default 30)")
    args = ap.parse_args(argv)
    losetup = shutil.which("losetup")
    if losetup is None:
        print("bench_startup: losetup (util-linux) is not installed", file=sys.stderr)
        return 3
    compile_bytecode()
    pairs = [(["-V"], [LOOPDEV, "-V"], [losetup, "-V"]), (["-a"], [LOOPDEV, "-a"], [losetup, "-a"])]
    python = [sys.executable, "-c", "pass"]
    for _, ours, theirs in pairs:  # warm the page cache
        once(ours)
        once(theirs)
    times: dict[str, list[float]] = {}
    for _ in range(args.runs):
        for flag, ours, theirs in pairs:
            times.setdefault(f"loopdev {flag[0]}", []).append(once(ours))
            times.setdefault(f"losetup {flag[0]}", []).append(once(theirs))
        times.setdefault("python -c pass", []).append(once(python))
    print(
        f"start-up, {args.runs} runs each (loopdev and losetup alternating), load {_load()}:\n"
        f"{'command':<18}{'min':>9}{'median':>9}{'max':>9}"
    )
    ok = True
    for name, values in times.items():
        med = statistics.median(values)
        line = (
            f"{name:<18}{min(values) * 1e3:>7.1f}ms{med * 1e3:>7.1f}ms{max(values) * 1e3:>7.1f}ms"
        )
        if name.startswith("loopdev"):
            hit = med <= TARGET
            ok &= hit
            line += f"   target <= {TARGET * 1e3:.0f} ms: {'ok' if hit else 'MISSED'}"
        print(line)
    for flag, _, _ in pairs:
        mine = statistics.median(times[f"loopdev {flag[0]}"])
        ref = statistics.median(times[f"losetup {flag[0]}"])
        print(f"loopdev {flag[0]} / losetup {flag[0]}: {mine / ref:.1f}x")
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
