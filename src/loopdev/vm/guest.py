"""Run one job in one guest: a temporary directory (job share, initramfs, console log), QEMU
started and watched by the host, events read as they come, and at the end the guest's status,
its console and kernel log. Nothing outlives the call: QEMU is killed by its PID at the latest
at the deadline, the temporary directory is removed.

Deadlines: the agent must report ``ready`` within ``boot_timeout``; after that, every event
renews a deadline of the job's ``trial_timeout`` (the in-guest watchdog fires at that time)
plus ``grace`` for the watchdog to collect the stacks and power off.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from loopdev.vm import initramfs, kernels, qemu, snapshot
from loopdev.vm.build import BuiltModule
from loopdev.vm.debian import VmSetupError
from loopdev.vm.init_script import InitParams, render
from loopdev.vm.protocol import Event, Job

#: guest statuses
OK, HANG, PANIC, TIMEOUT, BOOT_FAILED, AGENT_FAILED = (
    "ok", "hang", "panic", "timeout", "boot-failed", "agent-failed",
)  # fmt: skip


@dataclass(frozen=True)
class GuestOptions:
    """How guests are run."""

    machine: qemu.Machine = field(default_factory=qemu.Machine)
    #: seconds until the agent must be up (None: 180 under TCG, 30 with KVM, which boots in
    #: seconds where it works and hangs at boot where nested virtualisation does not)
    boot_timeout: float | None = None
    grace: float = 60.0
    hung_task_secs: int = 10
    code: Path | None = None  # the loopdev copy guests import (default: a fresh snapshot)
    kernel: str = kernels.DEFAULT  # which guest kernel boots (loopdev.vm.kernels.KERNELS)


@dataclass
class GuestRun:
    """What one guest did."""

    status: str
    events: list[Event]
    console: str
    dmesg: str
    agent_log: str
    seconds: float
    boot_seconds: float | None  # QEMU start to the agent's ``ready``
    message: str = ""
    pid: int = 0

    def ready(self) -> Event | None:
        return next((e for e in self.events if e.kind == "ready"), None)


def _read_new(path: Path, offset: int) -> tuple[list[Event], int]:
    """Complete lines appended to ``path`` since ``offset``."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            chunk = f.read()
    except OSError:
        return [], offset
    end = chunk.rfind(b"\n")
    if end < 0:
        return [], offset
    events = []
    for line in chunk[: end + 1].decode("utf-8", "replace").splitlines():
        ev = Event.from_line(line)
        if ev is not None:
            events.append(ev)
    return events, offset + end + 1


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def run_guest(
    module: BuiltModule,
    job: Job,
    options: GuestOptions | None = None,
    on_event: Callable[[Event], None] | None = None,
) -> GuestRun:
    """Boot a guest of ``options.kernel`` with ``module`` as its loop driver, run ``job`` in
    it, return what it did. VmSetupError if the module was built for another kernel."""
    options = options or GuestOptions()
    kernel = kernels.boot_kernel(options.kernel)
    if module.release != kernel.release:
        raise VmSetupError(
            f"{module.label}: loop.ko was built for {module.release}, the {kernel.name} guest "
            f"kernel is {kernel.release} (build it with kernel={kernel.name!r})"
        )
    with tempfile.TemporaryDirectory(prefix="loopdev-vm-") as tmp:
        base = Path(tmp)
        job_dir = base / "job"
        job_dir.mkdir()
        (job_dir / "job.json").write_text(job.to_json())
        (job_dir / "events.jsonl").write_bytes(b"")
        params = InitParams(
            boot_modules=[name for name, _ in kernel.boot_modules],
            host_modules=list(kernel.host_modules),
            release=kernel.release,
            modules_dir=kernel.modules_dir,
            python=sys.executable,
            pythonpath=options.code or snapshot.code_snapshot(),
            hung_task_secs=options.hung_task_secs,
        )
        params = replace(params, keep_tmp=tmp_roots([
            Path(sys.prefix), Path(sys.executable), params.pythonpath,
            *(Path(a) for a in [*job.script, *job.pytest] if a.startswith("/")),
        ]))  # fmt: skip
        initrd = base / "initrd.cpio"
        initramfs.build(initrd, list(kernel.boot_modules), module.path, render(params))
        console = base / "console.log"
        argv = qemu.command(
            options.machine, kernel.image, initrd, job_dir, console,
            qemu.kernel_args(kernel.loglevel),
        )  # fmt: skip
        return _watch(argv, base, job, options, on_event)


