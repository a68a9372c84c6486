"""Which teardown the library asks for, from the kernel release (RESEARCH T28): LOOP_CLR_FD
from 6.11 (it defers the teardown to the last close), AUTOCLEAR + close before, and the safe
way when the release cannot be read. The behaviour on each design is tested on the model
(tests/sim/test_detach_design.py)."""

from __future__ import annotations

import pytest

from loopdev.teardown import CLR_FD_DEFERS, release_numbers


@pytest.mark.parametrize(
    ("release", "numbers", "clr_fd"),
    [
        ("6.1.0-25-amd64", (6, 1), False),  # Debian 12: the 5.19 design
        ("5.19.0", (5, 19), False),
        ("5.17.0-rc1+taskwork", (5, 17), False),
        ("6.10.14-200.fc40.x86_64", (6, 10), False),
        ("6.11.0", (6, 11), True),
        ("6.11.0+post-release-2026", (6, 11), True),
        ("6.18.44-fc-v1147", (6, 18), True),
        ("7.0.0-rc2", (7, 0), True),
    ],
)
def test_release_decides(release: str, numbers: tuple[int, int], clr_fd: bool) -> None:
    assert release_numbers(release) == numbers
    assert (numbers >= CLR_FD_DEFERS) is clr_fd


@pytest.mark.parametrize("release", ["", "6", "linux", "x.y.z", "6.x"])
def test_unreadable_releases_take_the_safe_way(release: str) -> None:
    assert release_numbers(release) is None  # autoclear_detach: None means AUTOCLEAR + close
