"""The model's timing parameters: every duration the model takes from the real world, with
the measurement it comes from and the range that measurement allows.

Kernel code in the model takes no virtual time; the durations that decide races come from
here, by name (``loopdev.sim.sched.param(name)`` inside a run), never from numbers spread
through the code. A run may override any of them (``Scheduler(..., params=...)``, or
:func:`overriding` for every scheduler created in a block): sweeps vary one parameter
across its range and see which outcomes move (``loopdev lab sweep``). Overrides are part of
a run's identity: the replay token records them (:mod:`loopdev.sim.strategy`), so a replay
runs with the same values.

docs/findings.md, "Measurements behind the model's numbers", has the measurements in full.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Param:
    """One named duration: its default, the range the measurement allows, its source."""

    name: str
    default: float
    lo: float  # the measured range: a verdict that flips inside it is timing-dependent
    hi: float
    unit: str
    what: str  # what the model does with it
    source: str  # where the figures come from

    def describe(self) -> str:
        return (
            f"{self.name} = {_fmt(self.default, self.unit)} (measured "
            f"{_fmt(self.lo, self.unit)}-{_fmt(self.hi, self.unit)}): {self.what}"
        )


def _fmt(v: float, unit: str) -> str:
    if unit == "s":
        if v >= 0.1:
            return f"{v:g} s"
        if v >= 1e-4:
            return f"{v * 1e3:g} ms"
        return f"{v * 1e6:g} us"
    return f"{v:g} {unit}".strip()


RCU_GRACE_PERIOD = "rcu.grace_period"
EXEC_TIME = "userspace.exec_time"
UDEV_PROBE_DELAY = "udev.probe_delay"
UDEV_HOLD_TIME = "udev.hold_time"
LOOP_SERVICE_TIME = "loop.service_time"
FIO_EXEC_TIME = "fio.exec_time"
FIO_EXIT_MM = "fio.exit_mm"
KILL_DELAY = "iouring_kill.kill_delay"

PARAMS: dict[str, Param] = {
    p.name: p
    for p in (
        Param(
            RCU_GRACE_PERIOD, 0.016, 0.0133, 0.017, "s",
            "the longest wait of a queue freeze for its RCU grace period (percpu_ref_kill of "
            "q_usage_counter); each wait ends within the last jiffy before it (the tick "
            "phase), so it is uniform in (value - 1 jiffy, value]",
            "freeze-only ioctls (LOOP_SET_DIRECT_IO, LOOP_SET_BLOCK_SIZE) on 6.18, HZ=250, "
            "2 vCPUs: 13.3-17 ms, median 13.9 ms (LOOP_SET_CAPACITY, no freeze: 0.03 ms)",
        ),
        Param(
            EXEC_TIME, 0.003, 0.0028, 0.0036, "s",
            "the longest start-up of a util-linux program (fork + exec + ld.so + library "
            "init before its first interesting system call); each start-up is uniform in "
            "[value/3, value]",
            "umount(8) of util-linux 2.38.1 on 6.18, fork to its umount2 call (tracefs, 300 "
            "runs, idle): p10 1.85 ms, median 2.09 ms, p99 2.84 ms, max 5.46 ms; whole "
            "cycles: losetup -f --show + losetup -d 3.6 ms, mount -o loop,ro + umount 7.3 ms",
        ),
        Param(
            UDEV_PROBE_DELAY, 0.002, 0.001, 0.005, "s",
            "the longest time a udevd worker spends on the rules before its blkid probe "
            "opens the device (uniform in [0, value])",
            "systemd-udevd 252 on 6.18: its last close of a loop device came 1-10 ms after "
            "the attach (probe delay plus hold time)",
        ),
        Param(
            UDEV_HOLD_TIME, 0.003, 0.001, 0.005, "s",
            "the longest time a udevd worker keeps the device open after its probe, until "
            "it closes its lock fd (uniform in [0, value]); that close may be the last",
            "as udev.probe_delay: last close 1-10 ms after the attach",
        ),
        Param(
            LOOP_SERVICE_TIME, 7e-6, 6e-6, 8.4e-6, "s",
            "what the loop worker spends on one 4 KiB request (do_req_filebacked: the read "
            "or write of the backing file); requests are served one after another",
            "fio, 4 KiB random O_DIRECT I/O on /dev/loopN with io_uring at iodepth 64 "
            "(the worker saturated: 1/IOPS): reads 6.0 us (backing file on ext4) and "
            "6.6 us (tmpfs), writes 8.4 us and 6.1 us; at iodepth 1 (psync) a request's "
            "whole latency was 11-40 us (p50)",
        ),
        Param(
            FIO_EXEC_TIME, 0.28, 0.25, 0.31, "s",
            "fio's start-up until its job has the data file and its ring open",
            "fio 3.33 --ioengine=io_uring --thread on 6.18: 0.25-0.31 s from spawn until "
            "/proc/PID/fd shows both",
        ),
        Param(
            FIO_EXIT_MM, 0.0022, 0.0021, 0.0032, "s",
            "exit_mm of a killed fio: tearing down its address space, before exit_files "
            "releases its files (and, through the ring file, starts io_ring_exit_work)",
            "tracefs on 6.18: sched_process_exit of fio's thread-group leader (emitted "
            "just before exit_mm since 6.16) to io_ring_exit_work being queued: "
            "2.13-2.32 ms idle (8 kills), 3.0-3.2 ms with both CPUs busy",
        ),
        Param(
            KILL_DELAY, 0.01, 0.0, 0.03, "s",
            "iouring-kill: the longest time from fio's ring being ready to the SIGKILL "
            "(uniform in [0, value]; the same on both backends); any value during fio's "
            "run, where 64 reads are always in flight",
            "the lab's choice (fio runs 30 s on the real kernel): not a measurement",
        ),
    )
}  # fmt: skip

_overrides: dict[str, float] = {}


def check(overrides: Mapping[str, float]) -> dict[str, float]:
    """Validated overrides (names known, values non-negative); ValueError otherwise."""
    out: dict[str, float] = {}
    for name, v in overrides.items():
        if name not in PARAMS:
            raise ValueError(f"unknown model parameter {name!r}; known: {', '.join(PARAMS)}")
        if not v >= 0:
            raise ValueError(f"{name} must be >= 0, not {v!r}")
        out[name] = float(v)
    return out


def active() -> dict[str, float]:
    """The overrides a new :class:`~loopdev.sim.sched.Scheduler` starts with."""
    return dict(_overrides)


@contextlib.contextmanager
def overriding(overrides: Mapping[str, float]) -> Iterator[None]:
    """Schedulers created inside the block run with ``overrides`` (a sweep's worker sets
    them around the runs of one parameter value)."""
    global _overrides
    saved = _overrides
    _overrides = {**saved, **check(overrides)}
    try:
        yield
    finally:
        _overrides = saved


def value(name: str, run: Mapping[str, float] | None = None) -> float:
    """Parameter ``name``: a run's override (``run``), else the active override, else its
    default. Inside a model run use ``loopdev.sim.sched.param``, which passes the run's."""
    if run is not None:
        v = run.get(name)
        if v is not None:
            return v
    elif name in _overrides:
        return _overrides[name]
    return PARAMS[name].default


__all__ = ["PARAMS", "Param", "active", "check", "overriding", "value"]
