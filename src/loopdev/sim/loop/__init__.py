"""The model's loop driver: a v5.16 baseline and one module per upstream design (variant).

This module is the one registry of variants: everything else (``SimKernel.boot``, the lab's
matrix and reports, the model tests) reads :data:`VARIANTS`. A new variant is its own module
here and one line in :data:`DRIVERS` (tests/sim/test_variant_registry.py fails otherwise).
"""

from __future__ import annotations

import re

from loopdev.sim.loop.base import LoopDevice, LoopDriver
from loopdev.sim.loop.post_open_release import PostOpenRelease
from loopdev.sim.loop.post_release_2026 import PostRelease2026
from loopdev.sim.loop.taskwork import Taskwork
from loopdev.sim.loop.taskwork_openwait import TaskworkOpenwait
from loopdev.sim.loop.v5_16 import V5_16
from loopdev.sim.loop.v5_17 import V5_17
from loopdev.sim.loop.v5_17_rc1 import V5_17rc1
from loopdev.sim.loop.v5_19 import V5_19
from loopdev.sim.loop.v6_11 import V6_11

#: every variant's driver class, in history order (the order of the lab's columns)
DRIVERS: tuple[type[LoopDriver], ...] = (
    V5_16,
    V5_17rc1,
    Taskwork,
    TaskworkOpenwait,
    PostOpenRelease,
    V5_17,
    V5_19,
    V6_11,
    PostRelease2026,
)

#: variant name → driver class, in history order
VARIANTS: dict[str, type[LoopDriver]] = {cls.variant: cls for cls in DRIVERS}


def driver_class(variant: str) -> type[LoopDriver]:
    """The driver class of `variant` (ValueError naming the known ones otherwise)."""
    try:
        return VARIANTS[variant]
    except KeyError:
        raise ValueError(
            f"unknown loop variant {variant!r}; known: {', '.join(VARIANTS)}"
        ) from None


def release_of(driver: type) -> str:
    """The ``uname -r`` a kernel with loop driver class ``driver`` reports: the first upstream
    release (a variant named ``vX.Y`` or ``vX.Y-rcN``) in its class hierarchy, plus
    ``+<variant>`` when the driver itself is a proposal on top of it."""
    own = driver.__dict__.get("variant", "")
    for cls in driver.__mro__:
        m = re.fullmatch(r"v(\d+)\.(\d+)(-rc\d+)?", cls.__dict__.get("variant", ""))
        if m:
            release = f"{m.group(1)}.{m.group(2)}.0{m.group(3) or ''}"
            return release if cls is driver else f"{release}+{own}"
    raise ValueError(f"{driver.__name__}: no upstream release in its class hierarchy")



__all__ = ["DRIVERS", "VARIANTS", "LoopDevice", "LoopDriver", "driver_class", "release_of"]
