"""loopdev lab: the race lab.

  loopdev lab            the matrix: every scenario x userspace x loop-driver variant, the
                         model's cell beside the real one (as root: each variant's loop.c in a
                         QEMU guest, and this machine's kernel), the claims, the fidelity check
                         and one line per kind of failure; --json for machines, --html FILE for
                         the report page, --verbose for every failure
  loopdev lab claims     the same run, shown as the 2022 thread's claims with their evidence
  loopdev lab replay REF re-run one model run and print its trace; REF is
                         SCENARIO/USERSPACE/VARIANT/HANDLE (random:0, pct:1d3, as printed) or
                         .../TOKEN (the full replay token of --json and the HTML);
                         --svg and --perfetto write its diagram and trace JSON
  loopdev lab sweep PARAM=LO..HI[:STEPS]
                         model cells across a timing parameter (rcu.grace_period=0..20ms:5),
                         with --scenario, --variant, --userspace, --budget, --json

docs/lab.md explains the variants, the claims, the scenarios and how to read a report.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from loopdev.lab import model
from loopdev.lab.backends import USERSPACES
from loopdev.lab.cells import DEFAULT_BUDGET, TOTAL_TIME_LIMIT, LabConfig, default_workers
from loopdev.lab.runner import run_lab, to_json
from loopdev.lab.scenarios import all_scenarios, optional_scenarios


def add_parser(subparsers: Any) -> None:
    """Register ``lab`` with the main parser's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "lab",
        help="run the race lab (model variants; as root also real kernels)",
        description=__doc__,
        epilog="examples:\n"
        "  loopdev lab --html report.html\n"
        "  loopdev lab claims --no-real\n"
        "  loopdev lab --scenario nested-umount+udev --variant v5.17-rc1 --budget 200\n"
        "  loopdev lab --loop-patch my-fix.patch --label my-fix --no-vm\n"
        "  loopdev lab replay mount-loop/util-linux-2.37/v5.17-rc1/random:0 --svg d.svg",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", nargs="?", choices=("run", "claims", "replay", "sweep"),
                   default="run")  # fmt: skip
    p.add_argument("token", nargs="?", help="for replay: SCENARIO/USERSPACE/VARIANT/HANDLE; "
                   "for sweep: PARAM=LO..HI[:STEPS]")  # fmt: skip
    p.add_argument(
        "--budget", type=int, default=None,
        help=f"runs per model cell (default: {DEFAULT_BUDGET}, fewer in costly scenarios' "
        "cells)",
    )  # fmt: skip
    p.add_argument(
        "--strategy", choices=model.STRATEGIES, default="portfolio",
        help="model exploration: random walk, PCT, bounded DFS, or a portfolio of random and "
        "PCT (default)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="first seed (runs use seed, seed+1, ...)")
    p.add_argument(
        "--workers", type=int, default=default_workers(),
        help="model worker processes (default: one per CPU)",
    )  # fmt: skip
    p.add_argument(
        "--scenario",
        action="append",
        help="only this scenario (repeatable): " + ", ".join(s.name for s in all_scenarios())
        + "; outside the default matrix: " + ", ".join(s.name for s in optional_scenarios()),
    )
    p.add_argument(
        "--variant",
        action="append",
        help="only this variant (repeatable): " + ", ".join(model.VARIANTS),
    )
    p.add_argument(
        "--userspace",
        action="append",
        help="only this userspace (repeatable): " + ", ".join(USERSPACES),
    )
    p.add_argument("--no-real", action="store_true",
                   help="the model alone: no real kernel (neither guests nor this machine's)")  # fmt: skip
    p.add_argument("--no-vm", action="store_true",
                   help="no guests for the variants (this machine's kernel still runs as root)")  # fmt: skip
    p.add_argument("--no-host", action="store_true",
                   help="not this machine's kernel (the guests still run as root)")  # fmt: skip
    p.add_argument(
        "--real-scale", type=float, default=1.0,
        help="scale every real cell's trials (guests and this kernel) and the guests' time "
        "limits, e.g. 3 for three times the trials",
    )  # fmt: skip
    p.add_argument("--time-limit", type=float, default=120.0, help="seconds for the model part")
    p.add_argument(
        "--vm-time-limit", type=float, default=None,
        help="seconds the guests may take (default 210 x --real-scale; they also stop in time "
        f"for the whole run to stay within {TOTAL_TIME_LIMIT:.0f} s x --real-scale); trials "
        "left out show as cut",
    )  # fmt: skip
    p.add_argument(
        "--loop-patch", metavar="FILE",
        help="a patch (-p1, as git diff writes it) to the 6.1 drivers/block/loop.c: built and "
        "run in guests as one more real column, without a model cell",
    )  # fmt: skip
    p.add_argument("--label", help="the column name of --loop-patch (default: the file's name)")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="every finding and every failure with its full replay token")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--html", metavar="FILE", help="write the HTML report")
    p.add_argument("--svg", metavar="FILE", help="replay: write the sequence diagram")
    p.add_argument("--perfetto", metavar="FILE", help="replay: write the Chrome/Perfetto JSON")
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None,
        help="draw a progress bar on stderr (default: when stderr is a terminal)",
    )  # fmt: skip


