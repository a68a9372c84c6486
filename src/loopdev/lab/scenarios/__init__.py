"""The lab's scenarios, each written once against the Kernel port: one module each, and one
line in :func:`all_scenarios` (the default matrix) or :func:`optional_scenarios` (run only
when named, ``loopdev lab --scenario NAME``)."""

from __future__ import annotations

from loopdev.lab.scenarios.base import Scenario
from loopdev.lab.scenarios.detach_open import DetachOpen, DetachOpenHeld
from loopdev.lab.scenarios.detach_open_partscan import DetachOpenPartscan
from loopdev.lab.scenarios.iouring_kill import IouringKill
from loopdev.lab.scenarios.library_users import LibraryUsers
from loopdev.lab.scenarios.mount_loop import MountLoop
from loopdev.lab.scenarios.nested_umount import NestedUmount
from loopdev.lab.scenarios.parallel_attach import ParallelAttach
from loopdev.lab.scenarios.resume_chain import ResumeChain


def all_scenarios() -> list[Scenario]:
    """Every scenario of the default matrix, in the order the matrix shows them."""
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


def optional_scenarios() -> list[Scenario]:
    """Scenarios outside the default matrix, run when a lab run names them."""
    return [LibraryUsers(), ResumeChain(detach="clr-fd"), DetachOpenHeld(), DetachOpenPartscan()]


def by_name(name: str) -> Scenario:
    for s in (*all_scenarios(), *optional_scenarios()):
        if s.name == name:
            return s
    raise KeyError(name)
