"""Lockdep reports parsed from real guest consoles (tests/vm/data, recorded from the lockdep
kernel running the lab's resume-chain scenario on each variant's loop.ko; see data/README.md),
and set beside the model's report for the same scenario and variant."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from loopdev.vm import lockdep_report as L

DATA = Path(__file__).parent / "data"


def _console(variant: str) -> str:
    return (DATA / f"resume-chain-{variant}.console").read_text(errors="replace")


def test_v5_16_cycle_closes_in_the_synchronous_teardown_under_open_mutex_and_lo_mutex() -> None:
    (report,) = L.parse_reports(_console("v5.16"))
    assert report.kind == "circular"
    assert report.title == "WARNING: possible circular locking dependency detected"
    assert report.classes == (
        "(wq_completion)loop1",
        "(work_completion)(&lo->rootcg_work)",
        "sb_writers#7",
        "&p->lock",
        "&of->mutex",
        "system_transition_mutex/1",
        "&disk->open_mutex",
        "&lo->lo_mutex",
    )
    assert report.thread == "python/47"
    assert report.call == "__flush_workqueue+0x9d/0x4d0"
    assert report.held == ("&disk->open_mutex", "&lo->lo_mutex")
    assert report.closing_stack()[:5] == (
        "__flush_workqueue", "drain_workqueue", "destroy_workqueue", "__loop_clr_fd",
        "blkdev_put",
    )  # fmt: skip
    # each entry's stack is the one that took that class: #6 open_mutex in swsusp_check
    assert "swsusp_check" in report.stacks[6]
    assert "do_sendfile" in report.stacks[4]
    assert report.cycle().startswith("(wq_completion)loop1 -> (work_completion)")
    assert report.cycle().endswith("&lo->lo_mutex -> (wq_completion)loop1")


def test_v5_17_cycle_has_no_lo_mutex() -> None:
    (report,) = L.parse_reports(_console("v5.17"))
    assert report.held == ("&disk->open_mutex",)
    assert report.classes[-1] == "&disk->open_mutex"
    assert "&lo->lo_mutex" not in report.classes
    assert len(report.classes) == 7


@pytest.mark.parametrize("variant", ["v5.17-rc1", "v5.19", "v6.11"])
def test_no_report_where_real_lockdep_saw_no_cycle(variant: str) -> None:
    console = _console(variant)
    assert "TRIAL 2 pass" in console  # the scenario ran to the end on this boot
    assert L.parse_reports(console) == []
    assert L.lockdep_outcome([]) is None


def test_outcome_is_keyed_like_the_models_and_matches_claim_6() -> None:
    outcome, text = L.lockdep_outcome(L.parse_reports(_console("v5.16"))) or (None, "")
    assert outcome is not None and outcome.kind == "lockdep"
    assert outcome.label.startswith("lockdep: circular (&disk->open_mutex, &lo->lo_mutex, ")
    assert outcome.message == "WARNING: possible circular locking dependency detected"
    assert re.match(r"^lockdep: circular \(.*open_mutex", outcome.label)  # claims.py's test
    assert "*** DEADLOCK ***" in text and "[   11." not in text  # time stamps removed


def test_console_noise_and_carriage_returns_do_not_hide_a_report() -> None:
    console = _console("v5.17").replace("\n", "\r\n")
    console = console.replace("-> #3 ", "guest agent says hi\r\n-> #3 ", 1)
    (report,) = L.parse_reports(console)
    assert len(report.classes) == 7


def test_class_names_normalize_across_instances_and_subclasses() -> None:
    assert L.normalized_class("sb_writers#7") == "sb_writers"
    assert L.normalized_class("sb_writers#ext4") == "sb_writers"
    assert L.normalized_class("system_transition_mutex/1") == "system_transition_mutex"
    assert L.normalized_class("(wq_completion)loop1") == "(wq_completion)loop1"


def _model_cycles(variant: str) -> list[tuple[str, ...]]:
    from loopdev.lab import model

    _rec, out = model.run_once(
        "resume-chain", "loopdev", variant, model.make_strategy("random", 0), 0
    )
    assert out is not None
    return [r.classes for r in out.lockdep if r.kind == "circular"]


@pytest.mark.parametrize("variant", ["v5.16", "v5.17"])
def test_the_models_cycle_is_the_real_one(variant: str) -> None:
    """The model records a dependency only from the most recently taken held lock, as the
    kernel's check_prevs_add does, so its open_mutex cycle is the real 6.1 one, class for
    class and in the same order (lock class names normalized: sb_writers#7 is the model's
    sb_writers#ext4)."""
    (real,) = L.parse_reports(_console(variant))
    cycles = [c for c in _model_cycles(variant) if "&disk->open_mutex" in c]
    assert cycles, "the model reports no open_mutex cycle"
    assert L.cycle_difference(real.classes, cycles[0]) == ((), ())
    norm = [L.normalized_class(c) for c in cycles[0]]
    real_norm = [L.normalized_class(c) for c in real.classes]
    i = norm.index(real_norm[0])
    assert norm[i:] + norm[:i] == real_norm


def test_neither_the_model_nor_6_1_report_a_cycle_on_v5_17_rc1() -> None:
    """v5.17-rc1's rundown runs in a worker and no longer holds lo_mutex: no cycle through
    open_mutex; the queue freeze became a lockdep map only in 6.13 (f1be1788a32e), so neither
    the real 6.1 kernel nor the model (which models the older block layer) reports one."""
    assert L.parse_reports(_console("v5.17-rc1")) == []
    assert _model_cycles("v5.17-rc1") == []
