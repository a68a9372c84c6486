"""The in-guest runner: ``python -m loopdev.vm.agent JOB.json EVENTS.jsonl``.

Runs each cell of the job with the lab's own scenario code through
:class:`loopdev.linux.LinuxKernel` (see :mod:`loopdev.vm.userspaces` for the rows), in a
private work directory on the guest's tmpfs, a real systemd-udevd around the scenarios that
want udev, the same outcome kinds and messages as the host's real column. Before each trial it
writes its deadline for PID 1's watchdog (:mod:`loopdev.vm.init_script`); after it, it reads
what the kernel logged meanwhile (``/dev/kmsg``), so a lockdep report printed during the trial
becomes part of that trial's record (:func:`loopdev.vm.lockdep_report.trial_verdict`). Every
event is appended to EVENTS.jsonl and flushed at once. A job may instead run a script or
pytest on test files of the host (:meth:`Agent.run_pytest`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import TextIO
from xml.etree import ElementTree

from loopdev.lab import realudev
from loopdev.lab.outcome import Outcome, RunRecord
from loopdev.lab.realkernel import (
    make_real_image,
    reset_workdir,
    run_trial,
    start_real,
    util_linux_version,
)
from loopdev.lab.scenarios import by_name
from loopdev.lab.scenarios.base import Env, Scenario, Unsupported
from loopdev.vm.init_script import DEADLINE_FILE
from loopdev.vm.kmsg import KernelLog, lockdep_on
from loopdev.vm.lockdep_report import parse_reports, trial_verdict
from loopdev.vm.protocol import CellPlan, Event, Job, record_to_json
from loopdev.vm.userspaces import make_userspace


class Agent:
    """Runs a :class:`Job`, writing events to ``out``."""

    def __init__(self, job: Job, out: TextIO, deadline_file: str = DEADLINE_FILE) -> None:
        self.job = job
        self.out = out
        self.deadline_file = deadline_file
        self.klog: KernelLog | None = None

    def kernel_log(self) -> str:
        """What the kernel logged since the last call ('' without /dev/kmsg)."""
        return self.klog.read_new() if self.klog is not None else ""

    def lockdep_note(self, text: str, when: str) -> None:
        """A lockdep report printed outside any trial (between cells, in a cleanup)."""
        for report in parse_reports(text):
            self.emit("note", text=f"lockdep report {when}: {report.kind}: {report.label}",
                      lockdep=report.format())  # fmt: skip

    def emit(self, kind: str, **data: object) -> None:
        self.out.write(Event(kind, dict(data)).to_line())
        self.out.flush()

    def set_deadline(self, seconds: float | None) -> None:
        """Tell the watchdog by when (uptime) the current trial must end; None: no trial."""
        value = 0
        if seconds is not None:
            with open("/proc/uptime") as f:
                value = int(float(f.read().split()[0]) + seconds) + 1
        with contextlib.suppress(OSError), open(self.deadline_file, "w") as f:
            f.write(f"{value}\n")

    def run(self) -> None:
        ul = util_linux_version()
        self.emit(
            "ready",
            kernel=platform.release(),
            util_linux=".".join(map(str, ul)) if ul else "",
            uptime=_uptime(),
            lockdep=_lockdep_state(),
        )
        if self.job.script:
            self.run_script(self.job.script)
            self.emit("done", uptime=_uptime(), lockdep=_lockdep_state())
            return
        if self.job.pytest:
            self.run_pytest(self.job.pytest)
            self.emit("done", uptime=_uptime(), lockdep=_lockdep_state())
            return
        try:
            self.klog = KernelLog()
        except OSError as e:
            self.emit("note", text=f"{e}: lockdep reports are not read per trial")
        workdir = tempfile.mkdtemp(prefix="loopdev-vm-")
        try:
            for plan in self.job.cells:
                if self.out_of_time():
                    break
                self.lockdep_note(self.kernel_log(), f"before {plan.scenario}/{plan.userspace}")
                self.run_cell(plan, workdir)
        finally:
            self.set_deadline(None)
            shutil.rmtree(workdir, ignore_errors=True)
            if self.klog is not None:
                self.klog.close()
        self.emit("done", uptime=_uptime(), lockdep=_lockdep_state())

    def out_of_time(self) -> bool:
        """The job's time limit has passed: no more trials (the host counts them as cut)."""
        limit = self.job.stop_after
        return limit is not None and _uptime() >= limit

    def run_script(self, argv: list[str]) -> None:
        """Run a user's script (``python SCRIPT ARGS...``) under the watchdog's deadline; its
        output comes back as one ``output`` event."""
        self.set_deadline(self.job.trial_timeout)
        r = subprocess.run([sys.executable, *argv], capture_output=True, text=True)
        self.set_deadline(None)
        self.emit("output", returncode=r.returncode, stdout=r.stdout, stderr=r.stderr)

    def run_pytest(self, args: list[str]) -> None:
        """``python -m pytest ARGS`` under the watchdog's deadline: one ``test`` event per
        test (from pytest's JUnit XML), then an ``output`` event with its exit status and the
        end of its output."""
        with tempfile.TemporaryDirectory(prefix="loopdev-vm-pytest-") as tmp:
            xml = os.path.join(tmp, "junit.xml")
            self.set_deadline(self.job.trial_timeout)
            r = subprocess.run(
                [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA",
                 f"--junitxml={xml}", *args],
                capture_output=True, text=True,
            )  # fmt: skip
            self.set_deadline(None)
            for case in junit_cases(xml):
                self.emit("test", **case)
        self.emit("output", returncode=r.returncode, stdout=r.stdout[-_OUTPUT:],
                  stderr=r.stderr[-_OUTPUT:])  # fmt: skip

    def run_cell(self, plan: CellPlan, workdir: str) -> None:
        scenario = by_name(plan.scenario)
        udev_wanted = scenario.udev and self.job.udevd
        with self._udev(udev_wanted) as udev_on:
            kernel, userspace = make_userspace(plan.userspace, self.job.release)
            env = Env(
                kernel=kernel,
                userspace=userspace,
                workdir=workdir,
                make_image=make_real_image,
                start=start_real,
                is_model=False,
                # the model's trial shape (mount-loop: three back-to-back cycles, no wait for
                # the detach in between); see Job.model_shape
                back_to_back=self.job.model_shape,
                udev=udev_on,
                measure_latency=True,
            )
            self.emit("cell", scenario=plan.scenario, userspace=plan.userspace, udev=udev_on,
                      trials=plan.trials)  # fmt: skip
            try:
                self._trials(scenario, env, plan)
            finally:
                self.emit("start", scenario=plan.scenario, userspace=plan.userspace, i=-1,
                          phase="cleanup", uptime=_uptime())  # fmt: skip
                self.set_deadline(self.job.trial_timeout)
                try:
                    scenario.cleanup(env)
                except OSError as e:
                    if e.errno != errno.ENOENT:
                        self.emit("note", text=f"cleanup of {plan.scenario}: {e}")
                reset_workdir(env)
                self.set_deadline(None)
                self.lockdep_note(self.kernel_log(),
                                  f"in the cleanup of {plan.scenario}/{plan.userspace}")  # fmt: skip

    def _trials(self, scenario: Scenario, env: Env, plan: CellPlan) -> None:
        key = {"scenario": plan.scenario, "userspace": plan.userspace}
        self.emit("start", **key, i=-1, phase="prepare", uptime=_uptime())
        self.set_deadline(self.job.trial_timeout * 4)
        try:
            scenario.prepare(env)
        except Unsupported as u:
            for i in range(plan.trials):
                rec = RunRecord(i, Outcome("unsupported", message=str(u)))
                self.emit("trial", **key, **record_to_json(rec))
            return
        except Exception as e:
            rec = RunRecord(0, Outcome("error", type(e).__name__, f"prepare: {e}"))
            self.emit("trial", **key, **record_to_json(rec))
            return
        # a report printed while the cell was being prepared goes to its first trial
        pending = self.kernel_log()
        for i in range(plan.trials):
            if self.out_of_time():
                break
            lockdep_was_on = lockdep_on()
            self.emit("start", **key, i=i, uptime=_uptime())
            self.set_deadline(self.job.trial_timeout)
            ran = run_trial(scenario, env, i)
            self.set_deadline(None)
            text, pending = pending + self.kernel_log(), ""
            rec = trial_verdict(ran, parse_reports(text), lockdep_was_on)
            self.emit("trial", **key, **record_to_json(rec))
            if ran.outcome.kind != "pass":
                reset_workdir(env)
            if ran.outcome.kind == "unsupported":  # the scenario cannot run here at all
                break

    @contextlib.contextmanager
    def _udev(self, want: bool) -> Iterator[bool]:
        if not want:
            yield False
            return
        if not os.path.exists(realudev.UDEVD):
            self.emit("note", text=f"{realudev.UDEVD} not installed: ran without udev")
            yield False
            return
        with realudev.RealUdevd(ready_timeout=60.0):
            yield True


#: characters of pytest's output sent back
_OUTPUT = 20000


def junit_cases(path: str) -> list[dict[str, object]]:
    """The tests of a pytest JUnit XML file: ``nodeid`` (``path::name``), ``outcome``
    (passed, failed, error, skipped), ``message`` and ``seconds``."""
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError):
        return []
    out: list[dict[str, object]] = []
    for case in root.iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                message = child.get("message") or (child.text or "").strip()
                break
        module = case.get("classname", "").replace(".", "/")
        out.append({
            "nodeid": f"{module}.py::{case.get('name', '')}",
            "outcome": outcome,
            "message": message,
            "seconds": float(case.get("time") or 0.0),
        })  # fmt: skip
    return out


def _lockdep_state() -> str:
    """``on``, ``off`` (switched itself off after a report) or ``absent`` (no lockdep)."""
    return {True: "on", False: "off", None: "absent"}[lockdep_on()]


def _uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m loopdev.vm.agent JOB.json EVENTS.jsonl", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        job = Job.from_json(f.read())
    with open(argv[1], "a", encoding="utf-8") as out:
        Agent(job, out).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
