"""The lab's iouring-kill rows on the model: fio is started as its own process (SIGKILL kills
fio), killed at a point the scheduler's choice stream picks, and what umount then sees emerges
from the model's io_uring (RESEARCH §6)."""

from __future__ import annotations

import signal
from collections import Counter

from loopdev.lab import model
from loopdev.lab.scenarios import by_name
from loopdev.sim.sched import Scheduler
from loopdev.sim.strategy import RandomWalk

UL = "util-linux-2.38"
EBUSY = "fail: umount: EBUSY"


def outcomes(scenario: str, row: str, seeds: range) -> tuple[Counter[str], dict[str, str]]:
    counts: Counter[str] = Counter()
    tokens: dict[str, str] = {}
    for seed in seeds:
        rec, _ = model.run_once(
            scenario, row, "v6.11", model.make_strategy("portfolio", seed), seed
        )
        counts[rec.outcome.label] += 1
        tokens.setdefault(rec.outcome.label, rec.token)
    return counts, tokens


def test_the_started_program_is_the_process_a_kill_ends() -> None:
    sched = Scheduler(RandomWalk(1), trace=False)
    k, _ = model.boot(sched, "v6.11", UL, nr_loop=2)
    seen: dict[str, object] = {}

    def main() -> None:
        k.mkdir("/tmp/d")
        start = model._model_starter(k)
        p = start(["fio", "--name=r", "--filename=/tmp/d/f", "--size=64k", "--time_based",
                   "--runtime=30", "--ioengine=io_uring", "--thinktime=1000"], "fio")  # fmt: skip
        k.sleep(0.3)  # past fio's start-up (fio.exec_time)
        seen["alive"] = bool(k.listdir(f"/proc/{p.pid}/fd"))  # fio has files open
        p.kill(signal.SIGKILL)
        seen["status"] = p.wait()
        try:
            k.listdir(f"/proc/{p.pid}/fd")
            seen["gone"] = False
        except OSError:
            seen["gone"] = True

    k.spawn(main, "lab")
    out = sched.run()
    assert out.ok, out.describe()
    assert seen == {"alive": True, "status": -signal.SIGKILL, "gone": True}


def test_util_linux_umount_after_the_kill_gets_ebusy_in_some_schedule_and_replays() -> None:
    counts, tokens = outcomes("iouring-kill", UL, range(0, 80))
    assert counts[EBUSY] > 0, counts
    assert set(counts) <= {"pass", EBUSY}, counts
    again, _ = model.replay(tokens[EBUSY], "iouring-kill", UL, "v6.11")
    assert again.outcome.label == EBUSY


def test_loopdev_umount_waits_out_the_references() -> None:
    counts, _ = outcomes("iouring-kill", "loopdev", range(0, 40))
    assert counts == Counter({"pass": 40}), counts


def test_exit_cancel_wait_row_never_fails() -> None:
    scenario = by_name("iouring-kill[exit-cancel-wait]")
    assert scenario.model_only  # the real kernel's io_uring is what it is
    counts, _ = outcomes(scenario.name, UL, range(0, 80))
    assert counts == Counter({"pass": 80}), counts
