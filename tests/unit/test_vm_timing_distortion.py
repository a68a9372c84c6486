"""Which guest cells carry a timing-distortion reason: detach-open and its partitioned variant
(their prober's hold time decides the race), not detach-open[held] (the design alone does)."""

from __future__ import annotations

import pytest

from loopdev.lab.scenarios import by_name
from loopdev.vm.userspaces import PROBER_DISTORTION, USERSPACES, timing_distortion


@pytest.mark.parametrize("scenario", ["detach-open", "detach-open[partscan]"])
@pytest.mark.parametrize("row", sorted(USERSPACES))
def test_the_probers_race_is_timing_distorted_in_every_row(scenario: str, row: str) -> None:
    why = timing_distortion(scenario, by_name(scenario).udev, row)
    assert PROBER_DISTORTION in why.split("; ")


def test_held_is_not_marked_for_its_prober() -> None:
    assert timing_distortion("detach-open[held]", by_name("detach-open[held]").udev, "loopdev") == ""
