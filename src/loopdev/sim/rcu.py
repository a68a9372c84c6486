"""Time the kernel really spends waiting: jiffies and RCU grace periods, on the virtual clock.

Kernel code in the model takes no virtual time, except where the real kernel waits for
something that is itself measured in timer ticks. Two such waits shape the loop races:

* an **RCU grace period** (``synchronize_rcu``, and ``percpu_ref_kill`` → switch to atomic mode,
  which is what ``blk_mq_freeze_queue`` waits for before the queue's usage counter can reach
  zero: block/blk-sysfs.c notes that shutting down a registered queue "takes measureable
  wallclock time as RCU grace periods are involved"): the timing parameter
  ``rcu.grace_period`` (:mod:`loopdev.sim.params`), fitted to what an ioctl that only
  freezes and unfreezes a loop device's queue takes on a real kernel;
* a **timer of one jiffy** (``schedule_delayed_work(&delayed_fput_work, 1)``): the timer
  wheel rounds every expiry up to the next granule so that no timer fires early
  (kernel/time/timer.c ``calc_index``: ``expires = (expires >> LVL_SHIFT(lvl)) + 1``), so
  a timer armed for jiffy ``J + 1`` sits in bucket ``J + 2`` and fires one to two jiffies
  after it was armed (:func:`timer_delay`); traced on 6.18 (``timer_start`` shows
  ``bucket_expiry = expires + 1``), delayed_fput ran 4.1-5.5 ms after being queued.

Durations come from the scheduler's choice stream (replayable), never from a wall clock.
"""

from __future__ import annotations

from loopdev.sim import sched as _sched
from loopdev.sim.params import RCU_GRACE_PERIOD

#: CONFIG_HZ of the machines the lab runs on (Debian's default)
HZ = 250
JIFFY = 1.0 / HZ
#: resolution of the drawn tick phase
_PHASES = 16


def tick_phase() -> float:
    """Where in the current jiffy we are: a fraction of a jiffy from the choice stream."""
    return (_sched.choose(_PHASES, "tick phase") + 1) * JIFFY / _PHASES


def timer_delay(jiffies: int = 1) -> float:
    """How long a timer armed now for ``jiffies`` jiffies takes to fire: those jiffies plus
    the rest of the current one (the wheel's round-up; see the module docstring)."""
    return jiffies * JIFFY + tick_phase()


def grace_period() -> float:
    """The length of one RCU grace period: it ends at a tick, so it is the parameter
    ``rcu.grace_period`` less the part of the last jiffy not yet begun (the tick phase):
    uniform in (value - 1 jiffy, value], never negative (default 12-16 ms)."""
    return max(0.0, _sched.param(RCU_GRACE_PERIOD) - JIFFY + tick_phase())


def synchronize_rcu() -> None:
    """Wait for a grace period (the current task sleeps on the virtual clock)."""
    _sched.emit("point", "synchronize_rcu")
    _sched.sleep(grace_period())


__all__ = ["HZ", "JIFFY", "grace_period", "synchronize_rcu", "tick_phase", "timer_delay"]
