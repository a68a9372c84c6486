"""Real-kernel test modules run inside a guest: ``python -m pytest FILE...`` in one guest with
a chosen loop module and kernel, every test's outcome brought back.

What it is for: tests that the host's kernel cannot run (this machine's 6.18 kernel parses no
DOS partition tables, so tests/kernel/test_partitions.py skips here) run on Debian's 6.1
kernel, which does. The tests see what they see on a host run as root: the host's root
(read-only), python, the venv and the tools; /tmp and /run are the guest's own, and so are
the loop devices.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loopdev.vm import build, kernels
from loopdev.vm.guest import OK, GuestOptions, GuestRun, run_guest
from loopdev.vm.lockdep_report import KernelLockdepReport, parse_reports
from loopdev.vm.protocol import Event, Job
from loopdev.vm.variants import module_source

#: the module the tests boot with unless told otherwise: Debian's loop.c as it is
STOCK = "v5.19"


@dataclass(frozen=True)
class GuestTest:
    """One test as pytest reported it in the guest."""

    nodeid: str
    outcome: str  # passed, failed, error, skipped
    message: str
    seconds: float


@dataclass
class GuestTestRun:
    """What one guest's pytest run gave."""

    column: str
    kernel: str
    status: str  # the guest's (loopdev.vm.guest: ok, hang, panic, ...)
    message: str
    returncode: int | None  # pytest's exit status (None: it never finished)
    tests: list[GuestTest] = field(default_factory=list)
    output: str = ""  # the end of pytest's output (-rA: one line per test)
    guest: GuestRun | None = None

    @property
    def lockdep_reports(self) -> list[KernelLockdepReport]:
        """Lockdep reports the guest's kernel printed while the tests ran (lockdep kernel)."""
        return parse_reports(self.guest.dmesg or self.guest.console) if self.guest else []

    def count(self, outcome: str) -> int:
        return sum(1 for t in self.tests if t.outcome == outcome)

    def unexpected(self, expected_skips: Sequence[str] = ()) -> list[GuestTest]:
        """Tests that failed or errored, and skips whose reason matches none of the regular
        expressions ``expected_skips``."""
        return [
            t for t in self.tests
            if t.outcome in ("failed", "error")
            or (t.outcome == "skipped" and not any(re.search(p, t.message) for p in expected_skips))
        ]  # fmt: skip

    def ok(self, expected_skips: Sequence[str] = ()) -> bool:
        """The guest ran pytest to the end, it collected tests, and none is unexpected."""
        return (
            self.status == OK
            and self.returncode in (0, 5) and bool(self.tests)
            and not self.unexpected(expected_skips)
        )  # fmt: skip

    def summary(self) -> str:
        counts = ", ".join(f"{self.count(o)} {o}" for o in ("passed", "failed", "error", "skipped")
                           if self.count(o))  # fmt: skip
        return f"{self.column} on the {self.kernel} kernel: {counts or 'no tests'}"


def run_tests(
    paths: Sequence[str | Path],
    variant_or_patch: str | Path = STOCK,
    *,
    pytest_args: Sequence[str] = (),
    timeout: float = 900.0,
    options: GuestOptions | None = None,
    on_event: Callable[[Event], None] | None = None,
) -> GuestTestRun:
    """Run pytest on ``paths`` (test files or directories on the host) in one guest whose loop
    driver is ``variant_or_patch`` and whose kernel is ``options.kernel``; ``timeout`` seconds
    for the whole pytest run (then the guest's watchdog dumps the blocked tasks)."""
    options = options or GuestOptions()
    kernel = kernels.boot_kernel(options.kernel)
    src = module_source(variant_or_patch)
    module = build.build_module(src, kernel.target)
    args = [*pytest_args, *(str(Path(p).resolve()) for p in paths)]
    job = Job(cells=[], trial_timeout=timeout, pytest=args)
    run = run_guest(module, job, options, on_event)
    out = next((e for e in run.events if e.kind == "output"), None)
    result = GuestTestRun(
        column=src.label,
        kernel=kernel.name,
        status=run.status,
        message=run.message,
        returncode=int(out.data.get("returncode", 1)) if out else None,
        output=str(out.data.get("stdout", "")) + str(out.data.get("stderr", "")) if out else "",
        guest=run,
    )
    for ev in run.events:
        if ev.kind == "test":
            result.tests.append(GuestTest(
                str(ev.data.get("nodeid", "")), str(ev.data.get("outcome", "")),
                str(ev.data.get("message", "")), float(ev.data.get("seconds", 0.0)),
            ))  # fmt: skip
    return result
