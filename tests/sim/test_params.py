"""The model's timing parameters: named values with their measured range; a run takes its
overrides from the scheduler, records them in its replay token, and a replay runs with them
again; a sweep's worker sets them for the schedulers it creates."""

from __future__ import annotations

import pytest

from loopdev.sim import params
from loopdev.sim.params import PARAMS, RCU_GRACE_PERIOD
from loopdev.sim.rcu import JIFFY, grace_period
from loopdev.sim.sched import Scheduler, Thread, param
from loopdev.sim.strategy import RandomWalk, Replay, decode_token_params


def measured(overrides: dict[str, float] | None = None, seed: int = 0) -> tuple[float, str]:
    """One run that waits one grace period; (its length, the run's token)."""
    s = Scheduler(RandomWalk(seed), params=overrides)
    got: list[float] = []

    def body() -> None:
        got.append(grace_period())

    s.spawn(Thread("t", body))
    out = s.run()
    assert out.ok, out.describe()
    return got[0], out.token


def test_every_parameter_has_a_source_and_a_range_around_its_default() -> None:
    for p in PARAMS.values():
        assert p.source and p.what and p.unit
        assert p.lo <= p.default <= p.hi or p.name == params.KILL_DELAY, p


def test_default_grace_period_is_the_last_jiffy_before_the_parameter() -> None:
    default = PARAMS[RCU_GRACE_PERIOD].default
    for seed in range(20):
        gp, _ = measured(seed=seed)
        assert default - JIFFY < gp <= default + 1e-12


def test_an_override_changes_the_run_and_travels_in_its_token() -> None:
    gp, token = measured({RCU_GRACE_PERIOD: 0.1})
    assert 0.1 - JIFFY < gp <= 0.1
    assert decode_token_params(token)[4] == {RCU_GRACE_PERIOD: 0.1}
    again = Scheduler(Replay(token))  # no params given: the token's
    assert again.params == {RCU_GRACE_PERIOD: 0.1}
    _, default_token = measured()
    assert decode_token_params(default_token)[4] == {}  # a default run's token is as before


def test_overriding_sets_the_parameters_of_schedulers_created_inside() -> None:
    with params.overriding({RCU_GRACE_PERIOD: 0.05}):
        assert Scheduler(RandomWalk(0)).params == {RCU_GRACE_PERIOD: 0.05}
        assert param(RCU_GRACE_PERIOD) == 0.05  # outside a run: the active override
    assert Scheduler(RandomWalk(0)).params == {}
    assert param(RCU_GRACE_PERIOD) == PARAMS[RCU_GRACE_PERIOD].default


def test_unknown_or_negative_values_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown model parameter"):
        Scheduler(RandomWalk(0), params={"rcu.nope": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        params.check({RCU_GRACE_PERIOD: -1.0})
