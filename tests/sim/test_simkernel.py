"""SimKernel as a port: processes (spawn/wait/kill/run), virtual time and chance, replay."""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Sequence
from typing import Any

import pytest
from simkit import attach, errno_of, is_bound, make_image, run_model

from loopdev import abi
from loopdev.kernel import Kernel, RunResult
from loopdev.sim.kernel import SimKernel
from loopdev.sim.sched import Scheduler
from loopdev.sim.strategy import RandomWalk, Replay


def test_simkernel_is_a_kernel() -> None:
    k = SimKernel.boot("v6.11", Scheduler(RandomWalk(0)))
    assert isinstance(k, Kernel)
    assert k.name == "model:v6.11"


def test_spawn_wait_and_fork_inherits_fds() -> None:
    def main(k: SimKernel, notes: dict[str, Any]) -> None:
        fd = k.open("/tmp/f", abi.O_RDWR | abi.O_CREAT)

        def child() -> None:
            k.write(fd, b"from child")
            k.sleep(1.0)

        p = k.spawn(child, "child")
        notes["running"] = p.wait(0.5)
        notes["status"] = p.wait()
        notes["t"] = k.monotonic()
        notes["data"] = k.pread(fd, 20, 0)
        notes["pid"] = (p.pid, k.getpid(), k.geteuid())

    run = run_model("v6.11", main)
    assert run.ok, run.outcome.describe()
    assert run.notes["running"] is None and run.notes["status"] == 0
    assert run.notes["t"] == pytest.approx(1.0)
    assert run.notes["data"] == b"from child"
    child_pid, my_pid, euid = run.notes["pid"]
    assert child_pid != my_pid and euid == 0


def test_sigkill_closes_the_victims_files_and_releases_its_device() -> None:
    def main(k: SimKernel, notes: dict[str, Any]) -> None:
        make_image(k, "/tmp/a.img")
        n, lfd = attach(k, "/tmp/a.img", flags=abi.LO_FLAGS_AUTOCLEAR)

        def victim() -> None:
            k.open(f"/dev/loop{n}", abi.O_RDONLY)
            k.sleep(100.0)

        p = k.spawn(victim, "victim")
        k.sleep(0.01)
        k.close(lfd)  # autoclear on last close: the victim now holds the last opener
        notes["bound_before"] = is_bound(k, n)
        k.kill(p.pid, 9)
        notes["status"] = p.wait()
        notes["bound_after"] = is_bound(k, n)
        notes["esrch"] = errno_of(lambda: k.kill(p.pid, 9))

    run = run_model("v6.11", main)
    assert run.ok, run.outcome.describe()
    assert run.notes["bound_before"] is True
    assert run.notes["status"] == -9
    assert run.notes["bound_after"] is False
    assert run.notes["esrch"] == errno.ESRCH


def test_run_looks_up_registered_programs() -> None:
    def true_(k: SimKernel, argv: Sequence[str], stdin: bytes | None) -> int:
        return 0

    def echo(k: SimKernel, argv: Sequence[str], stdin: bytes | None) -> RunResult:
        return RunResult(3, " ".join(argv[1:]) + "\n", "")

    def main(k: SimKernel, notes: dict[str, Any]) -> None:
        k.register_program("true", true_)
        k.register_program("echo", echo)
        notes["true"] = k.run(["/bin/true"])
        notes["echo"] = k.run(["echo", "a", "b"])
        notes["missing"] = errno_of(lambda: k.run(["nope"]))

    run = run_model("v6.11", main)
    assert run.ok, run.outcome.describe()
    assert run.notes["true"] == RunResult(0)
    assert run.notes["echo"] == RunResult(3, "a b\n", "")
    assert run.notes["missing"] == errno.ENOENT


def test_run_timeout_kills_the_program() -> None:
    def hang(k: SimKernel, argv: Sequence[str], stdin: bytes | None) -> int:
        k.sleep(1000)
        return 0

    def main(k: SimKernel, notes: dict[str, Any]) -> None:
        k.register_program("hang", hang)
        try:
            k.run(["hang"], timeout=2.0)
        except subprocess.TimeoutExpired:
            notes["timeout_at"] = k.monotonic()

    run = run_model("v6.11", main)
    assert run.ok, run.outcome.describe()
    assert run.notes["timeout_at"] == pytest.approx(2.0)


def test_random_comes_from_the_choice_stream() -> None:
    def main(k: SimKernel, notes: dict[str, Any]) -> None:
        notes["r"] = [k.random() for _ in range(5)]

    a = run_model("v6.11", main, seed=3).notes["r"]
    b = run_model("v6.11", main, seed=3).notes["r"]
    c = run_model("v6.11", main, seed=4).notes["r"]
    assert a == b != c
    assert all(0.0 <= x < 1.0 for x in a)


def program(k: SimKernel, notes: dict[str, Any]) -> None:
    make_image(k, "/tmp/a.img")
    n, lfd = attach(k, "/tmp/a.img", flags=abi.LO_FLAGS_AUTOCLEAR)
    k.mkdir("/mnt/x")
    k.mount(f"/dev/loop{n}", "/mnt/x", "ext2")
    k.close(lfd)
    k.umount2("/mnt/x")


def opener(k: SimKernel, notes: dict[str, Any]) -> None:
    sock = k.uevent_open()
    while (ev := k.uevent_read(sock, 0.05)) is not None:
        if ev.action == "change":
            try:
                fd = k.open(f"/dev/{ev.devname}", abi.O_RDONLY)
            except OSError:
                continue
            k.sleep(0.001 * k.random())
            k.close(fd)


@pytest.mark.parametrize("variant", ["v5.17-rc1", "v6.11"])
def test_replay_token_reproduces_the_trace(variant: str) -> None:
    first = run_model(variant, program, seed=11, helpers=(("udevd", opener),))
    assert first.ok, first.outcome.describe()
    again = run_model(
        variant, program, helpers=(("udevd", opener),), strategy=Replay(first.outcome.token)
    )
    assert again.ok
    assert again.outcome.trace.render_text() == first.outcome.trace.render_text()
    assert len(first.outcome.trace) > 100
