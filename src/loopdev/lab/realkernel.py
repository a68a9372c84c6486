"""The 'this kernel' column: scenarios on real loop devices with real util-linux, the loopdev
library and (when installed) a real systemd-udevd started and stopped by the lab.

Everything runs under the machine-wide real-kernel lock and inside a private work directory;
after every failed trial, and at the end, everything mounted or attached from that directory is
unmounted and detached (identified by backing file, verified by LOOP_GET_STATUS64).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from loopdev.lab import cpuload, realudev
from loopdev.lab.backends import LoopdevLibrary, UtilLinux
from loopdev.lab.outcome import PASS, THIS_KERNEL, CellKey, CellResult, Outcome, RunRecord
from loopdev.lab.scenarios.base import Env, Scenario, ScenarioFailure, Unsupported, Userspace
from loopdev.lab.scenarios.common import detach_backed_by, force_umount
from loopdev.linux import LinuxKernel

LOCK_PATH = "/run/loopdev-realkernel.lock"

#: trials per scenario on the real kernel (the default budget)
DEFAULT_TRIALS: dict[str, int] = {
    "mount-loop+udev": 150,
    "mount-loop": 60,
    "nested-umount": 30,
    "nested-umount+udev": 120,
    "iouring-kill": 30,
    "detach-open": 40,
    "parallel-attach": 25,
}


def unavailable() -> str | None:
    """Why the real-kernel column cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    if not os.path.exists("/dev/loop-control"):
        return "no /dev/loop-control (loop driver missing)"
    return None


def util_linux_version() -> tuple[int, int] | None:
    """The installed util-linux version (from ``mount --version``)."""
    try:
        out = subprocess.run(["mount", "--version"], capture_output=True, text=True).stdout
    except OSError:
        return None
    m = re.search(r"util-linux (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def util_linux_row() -> str | None:
    """The matrix row the installed util-linux belongs to."""
    v = util_linux_version()
    if v is None:
        return None
    return "util-linux-2.38" if v >= (2, 38) else "util-linux-2.37"


@contextlib.contextmanager
def machine_lock(timeout: float | None = 120.0) -> Iterator[None]:
    """Hold ``flock(LOCK_EX)`` on the machine-wide real-kernel lock, waiting up to ``timeout``
    seconds (None: as long as it takes)."""
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        if timeout is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"{LOCK_PATH} held by someone else for {timeout}s"
                        ) from None
                    time.sleep(0.1)
        yield
    finally:
        os.close(fd)


# --- real images and background programs ---------------------------------------------------


