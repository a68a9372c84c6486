"""``loopdev lab sweep``: claim 1's cell (v5.17-rc1, mount-loop without udev, util-linux 2.37)
fails when the rundown's queue freeze (one RCU grace period) outlasts mount(8)'s start-up
(1-3 ms) and never when the grace period is shorter; a failure found at one value replays
from its token with that value."""

from __future__ import annotations

import json

import pytest

from loopdev.lab import model
from loopdev.lab.claims import claim, judge
from loopdev.lab.outcome import CellKey
from loopdev.lab.sweep import (
    SweepResult,
    SweepSpec,
    format_table,
    parse_spec,
    run_sweep,
    sweep_keys,
)
from loopdev.sim import params
from loopdev.sim.params import EXEC_TIME, RCU_GRACE_PERIOD

CLAIM1_NO_UDEV = CellKey("mount-loop", "util-linux-2.37", "v5.17-rc1")


@pytest.fixture(scope="module")
def gp_sweep() -> SweepResult:
    # 0, 8 and 16 ms: no freeze at all, a freeze of 4-8 ms, the measured 12-16 ms
    return run_sweep(SweepSpec(RCU_GRACE_PERIOD, 0.0, 0.016, 3), [CLAIM1_NO_UDEV], budget=12,
                     workers=1)  # fmt: skip


def test_the_grace_period_moves_claim_1s_cell(gp_sweep: SweepResult) -> None:
    assert gp_sweep.values == [0.0, 0.008, 0.016]
    assert gp_sweep.rate(CLAIM1_NO_UDEV, 0.0) == 0  # shorter than mount(8)'s start-up
    assert gp_sweep.rate(CLAIM1_NO_UDEV, 0.008) == 1.0  # longer: every run fails
    assert gp_sweep.rate(CLAIM1_NO_UDEV, 0.016) == 1.0
    assert gp_sweep.flips(CLAIM1_NO_UDEV)
    table = format_table(gp_sweep)
    assert "! mount-loop / util-linux-2.37 / v5.17-rc1" in table and "16ms*" in table
    series = json.loads(json.dumps(gp_sweep.to_json()))["cells"][0]["series"]
    assert [s["failure_rate"] for s in series] == [0.0, 1.0, 1.0]


def test_a_failure_replays_with_the_swept_value(gp_sweep: SweepResult) -> None:
    cell = gp_sweep.cells[0.008][CLAIM1_NO_UDEV]
    ex = cell.examples["fail: mount: EIO"]
    rec, out = model.replay(ex.token, *(CLAIM1_NO_UDEV.scenario, CLAIM1_NO_UDEV.userspace,
                                        CLAIM1_NO_UDEV.column))  # fmt: skip
    assert out is not None and out.params == {RCU_GRACE_PERIOD: 0.008}
    assert rec.outcome.label == "fail: mount: EIO"
    assert params.active() == {}  # nothing leaks out of the sweep


def test_claim_1_is_not_timing_dependent_inside_the_measured_range(gp_sweep: SweepResult) -> None:
    c1 = claim(1)
    base = gp_sweep.cells[0.016]
    verdict = judge(c1, base, {RCU_GRACE_PERIOD: gp_sweep.runs()})
    assert not verdict.timing_dependent  # 0 ms and 8 ms lie outside 13.3-17 ms


def test_spec_parsing() -> None:
    assert parse_spec("rcu.grace_period=0..20ms:5") == SweepSpec(RCU_GRACE_PERIOD, 0.0, 0.02, 5)
    s = parse_spec(f"{EXEC_TIME}=1ms..0.01s")
    assert (s.lo, s.hi, s.steps) == (0.001, 0.01, 5)
    assert parse_spec(f"{EXEC_TIME}=0..0:1").values() == [0.0]
    for bad in ("nope=0..1", "rcu.grace_period=2..1", "rcu.grace_period"):
        with pytest.raises(ValueError):
            parse_spec(bad)


def test_keys_keep_scenarios_to_their_userspaces() -> None:
    keys = sweep_keys(["resume-chain", "mount-loop"], ["v5.16"], ["loopdev", "util-linux-2.37"])
    assert CellKey("resume-chain", "util-linux-2.37", "v5.16") not in keys
    assert CellKey("resume-chain", "loopdev", "v5.16") in keys
    assert CellKey("mount-loop", "util-linux-2.37", "v5.16") in keys
