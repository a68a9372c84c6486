"""The lab's guests share its deadline: each gets its estimate's share of the time left when it
starts, so a slow machine cuts every column a little and none is left unstarted."""

from __future__ import annotations

import pytest

from loopdev.vm.timeshare import MIN_SECONDS, TAIL_SECONDS, TimeShare


def test_guests_that_fit_get_what_they_need_and_the_rest_shares_what_is_left() -> None:
    share = TimeShare(deadline=300.0, slots=2, estimates=[60, 60, 60, 10])
    first = share.start(0, now=0.0)
    second = share.start(1, now=0.0)
    assert first is not None and second is not None
    assert first >= 60 and second >= 60  # 600 slot-seconds for 190 seconds of guests
    share.finish(0)
    third = share.start(2, now=70.0)
    assert third is not None and third >= 60


def test_a_machine_slower_than_the_estimates_cuts_every_guest_a_little() -> None:
    share = TimeShare(deadline=100.0, slots=2, estimates=[60, 60, 60, 10])
    b0 = share.start(0, now=0.0)
    b1 = share.start(1, now=0.0)
    assert b0 == pytest.approx(200 * 60 / 190)
    assert b1 is not None and b1 < b0  # guest 0's budget is counted as taken
    share.finish(0)
    b2 = share.start(2, now=b0)
    assert b2 is not None and b2 <= 100.0 - b0  # never past the deadline
    share.finish(1)
    b3 = share.start(3, now=b0 + 2)
    assert b3 is not None and b3 >= MIN_SECONDS  # the last, small guest still runs
    assert b0 + 2 + b3 <= 100.0 + TAIL_SECONDS + MIN_SECONDS


def test_too_late_to_start_is_none() -> None:
    share = TimeShare(deadline=100.0, slots=2, estimates=[10])
    assert share.start(0, now=100.0 - MIN_SECONDS + 1) is None
