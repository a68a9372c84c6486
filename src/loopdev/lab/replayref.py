"""Replay references: ``SCENARIO/USERSPACE/VARIANT/TOKEN`` names one model run.

TOKEN is either a full replay token (``random:0:eNp...``: strategy, seed and the recorded
choice stream; replays on any version of the model that makes the same choices) or a short,
seed-based handle (``random:0``, ``pct:1d3``: the strategy and the run's seed; the model is
deterministic, so on the same version of loopdev it reruns the very same run). The terminal
prints handles, ``--json`` and the HTML keep the full tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from loopdev.lab import model
from loopdev.lab.outcome import RunRecord
from loopdev.sim.sched import RunOutcome
from loopdev.sim.strategy import PCT, RandomWalk, Strategy, decode_token_params

_HANDLE = re.compile(r"^(random):(\d+)$|^(pct):(\d+)d(\d+)$")


@dataclass(frozen=True)
class ReplayRef:
    """One model run to replay."""

    scenario: str
    userspace: str
    variant: str
    token: str

    def __str__(self) -> str:
        return f"{self.scenario}/{self.userspace}/{self.variant}/{self.token}"

    @property
    def is_handle(self) -> bool:
        return _HANDLE.match(self.token) is not None


def short_handle(token: str) -> str:
    """``random:0`` for ``random:0:eNp...``: the strategy and seed part of a token, when that
    alone reruns the run; otherwise the token itself (a bounded DFS run, a run with timing
    parameters of its own, which a seed does not bring back)."""
    parts = token.split(":", 2)
    handle = ":".join(parts[:2])
    if len(parts) < 3 or not _HANDLE.match(handle):
        return token
    try:
        if decode_token_params(token)[4]:
            return token
    except ValueError:
        return token
    return handle


def ref_text(scenario: str, userspace: str, variant: str, token: str, *, short: bool) -> str:
    """The reference ``loopdev lab replay`` takes, with the short handle or the full token."""
    return str(ReplayRef(scenario, userspace, variant, short_handle(token) if short else token))


def parse(text: str) -> ReplayRef:
    """``SCENARIO/USERSPACE/VARIANT/TOKEN``; ValueError if it is not one."""
    parts = text.strip().split("/", 3)
    if len(parts) != 4 or not all(parts):
        raise ValueError("a replay reference is SCENARIO/USERSPACE/VARIANT/TOKEN, e.g. "
                         "mount-loop/util-linux-2.37/v5.17-rc1/random:0")  # fmt: skip
    return ReplayRef(*parts)


def _strategy(handle: str) -> tuple[Strategy, int]:
    m = _HANDLE.match(handle)
    if m is None:
        raise ValueError(f"not a replay handle: {handle!r} (random:SEED or pct:SEEDdDEPTH)")
    if m.group(1):
        seed = int(m.group(2))
        return RandomWalk(seed), seed
    seed = int(m.group(4))
    return PCT(seed, depth=int(m.group(5))), seed


def replay(ref: ReplayRef) -> tuple[RunRecord, RunOutcome | None]:
    """Re-run the referenced run with tracing on: the recorded choices of a full token, or
    the seed of a handle."""
    if not ref.is_handle:
        return model.replay(ref.token, ref.scenario, ref.userspace, ref.variant)
    strategy, seed = _strategy(ref.token)
    return model.run_once(ref.scenario, ref.userspace, ref.variant, strategy, seed, trace=True)
