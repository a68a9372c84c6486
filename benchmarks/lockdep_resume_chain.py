"""Claim 6 on a real lockdep kernel: the lab's resume-chain scenario on the real v5.16,
v5.17-rc1, v5.17, v5.19 and v6.11 loop modules, each in a QEMU guest booted with the lockdep
kernel (docs/lockdep-kernel.md), beside the model's report for the same cell.

Run (as root): .venv/bin/python benchmarks/lockdep_resume_chain.py [--trials N]
    [--variant V ...] [--seeds N] [--record DIR] [--json]

The kernel is built first when the cache does not have it (about 10 CPU-minutes); each guest
then takes ~10-30 s. The guests are the lab's own (loopdev.vm.run.run_variants with
GuestOptions(kernel="lockdep")): a trial during which lockdep reported is that cell's
``lockdep`` outcome, keyed like the model's. Lockdep reports once per boot, so the trials after
the first report of a guest have no lockdep verdict (``unsupported``).
Exit status 0 when the real kernel shows claim 6's shape (a cycle through
``&disk->open_mutex`` on v5.16, none on v5.19 and v6.11), 1 otherwise, 2 when it cannot run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loopdev.lab import model
from loopdev.lab.outcome import CellKey, CellResult
from loopdev.vm import kbuild
from loopdev.vm import lockdep_report as L
from loopdev.vm.guest import GuestOptions
from loopdev.vm.run import VariantResult, run_variants

SCENARIO, USERSPACE = "resume-chain", "loopdev"
VARIANTS = ("v5.16", "v5.17-rc1", "v5.17", "v5.19", "v6.11")


@dataclass
class Side:
    """What one backend (the real kernel or the model) showed for one variant."""

    outcomes: dict[str, int] = field(default_factory=dict)
    report: L.KernelLockdepReport | None = None  # the first circular report

    @property
    def classes(self) -> tuple[str, ...]:
        return self.report.classes if self.report else ()

    def to_json(self) -> dict[str, Any]:
        r = self.report
        return {
            "outcomes": self.outcomes,
            "cycle": list(r.classes) if r else [],
            "held": list(r.held) if r else [],
            "thread": r.thread if r else "",
            "closing_stack": list(r.closing_stack()) if r else [],
            "label": r.label if r else "",
        }


def side_of(cell: CellResult) -> Side:
    """Outcome counts and the first circular report of a cell (real or model)."""
    side = Side(outcomes=dict(cell.counts))
    for reports in L.example_reports(cell).values():
        circular = [r for r in reports if r.kind == "circular"]
        if circular and side.report is None:
            side.report = circular[0]
    return side


def real_sides(variants: list[str], trials: int) -> list[tuple[str, Side, VariantResult]]:
    """Each variant's module under the lockdep kernel, one guest per variant, two at once."""
    results = run_variants(variants, [SCENARIO], [USERSPACE], trials,
                           options=GuestOptions(kernel="lockdep"), parallel=2)  # fmt: skip
    out = []
    for r in results:
        cell = r.cells.get(CellKey(SCENARIO, USERSPACE, r.column, "vm"))
        side = side_of(cell) if cell else Side({f"n/a: {r.unavailable}": 1})
        for g in r.guests:
            if g.status != "ok":
                key = f"guest: {g.status}"
                side.outcomes[key] = side.outcomes.get(key, 0) + 1
        out.append((r.column, side, r))
    return out


def model_side(variant: str, seeds: int) -> Side:
    """The model's runs of the same cell."""
    cell = CellResult(CellKey(SCENARIO, USERSPACE, variant, "vm"))
    for seed in range(seeds):
        rec, _out = model.run_once(SCENARIO, USERSPACE, variant,
                                   model.make_strategy("random", seed), seed)  # fmt: skip
        cell.add(rec)
    return side_of(cell)


def show(variant: str, real: Side, mod: Side) -> None:
    print(f"== {variant}")
    for name, side in (("real", real), ("model", mod)):
        counts = ", ".join(f"{k} x{n}" for k, n in sorted(side.outcomes.items()))
        print(f"  {name:5}  {counts}")
        if side.report is not None:
            for line in side.report.summary()[1:]:
                print(f"         {line}")
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
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
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
    for variant, side, result in real_sides(list(args.variant or VARIANTS), args.trials):
        real[variant] = side
        mod = model_side(variant, args.seeds)
        if args.record:
            args.record.mkdir(parents=True, exist_ok=True)
            console = "".join(g.console for g in result.guests)
            (args.record / f"{SCENARIO}-{variant}.console").write_text(console)
        out["variants"][variant] = {"real": side.to_json(), "model": mod.to_json()}
        if not args.json:
            show(variant, side, mod)
    ok = claim_6_holds(real)
    out["claim_6_real"] = ok
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"claim 6 on the real kernel: {'holds' if ok else 'NOT seen'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
