"""The lab's scenarios, each written once against the Kernel port."""

from __future__ import annotations

from loopdev.lab.scenarios.base import Scenario
from loopdev.lab.scenarios.detach_open import DetachOpen
from loopdev.lab.scenarios.iouring_kill import IouringKill
from loopdev.lab.scenarios.mount_loop import MountLoop
from loopdev.lab.scenarios.nested_umount import NestedUmount
from loopdev.lab.scenarios.parallel_attach import ParallelAttach
from loopdev.lab.scenarios.resume_chain import ResumeChain


def all_scenarios() -> list[Scenario]:
    """Every scenario, in the order the matrix shows them."""
    return [
        MountLoop(udev=True),
        MountLoop(udev=False),
        NestedUmount(udev=False),
        NestedUmount(udev=True),
        IouringKill(),
        IouringKill(io_uring="exit-cancel-wait"),
        ResumeChain(),
        DetachOpen(),
        ParallelAttach(),
    ]


def by_name(name: str) -> Scenario:
    for s in all_scenarios():
        if s.name == name:
            return s
    raise KeyError(name)
