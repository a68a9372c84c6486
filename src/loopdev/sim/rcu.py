"""Time the kernel really spends waiting: jiffies and RCU grace periods, on the virtual clock.

Kernel code in the model takes no virtual time, except where the real kernel waits for
something that is itself measured in timer ticks. Two such waits shape the loop races:

* an **RCU grace period** (``synchronize_rcu``, and ``percpu_ref_kill`` → switch to atomic mode,
  which is what ``blk_mq_freeze_queue`` waits for before the queue's usage counter can reach
  zero: block/blk-sysfs.c notes that shutting down a registered queue "takes measureable
  wallclock time as RCU grace periods are involved"): about three jiffies plus the tick phase,
  which is what an ioctl that only freezes and unfreezes a loop device's queue takes on a
  real kernel (docs/findings.md has the figures);
* a **timer of one jiffy** (``schedule_delayed_work(&delayed_fput_work, 1)``): it fires at the
  next tick, anywhere from just after now to one jiffy later.

Durations come from the scheduler's choice stream (replayable), never from a wall clock.
"""

from __future__ import annotations

from loopdev.sim import sched as _sched

#: CONFIG_HZ of the machines the lab runs on (Debian's default)
HZ = 250
JIFFY = 1.0 / HZ
#: a grace period ends this many full ticks after it starts, plus the tick phase
GP_JIFFIES = 3
#: resolution of the drawn tick phase
_PHASES = 16


def tick_phase() -> float:
    """Where in the current jiffy we are: a fraction of a jiffy from the choice stream."""
    return (_sched.choose(_PHASES, "tick phase") + 1) * JIFFY / _PHASES


def grace_period() -> float:
    """The length of one RCU grace period (three jiffies plus the tick phase: 12-16 ms)."""
    return GP_JIFFIES * JIFFY + tick_phase()


def synchronize_rcu() -> None:
    """Wait for a grace period (the current task sleeps on the virtual clock)."""
    _sched.emit("point", "synchronize_rcu")
    _sched.sleep(grace_period())


__all__ = ["GP_JIFFIES", "HZ", "JIFFY", "grace_period", "synchronize_rcu", "tick_phase"]
