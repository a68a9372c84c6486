"""How busy other work kept this machine's CPUs while a real cell ran.

The real races' rates follow the machine's load (docs/findings.md: iouring-kill's EBUSY rate
on 6.18 is 55/60 idle and with one CPU spinning, 23/60 with both), and the lab cannot stop
other people's work; so it measures it: the CPU time the whole machine spent busy
(``/proc/stat``) minus what the lab's own process and the programs it waited for used
(``os.times``), as a share of the CPU capacity that elapsed. Kernel threads that serve the
lab's own I/O (loop workers, io_uring and ext4 kworkers) count as other work: idle, a cell
reads 4-12%; with one of two CPUs spinning 51%, with both 81%.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

#: from this share of the CPUs used by other work on, a real cell's timing is not what an
#: otherwise idle machine gives (one of two CPUs' worth)
LOADED = 0.5


@dataclass(frozen=True)
class CpuTimes:
    """Cumulative CPU seconds at one moment."""

    busy: float  # all CPUs, not idle: user, nice, system, irq, softirq, steal
    capacity: float  # all CPUs: busy + idle + iowait
    own: float  # this process and the children it has waited for


def sample() -> CpuTimes:
    """The machine's and this process's CPU times now."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    hz = os.sysconf("SC_CLK_TCK")
    busy = (user + nice + system + irq + softirq + steal) / hz
    t = os.times()
    return CpuTimes(busy, busy + (idle + iowait) / hz,
                    t.user + t.system + t.children_user + t.children_system)  # fmt: skip


def others_share(before: CpuTimes, after: CpuTimes) -> float | None:
    """The share (0-1) of the CPU capacity between two samples that other work used; None
    when no time passed."""
    capacity = after.capacity - before.capacity
    if capacity <= 0:
        return None
    others = (after.busy - before.busy) - (after.own - before.own)
    return min(1.0, max(0.0, others / capacity))


def distortion(share: float | None) -> str:
    """Why a real cell's timing is not an idle machine's ('' when it is)."""
    if share is None or share < LOADED:
        return ""
    return (f"other work kept this machine's CPUs {share * 100:.0f}% busy while it ran "
            "(the races' timing shifts under load)")  # fmt: skip
