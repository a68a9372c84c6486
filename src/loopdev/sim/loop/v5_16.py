"""v5.16: the baseline (drivers/block/loop.c before 6050fa4c); see :mod:`.base`."""

from __future__ import annotations

from loopdev.sim.loop.base import LoopDriver


class V5_16(LoopDriver):
    """v5.16 (before 6050fa4c "loop: don't hold lo_mutex during __loop_clr_fd()"):
    ``lo_open`` counts ``lo_refcnt``; the last close of an autoclear device runs
    ``__loop_clr_fd(lo, true)`` synchronously under ``open_mutex``, holding ``lo_mutex`` across
    the queue freeze and ``destroy_workqueue``."""

    variant = "v5.16"
    label = "5.16"
    upstream = 'v5.16, before 6050fa4c "loop: don\'t hold lo_mutex during __loop_clr_fd()"'
