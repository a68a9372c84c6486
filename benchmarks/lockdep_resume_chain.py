"""Claim 6 on a real lockdep kernel: the lab's resume-chain scenario on the real v5.16,
v5.17-rc1, v5.17, v5.19 and v6.11 loop modules, each in a QEMU guest booted with the lockdep
kernel (docs/lockdep-kernel.md), beside the model's report for the same cell.

Run (as root): .venv/bin/python benchmarks/lockdep_resume_chain.py [--trials N]
    [--variant V ...] [--seeds N] [--record DIR] [--json]

The kernel is built first when the cache does not have it (9-18 minutes on this 2-core
machine); each guest then takes ~30 s. The guest runs the scenario through the guest agent of
loopdev.vm (the lab's scenario code, LinuxKernel, the loopdev userspace); lockdep's reports
come from the guest's kernel log and go to the trial that was running when it printed them.
Exit status 0 when the real kernel shows claim 6's shape (a cycle through
``&disk->open_mutex`` on v5.16, none on v5.19 and v6.11), 1 otherwise, 2 when it cannot run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loopdev.lab import model
from loopdev.vm import build, debian, guest, initramfs, kbuild, qemu, snapshot
from loopdev.vm import lockdep_report as L
from loopdev.vm.init_script import InitParams, render
from loopdev.vm.protocol import CellPlan, Job, record_from_json
from loopdev.vm.variants import module_source

SCENARIO, USERSPACE = "resume-chain", "loopdev"
VARIANTS = ("v5.16", "v5.17-rc1", "v5.17", "v5.19", "v6.11")
#: lockdep prints at KERN_WARNING: the guest's default loglevel=4 keeps it off the console
CONSOLE_ARGS = qemu.KERNEL_ARGS + " loglevel=5"


@dataclass
class Side:
    """What one backend (the real kernel or the model) showed for one variant."""

    outcomes: dict[str, int] = field(default_factory=dict)
    classes: tuple[str, ...] = ()
    held: tuple[str, ...] = ()
    thread: str = ""
    closing: tuple[str, ...] = ()
    label: str = ""
    text: str = ""
    pid: int = 0  # the guest's QEMU (real side)

    def to_json(self) -> dict[str, Any]:
        return {"outcomes": self.outcomes, "cycle": list(self.classes), "held": list(self.held),
                "thread": self.thread, "closing_stack": list(self.closing), "label": self.label}  # fmt: skip


def boot(kernel: kbuild.KernelBuild, loop_ko: Path, job: Job) -> guest.GuestRun:
    """One guest with the lockdep kernel (9p and virtio built in: no boot modules)."""
    options = guest.GuestOptions()
    with tempfile.TemporaryDirectory(prefix="loopdev-vm-") as tmp:
        base = Path(tmp)
        job_dir = base / "job"
        job_dir.mkdir()
        (job_dir / "job.json").write_text(job.to_json())
        (job_dir / "events.jsonl").write_bytes(b"")
        params = InitParams(
            boot_modules=[], host_modules=[], release=kernel.release,
            modules_dir=kernel.build_dir, python=sys.executable,
            pythonpath=snapshot.code_snapshot(), hung_task_secs=options.hung_task_secs,
        )  # fmt: skip
        initrd = base / "initrd.cpio"
        initramfs.build(initrd, [], loop_ko, render(params))
        argv = qemu.command(options.machine, kernel.bzimage, initrd, job_dir,
                            base / "console.log", CONSOLE_ARGS)  # fmt: skip
        return guest._watch(argv, base, job, options, None)


def real_side(kernel: kbuild.KernelBuild, variant: str, trials: int) -> tuple[Side, str]:
    """The variant's module under the lockdep kernel; (what it showed, the console)."""
    headers = debian.GuestKernel(release=kernel.release, headers=kernel.build_dir)
    module = build.build_module(module_source(variant), headers)
    job = Job(cells=[CellPlan(SCENARIO, USERSPACE, trials)], trial_timeout=60.0, udevd=False)
    run = boot(kernel, module.path, job)
    log = run.dmesg or run.console
    by_trial = L.reports_by_trial(log, L.trial_starts(run.events))
    side = Side(pid=run.pid)
    for ev in run.events:
        if ev.kind != "trial":
            continue
        rec = record_from_json(ev.data)
        reports = by_trial.get((SCENARIO, USERSPACE, rec.seed), [])
        found = L.lockdep_outcome(reports) if rec.outcome.kind == "pass" else None
        label = found[0].label if found else rec.outcome.label
        side.outcomes[label] = side.outcomes.get(label, 0) + 1
    if run.status != guest.OK:
        key = f"guest: {run.status}"
        side.outcomes[key] = side.outcomes.get(key, 0) + 1
    circular = [r for r in L.parse_reports(log) if r.kind == "circular"]
    if circular:
        r = circular[0]
        side.classes, side.held, side.thread = r.classes, r.held, r.thread
        side.closing, side.label, side.text = r.closing_stack(), r.label, r.format()
    return side, run.console