def _config(args: argparse.Namespace) -> LabConfig:
    cfg = LabConfig(
        strategy=args.strategy,
        budget=args.budget,
        seed=args.seed,
        workers=args.workers,
        real=not args.no_real,
        vm=not args.no_vm,
        host=not args.no_host,
        real_scale=args.real_scale,
        time_limit=args.time_limit,
        vm_time_limit=args.vm_time_limit,
    )
    if args.scenario:
        cfg.scenarios = list(args.scenario)
    if args.variant:
        cfg.variants = list(args.variant)
    if args.userspace:
        cfg.userspaces = list(args.userspace)
    if args.loop_patch:
        cfg.loop_patches = [(args.loop_patch, args.label or Path(args.loop_patch).stem)]
    return cfg


def _check_patch(cfg: LabConfig) -> str | None:
    """Build a --loop-patch before the lab runs: the error to print, or None."""
    from loopdev.lab import vmcells
    from loopdev.vm.build import ModuleBuildError, PatchError

    for path, label in cfg.loop_patches:
        if not os.path.isfile(path):
            return f"--loop-patch {path}: no such file"
        if label in model.VARIANTS or label == "this kernel":
            return f"--label {label}: a variant's name; choose another column name"
        why = vmcells.unavailable()
        if why is not None:
            return f"--loop-patch runs the patched loop.c in guests, which cannot run here: {why}"
        lockdep = "resume-chain" in cfg.scenarios and vmcells.lockdep_kernel_built()
        try:
            vmcells.build_patch(vmcells.UserPatch(Path(path), label), lockdep=lockdep)
        except (PatchError, ModuleBuildError) as e:
            return f"--loop-patch {path}: {e}"
    return None


def run(args: argparse.Namespace) -> int:
    """Entry point of ``loopdev lab``."""
    if args.action == "replay":
        return _replay(args)
    if args.action == "sweep":
        from loopdev.lab import sweep

        if not args.token:
            print("loopdev: lab sweep needs PARAM=LO..HI[:STEPS]", file=sys.stderr)
            return 2
        return sweep.run_from_args(args, args.token)
    if args.label and not args.loop_patch:
        print("loopdev: lab: --label names a --loop-patch column", file=sys.stderr)
        return 2
    from loopdev.lab import html, report

    cfg = _config(args)
    problem = _check_patch(cfg)
    if problem is not None:
        print(f"loopdev: lab: {problem}", file=sys.stderr)
        return 2
    progress = report.Progress(enabled=args.progress)
    try:
        result = run_lab(cfg, progress=progress)
    finally:
        progress.finish()
    if args.html:
        html.write(result, args.html)
    if args.json:
        print(json.dumps(to_json(result), indent=1, sort_keys=True))
    elif args.action == "claims":
        print(report.claims_text(result))
        print()
        print(report.fidelity_text(result, verbose=args.verbose))
        for n in result.notes:
            print(f"note: {n}")
        print(report.run_line(result))
    else:
        print(report.summary_text(result, verbose=args.verbose))
        sys.stdout.flush()
    if args.html:
        print(f"report: {args.html}", file=sys.stderr)
    return 0


def _replay(args: argparse.Namespace) -> int:
    from loopdev.lab import diagram, replayref

    try:
        ref = replayref.parse(args.token or "")
        rec, out = replayref.replay(ref)
    except ValueError as e:
        print(f"loopdev: lab replay: {e}", file=sys.stderr)
        return 2
    if out is not None:
        sys.stdout.write(out.trace.render_text())
    print(f"outcome: {rec.outcome.label}")
    if rec.outcome.message:
        print(rec.outcome.message)
    if rec.lockdep:
        print(rec.lockdep)
    if rec.token and ref.is_handle:
        print(f"token: {rec.token}")
    events = out.trace.to_json() if out is not None else rec.events or []
    title = f"{ref.scenario} on {ref.variant}"
    if args.svg:
        with open(args.svg, "w", encoding="utf-8") as f:
            f.write(diagram.sequence_svg(events, title=title))
    if args.perfetto:
        with open(args.perfetto, "w", encoding="utf-8") as f:
            f.write(diagram.chrome_trace_json(events, process=title))
    return 0
