"""The model's ``uname -r``: every variant answers with the release of the upstream design it
models, so code that chooses by kernel release (the library's detach) sees the right design."""

from __future__ import annotations

import re

import pytest
from simkit import run_model

from loopdev.sim.kernel import SimKernel
from loopdev.sim.loop import VARIANTS

#: what each design is, by the release that carries it
EXPECTED = {
    "v5.16": "5.16.0",
    "v5.17-rc1": "5.17.0-rc1",
    "taskwork": "5.17.0-rc1+taskwork",
    "taskwork-openwait": "5.17.0-rc1+taskwork-openwait",
    "post-open-release": "5.17.0-rc1+post-open-release",
    "v5.17": "5.17.0",
    "v5.19": "5.19.0",
    "v6.11": "6.11.0",
    "post-release-2026": "6.11.0+post-release-2026",
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_release_names_the_design(variant: str) -> None:
    def body(k: SimKernel, notes: dict[str, object]) -> None:
        notes["release"] = k.uname_release()

    run = run_model(variant, body)
    assert run.ok and run.notes["release"] == EXPECTED[variant]


def test_every_variant_has_a_release() -> None:
    # a new variant must say which release it models (or is a proposal on top of)
    assert set(EXPECTED) == set(VARIANTS)
    for release in EXPECTED.values():
        assert re.fullmatch(r"\d+\.\d+\.0(-rc\d+)?(\+[a-z0-9-]+)?", release)
