"""The variant registry (loopdev.sim.loop.DRIVERS) is complete, and everything reads it."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from loopdev.lab import model, report
from loopdev.sim import loop
from loopdev.sim.kernel import SimKernel
from loopdev.sim.loop.base import LoopDriver
from loopdev.sim.sched import Scheduler
from loopdev.sim.strategy import RandomWalk


def _driver_classes_by_module() -> dict[str, list[type[LoopDriver]]]:
    """Every LoopDriver subclass defined in a module of sim/loop/ (other than base)."""
    found: dict[str, list[type[LoopDriver]]] = {}
    for info in pkgutil.iter_modules(loop.__path__):
        if info.name == "base":
            continue
        mod = importlib.import_module(f"{loop.__name__}.{info.name}")
        found[info.name] = [
            cls
            for _, cls in inspect.getmembers(mod, inspect.isclass)
            if issubclass(cls, LoopDriver) and cls.__module__ == mod.__name__
        ]
    return found


def test_every_module_in_sim_loop_defines_a_registered_variant() -> None:
    registered = set(loop.DRIVERS)
    for name, classes in _driver_classes_by_module().items():
        assert classes, f"sim/loop/{name}.py defines no driver class"
        for cls in classes:
            assert cls in registered, (
                f"{cls.__name__} (sim/loop/{name}.py) is not in loopdev.sim.loop.DRIVERS"
            )


def test_each_variant_names_itself() -> None:
    """A subclass that forgot its own name would silently replace its parent's entry."""
    for cls in loop.DRIVERS:
        for attr in ("variant", "label", "upstream"):
            assert attr in vars(cls), f"{cls.__name__} does not set {attr}"
    assert len(loop.VARIANTS) == len(loop.DRIVERS)
    labels = [cls.label for cls in loop.DRIVERS]
    assert len(set(labels)) == len(labels), labels


def test_the_lab_and_reports_read_the_registry() -> None:
    assert tuple(loop.VARIANTS) == model.VARIANTS
    for name, cls in loop.VARIANTS.items():
        assert report.SHORT[name] == cls.label


def test_every_registered_variant_boots() -> None:
    for name in loop.VARIANTS:
        k = SimKernel.boot(name, Scheduler(RandomWalk(0), trace=False), nr_loop=1)
        assert type(k.machine.loop) is loop.VARIANTS[name]
