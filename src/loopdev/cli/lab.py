"""``loopdev lab``: the race lab.

* ``loopdev lab`` — the model matrix (every scenario x userspace x model variant), plus, as root,
  the column for the running kernel; a table on stdout, a progress bar on stderr (on a terminal),
  ``--json`` for machines, ``--html FILE`` for the report page.
* ``loopdev lab claims`` — the same run, shown as RESEARCH §3's claims with verdicts and evidence.
* ``loopdev lab replay SCENARIO/USERSPACE/VARIANT/TOKEN`` — re-run one recorded schedule, print
  its trace; ``--svg``/``--perfetto`` write its diagram and trace JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from loopdev.lab import model
from loopdev.lab.backends import USERSPACES
from loopdev.lab.cells import DEFAULT_BUDGET, LabConfig, default_workers
from loopdev.lab.runner import run_lab, to_json
from loopdev.lab.scenarios import all_scenarios, optional_scenarios


def add_parser(subparsers: Any) -> None:
    """Register ``lab`` with the main parser's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "lab",
        help="run the race lab (model variants, and this kernel when root)",
        description=__doc__,
        epilog="examples:\n"
        "  loopdev lab --html report.html\n"
        "  loopdev lab claims --no-real\n"
        "  loopdev lab --scenario nested-umount+udev --variant v5.17-rc1 --budget 200\n"
        "  loopdev lab replay 'nested-umount/util-linux-2.37/v5.17-rc1/random:0:...' --svg d.svg",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", nargs="?", choices=("run", "claims", "replay"), default="run")
    p.add_argument("token", nargs="?", help="for replay: SCENARIO/USERSPACE/VARIANT/TOKEN")
    p.add_argument(
        "--budget", type=int, default=None,
        help=f"runs per model cell (default: {DEFAULT_BUDGET}, fewer in costly scenarios' "
        "cells; see COSTLY_BUDGETS)",
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
        help="only this model variant (repeatable): " + ", ".join(model.VARIANTS),
    )
    p.add_argument(
        "--userspace",
        action="append",
        help="only this userspace (repeatable): " + ", ".join(USERSPACES),
    )
    p.add_argument("--no-real", action="store_true", help="skip the column for this kernel")
    p.add_argument(
        "--real-scale", type=float, default=1.0, help="scale the real-kernel trial counts"
    )
    p.add_argument("--time-limit", type=float, default=120.0, help="seconds for the model part")
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
        real_scale=args.real_scale,
        time_limit=args.time_limit,
    )
    if args.scenario:
        cfg.scenarios = list(args.scenario)
    if args.variant:
        cfg.variants = list(args.variant)
    if args.userspace:
        cfg.userspaces = list(args.userspace)
    return cfg


def run(args: argparse.Namespace) -> int:
    """Entry point of ``loopdev lab``."""
    if args.action == "replay":
        return _replay(args)
    from loopdev.lab import html, report

    progress = report.Progress(enabled=args.progress)
    result = run_lab(_config(args), progress_total=progress.set_total, progress=progress.advance)
    progress.finish()
    if args.html:
        html.write(result, args.html)
    if args.json:
        print(json.dumps(to_json(result), indent=1, sort_keys=True))
    elif args.action == "claims":
        print(report.claims_text(result))
        if result.gaps:
            print("\nmodel gaps:")
            for g in result.gaps:
                print(f"  - {g}")
        for n in result.notes:
            print(f"note: {n}")
        print(report.run_line(result))
    else:
        print(report.summary_text(result))
        print()
        print(report.failures_text(result))
        sys.stdout.flush()
    if args.html:
        print(f"report: {args.html}", file=sys.stderr)
    return 0


def _replay(args: argparse.Namespace) -> int:
    from loopdev.lab import diagram

    if not args.token or args.token.count("/") < 3:
        print("loopdev: lab replay needs SCENARIO/USERSPACE/VARIANT/TOKEN", file=sys.stderr)
        return 2
    scenario, userspace, variant, token = args.token.split("/", 3)
    rec, out = model.replay(token, scenario, userspace, variant)
    if out is not None:
        sys.stdout.write(out.trace.render_text())
    print(f"outcome: {rec.outcome.label}")
    if rec.outcome.message:
        print(rec.outcome.message)
    if rec.lockdep:
        print(rec.lockdep)
    events = out.trace.to_json() if out is not None else rec.events or []
    if args.svg:
        with open(args.svg, "w", encoding="utf-8") as f:
            f.write(diagram.sequence_svg(events, title=f"{scenario} on {variant}"))
    if args.perfetto:
        with open(args.perfetto, "w", encoding="utf-8") as f:
            f.write(diagram.chrome_trace_json(events, process=f"{scenario} on {variant}"))
    return 0