def model_side(variant: str, seeds: int) -> Side:
    """The model's runs of the same cell; the first circular report of the first run."""
    side = Side()
    for seed in range(seeds):
        rec, out = model.run_once(SCENARIO, USERSPACE, variant,
                                  model.make_strategy("random", seed), seed)  # fmt: skip
        side.outcomes[rec.outcome.label] = side.outcomes.get(rec.outcome.label, 0) + 1
        reports = [r for r in (out.lockdep if out else []) if r.kind == "circular"]
        if reports and not side.classes:
            parsed = L.parse_reports(reports[0].format())
            if parsed:
                p = parsed[0]
                side.classes, side.held, side.thread = p.classes, p.held, p.thread
                side.closing, side.label, side.text = p.closing_stack(), p.label, p.format()
    return side


def show(variant: str, real: Side, mod: Side) -> None:
    print(f"== {variant}")
    for name, side in (("real", real), ("model", mod)):
        counts = ", ".join(f"{k} x{n}" for k, n in sorted(side.outcomes.items()))
        print(f"  {name:5}  {counts}")
        if side.classes:
            print(f"         cycle: {' -> '.join([*side.classes, side.classes[0]])}")
            print(f"         closed by {side.thread} in {' <- '.join(side.closing[:6])}")
            print(f"         holding {', '.join(side.held)}")
    if real.classes and mod.classes:
        only_real, only_model = L.cycle_difference(real.classes, mod.classes)
        print(f"  only real: {', '.join(only_real) or '-'}; only model: {', '.join(only_model) or '-'}")


def claim_6_holds(real: dict[str, Side]) -> bool:
    """A cycle through open_mutex on v5.16, none on v5.19 and v6.11 (of those that ran)."""
    v516 = real.get("v5.16")
    if v516 is not None and "&disk->open_mutex" not in v516.classes:
        return False
    return all(not real[v].classes for v in ("v5.19", "v6.11") if v in real)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", action="append", choices=VARIANTS,
                        help="only this variant (repeatable; default: all five)")
    parser.add_argument("--trials", type=int, default=3, help="real trials per variant")
    parser.add_argument("--seeds", type=int, default=3, help="model runs per variant")
    parser.add_argument("--record", type=Path, help="write each guest's console to DIR")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (module builds, QEMU guests)", file=sys.stderr)
        return 2
    try:
        kernel = kbuild.build_lockdep_kernel(kbuild.terminal_progress())
    except kbuild.KernelBuildError as e:
        print(f"lockdep kernel: {e}", file=sys.stderr)
        return 2
    real: dict[str, Side] = {}
    out: dict[str, Any] = {"kernel": str(kernel.build_dir), "variants": {}}
    for variant in args.variant or VARIANTS:
        real[variant], console = real_side(kernel, variant, args.trials)
        mod = model_side(variant, args.seeds)
        if args.record:
            args.record.mkdir(parents=True, exist_ok=True)
            (args.record / f"{SCENARIO}-{variant}.console").write_text(console)
        out["variants"][variant] = {"real": real[variant].to_json(), "model": mod.to_json()}
        if not args.json:
            show(variant, real[variant], mod)
    ok = claim_6_holds(real)
    out["claim_6_real"] = ok
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"claim 6 on the real kernel: {'holds' if ok else 'NOT seen'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