def tmp_roots(paths: list[Path]) -> list[Path]:
    """The directories right under /tmp that hold any of ``paths`` (the guest's /tmp is its
    own tmpfs; these are bound back into it from the host, read-only)."""
    roots: list[Path] = []
    for p in paths:
        parts = Path(os.path.realpath(p)).parts
        for candidate in (p.parts, parts):
            if len(candidate) > 2 and candidate[:2] == ("/", "tmp"):
                root = Path("/tmp", candidate[2])
                if root not in roots:
                    roots.append(root)
    return roots


def _watch(
    argv: list[str],
    base: Path,
    job: Job,
    options: GuestOptions,
    on_event: Callable[[Event], None] | None,
) -> GuestRun:
    job_dir = base / "job"
    t0 = time.monotonic()
    proc = qemu.QemuProcess(argv, base / "qemu.log")
    events: list[Event] = []
    offset = 0
    boot_seconds: float | None = None
    boot_timeout = options.boot_timeout
    if boot_timeout is None:
        boot_timeout = 30.0 if options.machine.accel == "kvm" else 180.0
    deadline = t0 + boot_timeout
    killed = False
    try:
        while True:
            new, offset = _read_new(job_dir / "events.jsonl", offset)
            now = time.monotonic()
            for ev in new:
                events.append(ev)
                if ev.kind == "ready" and boot_seconds is None:
                    boot_seconds = now - t0
                if on_event is not None:
                    on_event(ev)
            if new and boot_seconds is not None:
                deadline = now + job.trial_timeout * 4 + options.grace
            if proc.poll() is not None:
                break
            if now > deadline:
                killed = True
                break
            time.sleep(0.1)
    finally:
        proc.kill()
    new, offset = _read_new(job_dir / "events.jsonl", offset)
    events.extend(new)
    if on_event is not None:
        for ev in new:
            on_event(ev)
    run = GuestRun(
        status=OK,
        events=events,
        console=_text(base / "console.log"),
        dmesg=_text(job_dir / "dmesg.txt"),
        agent_log=_text(job_dir / "agent.log"),
        seconds=time.monotonic() - t0,
        boot_seconds=boot_seconds,
        pid=proc.pid,
    )
    status = _text(job_dir / "status").strip()
    run.status, run.message = classify(run, status, killed, _text(base / "qemu.log"))
    return run


def classify(run: GuestRun, status: str, killed: bool, qemu_log: str) -> tuple[str, str]:
    """The guest's status and a one-line reason, from what it left behind."""
    log = run.console + "\n" + run.dmesg
    panic = _first(log, ("Kernel panic - not syncing",))
    if panic:
        cause = _first(log, ("BUG:", "Oops:", "kernel BUG at", "general protection fault"))
        return PANIC, cause or panic
    if status == "hang":
        return HANG, "a trial passed its deadline; blocked tasks dumped by sysrq-w"
    if killed:
        what = "did not report ready" if run.boot_seconds is None else "stopped responding"
        return TIMEOUT, f"the guest {what} before the host's deadline; killed"
    if status.startswith("init-failed"):
        return BOOT_FAILED, status
    if not any(e.kind == "done" for e in run.events):
        if run.boot_seconds is None:
            tail = (qemu_log.strip().splitlines() or [status or "no status"])[-1]
            return BOOT_FAILED, f"the agent never started ({tail})"
        tail = (run.agent_log.strip().splitlines() or ["no output"])[-1]
        return AGENT_FAILED, f"the agent exited early: {tail}"
    return OK, ""


def _first(text: str, needles: tuple[str, ...]) -> str:
    for line in text.splitlines():
        for n in needles:
            i = line.find(n)
            if i >= 0:
                return line[i:].strip()
    return ""
