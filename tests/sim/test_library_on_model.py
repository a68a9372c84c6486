"""The loopdev library run unchanged on the model kernel (v6.11, modelled udevd on): the lab's
library-users scenario, where attach + detach and mount_image + umount run in two concurrent
user processes, explored with random walks and PCT. A CI-sized budget here;
benchmarks/bench_model.py runs the full 10,000.
"""

from __future__ import annotations

from collections import Counter

import pytest

from loopdev.control import attach
from loopdev.lab import model
from loopdev.lab.hunt import hunt, random, replay, scenario_failure, scenario_setup
from loopdev.lab.scenarios import by_name
from loopdev.lab.scenarios.base import Env
from loopdev.lab.scenarios.library_users import USERS, LibraryUsers
from loopdev.lab.userspace.mkfs import make_image
from loopdev.sim.kernel import SimKernel
from loopdev.sim.sched import Scheduler
from loopdev.sim.strategy import PCT, RandomWalk

BUDGET = 300
CELL = ("loopdev", "v6.11")


@pytest.mark.parametrize("strategy", ["random", "pct"])
def test_library_attach_detach_mount_umount_never_fails_on_v6_11_with_udev(strategy: str) -> None:
    explore_with = random(0) if strategy == "random" else PCT(0, depth=3)
    setup = scenario_setup("library-users", *CELL)
    h = hunt(setup, explore_with, BUDGET, scenario_failure, stop_on_failure=False)
    assert h.runs == BUDGET and not h.model_errors, h.model_errors[:1]
    assert h.first is None, f"{h.describe()}\nreplay token: {h.token}"


def test_udev_really_gets_in_the_way() -> None:
    """The exploration is meaningful: udevd holds the devices the library binds (the library
    waits for its LOCK_EX to be dropped, udev requeues), and probes them."""
    seen: Counter[str] = Counter()
    for seed in range(40):
        sched = Scheduler(RandomWalk(seed), trace=False)
        run = model.start(sched, by_name("library-users"), *CELL)
        outcome, _ = model.outcome_of(sched.run(), run)
        assert outcome.kind == "pass", outcome
        assert run.udevd is not None
        stats = run.udevd.stats
        seen["locked"] += stats.locked > 0
        seen["probed"] += any(stats.probed.values())
        seen["stale"] += stats.stale > 0
    assert seen["locked"] and seen["probed"] and seen["stale"], seen


def test_a_leaked_device_is_a_failure_and_replays() -> None:
    """The scenario sees what a user would: a user that attaches and never detaches leaves a
    bound device behind, reported with a token that replays to the same verdict."""

    def leaky(env: Env) -> None:
        k = env.kernel
        make_image(k, env.path("leak.img"), "ext4", 64 << 10)
        attach(env.path("leak.img"), kernel=k).relinquish()  # attached, never detached

    setup = scenario_setup(LibraryUsers(users=(("leaky", leaky), *USERS)), *CELL)
    h = hunt(setup, random(0), 3, scenario_failure)
    msg = h.failures.most_common(1)[0][0] if h.failures else ""
    assert h.first == 0 and "leftovers" in msg and "still bound" in msg, h.describe()
    assert replay(setup, h.token, scenario_failure) == msg


def test_block_size_and_direct_io_changes_through_the_port_on_the_model() -> None:
    """LoopDevice.set_block_size / set_direct_io read back what the modelled driver applied."""
    seen: dict[str, object] = {}

    def main(k: SimKernel) -> None:
        make_image(k, "/tmp/bs.img", "ext4", 64 << 10)
        with attach("/tmp/bs.img", kernel=k) as dev:
            dev.set_block_size(4096)
            seen["bs"] = dev.block_size
            seen["info_bs"] = dev.info().block_size
            dev.set_direct_io(True)
            seen["dio on"] = (dev.direct_io, dev.info().direct_io)
            dev.set_direct_io(False)
            seen["dio off"] = (dev.direct_io, dev.info().direct_io)

    sched = Scheduler(RandomWalk(0), trace=False)
    k = SimKernel.boot("v6.11", sched, nr_loop=2)
    k.spawn(lambda: main(k), "main")
    assert sched.run().ok
    assert seen["bs"] == 4096 and seen["info_bs"] == 4096
    assert seen["dio on"] == (True, True) and seen["dio off"] == (False, False), seen
