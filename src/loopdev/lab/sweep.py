"""``loopdev lab sweep PARAM=LO..HI[:STEPS]``: run model cells across one timing parameter
(:mod:`loopdev.sim.params`) and show each cell's failure rate against it.

Each value of the parameter is one run of the cells, exactly as the lab runs them (the same
seeds for every value, so the values differ in the parameter alone), with the parameter
overridden in every model run (the override is part of each run's replay token). The result
is a table (one row per cell, one column per value), JSON (the same, with per-value counts:
what the HTML plots) and, for the claims view, the per-value cells
(:meth:`SweepResult.runs`): a verdict that flips inside the parameter's measured range is
timing-dependent.

From the command line: ``loopdev lab sweep rcu.grace_period=0..20ms:5 --scenario mount-loop
--variant v5.17-rc1 --userspace util-linux-2.37``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from loopdev.lab import model
from loopdev.lab.cells import run_cells
from loopdev.lab.claims import SweepRuns
from loopdev.lab.outcome import CellKey, CellResult
from loopdev.lab.scenarios import all_scenarios, by_name
from loopdev.sim import params

#: runs per cell and value when not given
DEFAULT_BUDGET = 20
_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
_SPEC = re.compile(
    r"^(?P<name>[\w.]+)=(?P<lo>[0-9.eE+-]+)(?P<lo_unit>s|ms|us)?\.\.(?P<hi>[0-9.eE+-]+)"
    r"(?P<hi_unit>s|ms|us)?(?::(?P<steps>\d+))?$"
)


@dataclass(frozen=True)
class SweepSpec:
    """``PARAM=LO..HI[:STEPS]``: ``steps`` evenly spaced values from ``lo`` to ``hi``."""

    param: str
    lo: float
    hi: float
    steps: int = 5

    def values(self) -> list[float]:
        if self.steps <= 1 or self.lo == self.hi:
            return [self.lo]
        step = (self.hi - self.lo) / (self.steps - 1)
        return [round(self.lo + i * step, 12) for i in range(self.steps)]


def parse_spec(text: str) -> SweepSpec:
    """``rcu.grace_period=0..0.02:5``; values in seconds, or with ``ms``/``us``/``s``
    (``0..20ms`` applies the unit to both ends). ValueError naming what is wrong."""
    m = _SPEC.match(text.strip())
    if m is None:
        raise ValueError(f"not PARAM=LO..HI[:STEPS]: {text!r}")
    name = m["name"]
    if name not in params.PARAMS:
        raise ValueError(f"unknown model parameter {name!r}; known: {', '.join(params.PARAMS)}")
    unit = m["hi_unit"] or m["lo_unit"] or "s"
    lo = float(m["lo"]) * _UNITS[m["lo_unit"] or unit]
    hi = float(m["hi"]) * _UNITS[unit]
    steps = int(m["steps"]) if m["steps"] else 5
    if lo < 0 or hi < lo or steps < 1:
        raise ValueError(f"need 0 <= LO <= HI and STEPS >= 1: {text!r}")
    return SweepSpec(name, lo, hi, steps)


@dataclass
class SweepResult:
    """The cells of every value of one parameter."""

    spec: SweepSpec
    keys: list[CellKey]
    cells: dict[float, dict[CellKey, CellResult]] = field(default_factory=dict)

    @property
    def values(self) -> list[float]:
        return sorted(self.cells)

    def runs(self) -> SweepRuns:
        """What the claims view reads (:func:`loopdev.lab.claims.judge` ``sweeps=``)."""
        return [(v, self.cells[v]) for v in self.values]

    def rate(self, key: CellKey, value: float) -> float | None:
        cell = self.cells.get(value, {}).get(key)
        return cell.failure_rate if cell is not None else None

    def flips(self, key: CellKey) -> bool:
        """Whether the cell fails at some values and never at others."""
        seen = {self.rate(key, v) == 0 for v in self.values if self.rate(key, v) is not None}
        return len(seen) == 2

    def to_json(self) -> dict[str, Any]:
        p = params.PARAMS[self.spec.param]
        return {
            "param": p.name,
            "unit": p.unit,
            "default": p.default,
            "measured_range": [p.lo, p.hi],
            "source": p.source,
            "values": self.values,
            "cells": [
                {
                    "scenario": k.scenario,
                    "userspace": k.userspace,
                    "column": k.column,
                    "backend": k.backend,
                    "flips": self.flips(k),
                    "series": [
                        {
                            "value": v,
                            "failure_rate": self.rate(k, v),
                            "failures": c.failures,
                            "checked": c.checked,
                            "counts": dict(sorted(c.counts.items())),
                        }
                        for v in self.values
                        if (c := self.cells[v].get(k)) is not None
                    ],
                }
                for k in self.keys
            ],
        }


def sweep_keys(
    scenarios: Sequence[str] | None = None,
    variants: Sequence[str] | None = None,
    userspaces: Sequence[str] | None = None,
) -> list[CellKey]:
    """The model cells of a sweep: every scenario x variant x userspace asked for (a scenario
    that runs only with some userspaces keeps to them)."""
    names = list(scenarios) if scenarios else [s.name for s in all_scenarios()]
    rows = list(userspaces) if userspaces else list(model.MODEL_USERSPACES)
    cols = list(variants) if variants else list(model.VARIANTS)
    keys: list[CellKey] = []
    for name in names:
        only = getattr(by_name(name), "userspaces", None)
        for row in rows:
            if only is not None and row not in only:
                continue
            keys.extend(CellKey(name, row, v) for v in cols)
    return keys


def run_sweep(
    spec: SweepSpec,
    keys: Sequence[CellKey],
    *,
    budget: int = DEFAULT_BUDGET,
    strategy: str = "portfolio",
    seed: int = 0,
    workers: int = 2,
) -> SweepResult:
    """Run ``keys`` once per value of the parameter (the same seeds each time)."""
    result = SweepResult(spec, list(keys))
    for value in spec.values():
        with params.overriding({spec.param: value}):
            result.cells[value] = run_cells(
                list(keys), budget=budget, strategy=strategy, seed=seed, workers=workers
            )
    return result


def _fmt_value(v: float, unit: str) -> str:
    if unit == "s" and v < 0.1:
        return f"{v * 1e3:g}ms" if v >= 1e-4 or v == 0 else f"{v * 1e6:g}us"
    return f"{v:g}{unit}"


def format_table(result: SweepResult) -> str:
    """Failed runs / runs with a verdict per cell and value; '*' marks values inside the
    parameter's measured range, '!' cells that flip."""
    p = params.PARAMS[result.spec.param]
    values = result.values
    heads = [
        _fmt_value(v, p.unit) + ("*" if p.lo <= v <= p.hi else "") for v in values
    ]
    label_w = max([len(str(k)) for k in result.keys] + [4])
    col_w = max([len(h) for h in heads] + [7])
    lines = [
        f"sweep of {p.describe()}",
        f"  source: {p.source}",
        "  * = inside the measured range; ! = the cell fails at some values and not at others",
        "",
        " " * (label_w + 2) + "  ".join(h.rjust(col_w) for h in heads),
    ]
    for k in result.keys:
        row = []
        for v in values:
            c = result.cells[v].get(k)
            row.append((f"{c.failures}/{c.checked}" if c is not None else "-").rjust(col_w))
        flag = "!" if result.flips(k) else " "
        lines.append(f"{flag} {str(k).ljust(label_w)}  " + "  ".join(row))
    return "\n".join(lines)


def run_from_args(args: argparse.Namespace, spec_text: str | None = None) -> int:
    """Run a sweep from ``loopdev lab``'s parsed arguments, the spec in ``spec_text`` (or
    ``args.spec``); prints the table or JSON; the exit status."""
    try:
        spec = parse_spec(spec_text if spec_text is not None else args.spec)
        keys = sweep_keys(args.scenario, args.variant, args.userspace)
    except (ValueError, KeyError) as e:
        print(f"loopdev: lab sweep: {e}", file=sys.stderr)
        return 2
    result = run_sweep(
        spec, keys, budget=args.budget or DEFAULT_BUDGET, strategy=args.strategy,
        seed=args.seed, workers=args.workers,
    )  # fmt: skip
    if args.json:
        print(json.dumps(result.to_json(), indent=1))
    else:
        print(format_table(result))
    return 0
