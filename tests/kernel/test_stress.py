"""Concurrency and crashes: parallel attach/detach, and kill -9 in the middle of attach."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest
from rk import ImageMaker, Tracker

import loopdev
from loopdev.linux import default_kernel


def _worker(img: str, rounds: int, log: str) -> None:
    with open(log, "w") as out:
        for _ in range(rounds):
            dev = loopdev.attach(img)
            info = dev.info()
            if (info.backing_dev, info.backing_ino) != (dev.backing_dev, dev.backing_ino):
                raise SystemExit(3)  # somebody else's device
            out.write(f"{dev.number} {dev.diskseq}\n")
            dev.detach()


def _parallel(
    make_image: ImageMaker, tmp_path: Path, tracker: Tracker, procs: int, rounds: int
) -> None:
    k = default_kernel()
    images = [make_image("raw", size_mib=1) for _ in range(procs)]
    logs = [str(tmp_path / f"log{i}") for i in range(procs)]
    workers = [
        k.spawn(lambda i=i: _worker(str(images[i]), rounds, logs[i]), f"w{i}") for i in range(procs)
    ]
    codes = [w.wait(120) for w in workers]
    assert codes == [0] * procs
    seen: list[tuple[str, str]] = []
    for log in logs:
        seen += [tuple(line.split()) for line in Path(log).read_text().splitlines()]  # type: ignore[misc]
    assert len(seen) == procs * rounds
    assert len(set(seen)) == len(seen), "a device binding (number, diskseq) was handed out twice"
    assert tracker.leaks() == []


def test_parallel_attach_detach(make_image: ImageMaker, tmp_path: Path, tracker: Tracker) -> None:
    _parallel(make_image, tmp_path, tracker, procs=8, rounds=25)


@pytest.mark.slow
def test_parallel_attach_detach_full(
    make_image: ImageMaker, tmp_path: Path, tracker: Tracker
) -> None:
    _parallel(make_image, tmp_path, tracker, procs=8, rounds=200)


def _attach_and_hang(img: str, autoclear: bool) -> None:
    loopdev.attach(
        img, offset=4096, autoclear=autoclear
    ).relinquish() if autoclear else loopdev.attach(img, offset=4096)
    time.sleep(60)


@pytest.mark.parametrize("autoclear", [True, False])
def test_kill_9_during_attach_leaves_nothing_half_done(
    make_image: ImageMaker, tracker: Tracker, autoclear: bool
) -> None:
    """kill -9 at a random moment of attach: with autoclear nothing is ever left; without it
    a device is left only when LOOP_CONFIGURE completed, and then it is fully configured
    (the same device a finished attach leaves; the window is CONFIGURE → return)."""
    k = default_kernel()
    img = make_image("raw", size_mib=2)
    left_complete = 0
    for _ in range(25):
        p = k.spawn(lambda: _attach_and_hang(str(img), autoclear), "attacher")
        time.sleep(random.uniform(0, 0.004))
        p.kill(signal.SIGKILL)
        assert p.wait(10) == -signal.SIGKILL
        left = tracker.wait_clean(0.2) if autoclear else tracker.our_loops()
        if autoclear:
            assert left == []
            continue
        assert len(left) <= 1
        for lp in left:
            assert lp.offset == 4096 and not lp.flags & 4
            loopdev.detach(lp.path)
            left_complete += 1
    assert tracker.leaks() == []
    print(f"completed attaches left by a kill: {left_complete}/25")
    assert os.path.exists("/dev/loop-control")