def make_real_image(
    kind: str, path: str, *, size_mib: int = 16, files: dict[str, bytes] | None = None
) -> str:
    """Build a real filesystem image with the real mkfs tool."""
    tool = {
        "ext4": "mkfs.ext4",
        "ext2": "mkfs.ext2",
        "xfs": "mkfs.xfs",
        "squashfs": "mksquashfs",
    }[kind]
    if shutil.which(tool) is None:
        raise Unsupported(f"{tool} is not installed (scripts/setup.sh installs it)")
    with tempfile.TemporaryDirectory(prefix="loopdev-lab-src-") as src:
        for name, data in (files or {}).items():
            with open(os.path.join(src, name), "wb") as f:
                f.write(data)
        if kind == "squashfs":
            argv = [tool, src, path, "-noappend", "-quiet", "-no-progress"]
        else:
            with open(path, "wb") as f:
                f.truncate(max(size_mib, 300 if kind == "xfs" else 1) << 20)
            if kind == "xfs":
                argv = [tool, "-q", "-f", "-K", path]
            else:
                argv = [tool, "-q", "-F", "-E", "nodiscard", "-d", src, path]
        r = subprocess.run(argv, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {r.stderr.strip()}")
    return path


class _Popen:
    """A background program as a :class:`loopdev.kernel.Process`."""

    def __init__(self, argv: Sequence[str]) -> None:
        if shutil.which(argv[0]) is None:
            raise Unsupported(f"{argv[0]} is not installed")
        self._p = subprocess.Popen(
            list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    @property
    def pid(self) -> int:
        return self._p.pid

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self._p.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self._p.send_signal(sig)


def start_real(argv: Sequence[str], name: str) -> _Popen:
    del name
    return _Popen(argv)


# --- cleanup by work directory ----------------------------------------------------------------


def _mounts_under(base: str) -> list[str]:
    out: list[str] = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            target = line.split()[4].replace("\\040", " ")
            if target == base or target.startswith(base.rstrip("/") + "/"):
                out.append(target)
    return out


def _loops_backed_under(base: str) -> list[str]:
    found: list[str] = []
    for name in os.listdir("/sys/block"):
        try:
            with open(f"/sys/block/{name}/loop/backing_file") as f:
                backing = f.read().strip().removesuffix(" (deleted)")
        except OSError:
            continue
        if backing.startswith(base.rstrip("/") + "/"):
            found.append(backing)
    return found


def reset_workdir(env: Env) -> None:
    """Unmount (deepest first) and detach everything that lives under the work directory."""
    base = os.path.realpath(env.workdir)
    for _ in range(3):
        for target in sorted(_mounts_under(base), key=len, reverse=True):
            force_umount(env, target, timeout=5.0)
        for backing in _loops_backed_under(base):
            detach_backed_by(env, backing)
        if not _mounts_under(base) and not _loops_backed_under(base):
            return
        time.sleep(0.2)


# --- running --------------------------------------------------------------------------------


@dataclass
class RealPlan:
    """What to run on this kernel."""

    scenarios: list[Scenario]
    userspaces: list[str]  # row ids: "util-linux-2.38" (real binaries) and/or "loopdev"
    trials: dict[str, int]
    udevd: bool = True  # start a real systemd-udevd for scenarios that want udev


def _userspace(k: LinuxKernel, row: str) -> Userspace:
    return LoopdevLibrary(k) if row == "loopdev" else UtilLinux(k, row)


def run_trial(scenario: Scenario, env: Env, index: int) -> RunRecord:
    """One trial on the real kernel."""
    env.measurements = {}
    t0 = time.monotonic()
    try:
        scenario.trial(env)
        outcome = PASS
    except ScenarioFailure as f:
        outcome = Outcome("fail", f.key, f.message)
    except Unsupported as u:
        outcome = Outcome("unsupported", message=str(u))
    except Exception as e:  # a lab bug: shown as such, never as a kernel verdict
        outcome = Outcome("error", type(e).__name__, str(e))
    return RunRecord(index, outcome, "", time.monotonic() - t0, dict(env.measurements))


def run_real(
    plan: RealPlan,
    *,
    on_trial: Callable[[CellKey, int], None] | None = None,
    lock_timeout: float = 120.0,
    take_lock: bool = True,
) -> tuple[dict[CellKey, CellResult], list[str]]:
    """Run the plan on this kernel; returns the cells and notes (udevd, lock).
    ``take_lock=False`` when the caller already holds the machine lock (test sessions)."""
    cells: dict[CellKey, CellResult] = {}
    notes: list[str] = []
    why = unavailable()
    if why:
        return cells, [f"this kernel: not run ({why})"]
    kernel = LinuxKernel()
    try:
        with machine_lock(lock_timeout) if take_lock else contextlib.nullcontext():
            workdir = tempfile.mkdtemp(prefix="loopdev-lab-")
            try:
                for scenario in plan.scenarios:
                    if scenario.model_only:
                        continue
                    for row in plan.userspaces:
                        key = CellKey(scenario.name, row, THIS_KERNEL, "host")
                        cell = cells[key] = CellResult(key, strategy="real trials")
                        _run_cell(scenario, row, kernel, workdir, plan, cell, notes, on_trial)
            finally:
                env = _env(kernel, UtilLinux(kernel, "util-linux"), workdir, udev=False)
                reset_workdir(env)
                shutil.rmtree(workdir, ignore_errors=True)
    except TimeoutError as e:
        notes.append(f"this kernel: not run ({e})")
    return cells, notes


def _env(kernel: LinuxKernel, us: Userspace, workdir: str, *, udev: bool) -> Env:
    return Env(
        kernel=kernel,
        userspace=us,
        workdir=workdir,
        make_image=make_real_image,
        start=start_real,
        is_model=False,
        udev=udev,
        measure_latency=True,
    )


@contextlib.contextmanager
def _udev_context(want: bool, notes: list[str]) -> Iterator[bool]:
    """A real udevd while the block runs, if wanted and possible; yields whether udev is on."""
    running = realudev.running_udevd_pids()
    if running:
        note = "a systemd-udevd was already running; udev could not be turned off"
        if note not in notes:
            notes.append(note)
        yield True
        return
    if not want:
        yield False
        return
    if not os.path.exists(realudev.UDEVD):
        note = f"{realudev.UDEVD} not installed: udev scenarios ran without udev"
        if note not in notes:
            notes.append(note)
        yield False
        return
    with realudev.RealUdevd() as udevd:
        del udevd
        yield True


def _run_cell(
    scenario: Scenario,
    row: str,
    kernel: LinuxKernel,
    workdir: str,
    plan: RealPlan,
    cell: CellResult,
    notes: list[str],
    on_trial: Callable[[CellKey, int], None] | None,
) -> None:
    n = plan.trials.get(scenario.name, 20)
    t0 = cpuload.sample()
    try:
        with _udev_context(scenario.udev and plan.udevd, notes) as udev_on:
            env = _env(kernel, _userspace(kernel, row), workdir, udev=udev_on)
            try:
                scenario.prepare(env)
            except Unsupported as u:
                for i in range(n):
                    cell.add(RunRecord(i, Outcome("unsupported", message=str(u))))
                reset_workdir(env)
                return
            except Exception as e:
                cell.add(RunRecord(0, Outcome("error", type(e).__name__, f"prepare: {e}")))
                reset_workdir(env)
                return
            try:
                for i in range(n):
                    rec = run_trial(scenario, env, i)
                    cell.add(rec)
                    if rec.outcome.kind != "pass":
                        reset_workdir(env)
                    if on_trial is not None:
                        on_trial(cell.key, i)
                    if rec.outcome.kind == "unsupported":
                        break
            finally:
                try:
                    scenario.cleanup(env)
                except OSError as e:
                    if e.errno != errno.ENOENT:
                        notes.append(f"cleanup of {scenario.name}: {e}")
                reset_workdir(env)
    finally:
        # after the cell's udevd, if any, was stopped and reaped: its CPU time is the lab's
        cell.cpu_others = cpuload.others_share(t0, cpuload.sample())
        if cell.checked:
            cell.timing_distorted = cpuload.distortion(cell.cpu_others)
