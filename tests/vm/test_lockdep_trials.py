"""How a real lockdep report becomes a trial's outcome, without a guest: the kernel log as the
agent reads it (``/dev/kmsg`` records), the verdict of a trial, its way through the event
stream into the lab's cell, and a hung guest's report taken from its console. The reports are
the real ones recorded from the lockdep kernel (tests/vm/data)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import DATA

from loopdev.lab.outcome import PASS, CellKey, CellResult, Outcome, RunRecord
from loopdev.vm import kmsg
from loopdev.vm import lockdep_report as L
from loopdev.vm.guest import HANG, OK, GuestRun
from loopdev.vm.protocol import CellPlan, Event, Job, record_from_json, record_to_json
from loopdev.vm.results import fold

CONSOLE = (DATA / "resume-chain-v5.16.console").read_text(errors="replace")
(REPORT,) = L.parse_reports(CONSOLE)
KEY = CellKey("resume-chain", "loopdev", "v5.16", "vm")
JOB = Job(cells=[CellPlan("resume-chain", "loopdev", 3)], trial_timeout=60)


def _as_kmsg_records(console: str) -> list[bytes]:
    """The console's kernel lines as /dev/kmsg hands them out (``prio,seq,usec,-;text``)."""
    records = []
    for seq, line in enumerate(L._raw_lines(console)):
        stamp = L._uptime(line)
        if stamp is None:
            continue
        text = L._STAMP.sub("", line).replace("\\", "\\x5c")
        records.append(f"4,{seq},{round(stamp * 1e6)},-;{text}\n".encode())
    return records


def test_kmsg_records_read_back_as_the_same_report() -> None:
    lines = [line for raw in _as_kmsg_records(CONSOLE) for line in kmsg.record_lines(raw)]
    (report,) = L.parse_reports("\n".join(lines))
    assert report.classes == REPORT.classes
    assert report.thread == REPORT.thread and report.held == REPORT.held
    assert report.uptime == REPORT.uptime


def test_kmsg_escapes_and_continuation_lines() -> None:
    raw = b"6,17,5140900,-;a\\x5cb\\x0asecond line\n SUBSYSTEM=block\n DEVICE=b7:0\n"
    assert kmsg.record_lines(raw) == ["[    5.140900] a\\b", "[    5.140900] second line"]
    assert kmsg.record_lines(b"garbage") == []


def test_lockdep_state_from_proc(tmp_path: Path) -> None:
    stats = tmp_path / "lockdep_stats"
    stats.write_text(" lock-classes:  599 [max: 8192]\n debug_locks:        1\n")
    assert kmsg.lockdep_on(str(stats)) is True
    stats.write_text(" debug_locks:                     0\n")
    assert kmsg.lockdep_on(str(stats)) is False
    assert kmsg.lockdep_on(str(tmp_path / "absent")) is None  # a kernel without lockdep


def test_a_passing_trial_with_a_report_is_that_reports_lockdep_outcome() -> None:
    rec = L.trial_verdict(RunRecord(0, PASS), [REPORT], True)
    assert rec.outcome.kind == "lockdep"
    assert rec.outcome.label == f"lockdep: {REPORT.label}"
    assert rec.outcome.label.startswith("lockdep: circular (&disk->open_mutex, &lo->lo_mutex, ")
    assert rec.lockdep_kinds == (REPORT.label,)
    assert "*** DEADLOCK ***" in rec.lockdep and "python/47 is trying to acquire" in rec.lockdep


def test_a_failure_stays_a_failure_and_keeps_the_report() -> None:
    failed = RunRecord(1, Outcome("fail", "write /sys/power/resume: EBUSY", "busy"))
    rec = L.trial_verdict(failed, [REPORT], True)
    assert rec.outcome == failed.outcome and rec.lockdep_kinds == (REPORT.label,)


def test_passes_after_lockdep_switched_off_give_no_verdict() -> None:
    rec = L.trial_verdict(RunRecord(2, PASS), [], False)
    assert rec.outcome.kind == "unsupported" and "reports once per boot" in rec.outcome.message
    assert L.trial_verdict(RunRecord(2, PASS), [], True).outcome == PASS
    assert L.trial_verdict(RunRecord(2, PASS), [], None).outcome == PASS  # no lockdep at all


def test_records_carry_their_report_through_the_event_stream() -> None:
    rec = L.trial_verdict(RunRecord(0, PASS, seconds=1.5), [REPORT], True)
    back = record_from_json(json.loads(json.dumps(record_to_json(rec))))
    assert back.outcome == rec.outcome and back.lockdep == rec.lockdep
    assert back.lockdep_kinds == rec.lockdep_kinds
    plain = record_from_json(record_to_json(RunRecord(3, PASS)))
    assert plain.lockdep == "" and plain.lockdep_kinds == ()


def _start(i: int, uptime: float) -> Event:
    return Event("start", {"scenario": "resume-chain", "userspace": "loopdev", "i": i,
                           "uptime": uptime})  # fmt: skip


def _trial(rec: RunRecord) -> Event:
    return Event("trial", {"scenario": "resume-chain", "userspace": "loopdev",
                           **record_to_json(rec)})  # fmt: skip


def test_cell_counts_lockdep_like_the_model_and_keeps_the_text_for_display() -> None:
    first = L.trial_verdict(RunRecord(0, PASS), [REPORT], True)
    later = [L.trial_verdict(RunRecord(i, PASS), [], False) for i in (1, 2)]
    events = [e for i, r in enumerate([first, *later]) for e in (_start(i, 5.0 + i), _trial(r))]
    run = GuestRun(OK, events, "", "", "", 20.0, 8.0)
    cell = fold(run, JOB, "v5.16", "real")[KEY]
    assert cell.counts == {f"lockdep: {REPORT.label}": 1, "unsupported": 2}
    assert cell.checked == 1 and cell.failures == 1 and cell.lockdep == {REPORT.label: 1}
    (shown,) = L.example_reports(cell)[f"lockdep: {REPORT.label}"]
    assert shown.classes == REPORT.classes and shown.closing_stack()[0] == "__flush_workqueue"


def test_a_hung_trial_gets_the_report_its_console_printed_after_it_started() -> None:
    """A guest that hangs never reads the kernel log after the trial: the report comes from
    the console instead, by its time stamp."""
    hang_log = (DATA / "hang-dmesg.txt").read_text()
    assert REPORT.uptime is not None
    events = [_start(0, REPORT.uptime - 1.0)]
    run = GuestRun(HANG, events, CONSOLE, CONSOLE + hang_log, "", 80.0, 8.0)
    cell = fold(run, JOB, "v5.16", "real")[KEY]
    assert set(cell.counts) == {"deadlock: hang"} and cell.lockdep == {REPORT.label: 1}
    example = cell.examples["deadlock: hang"]
    assert "python/47 is trying to acquire" in example.lockdep
    # the hung tasks' whole stacks follow the one-line summary
    assert "python (state D):\n  " in example.message


def test_model_cells_read_the_same_way() -> None:
    from loopdev.lab import model

    cell = CellResult(CellKey("resume-chain", "loopdev", "v5.16", "vm"))
    rec, _ = model.run_once("resume-chain", "loopdev", "v5.16", model.make_strategy("random", 0), 0)
    cell.add(rec)
    reports = L.example_reports(cell)[rec.outcome.label]
    assert reports and "&disk->open_mutex" in reports[0].classes
