"""RESEARCH §3 claim 6: v5.16's synchronous teardown under ``disk->open_mutex`` makes lockdep
record open_mutex → lo_mutex → (wq_completion)loopN → ... → sb_writers; the v5.19 series breaks
the chain (no workqueue flush from ->release). A queue freeze is a lock to lockdep only in the
block layer of v6.13 and later (f1be1788a32e): none of the modelled designs has it, a machine
given that block layer does."""

from __future__ import annotations

from typing import Any

import pytest
from simkit import attach, make_image, run_model

from loopdev import abi
from loopdev.sim.kernel import SimKernel

OPEN = "&disk->open_mutex"
LO = "&lo->lo_mutex"
QIO = "&q->q_usage_counter(io)"


def write_then_autoclear(k: SimKernel, notes: dict[str, Any]) -> None:
    make_image(k, "/tmp/a.img")
    n, lfd = attach(k, "/tmp/a.img", flags=abi.LO_FLAGS_AUTOCLEAR)
    notes["wq"] = f"(wq_completion)loop{n}"
    k.pwrite(lfd, b"x" * 512, 4096)  # the loop worker writes the backing file
    k.close(lfd)


def edges(variant: str, freeze_lockdep: bool = False) -> tuple[dict[str, dict[str, Any]], str]:
    def main(k: SimKernel, notes: dict[str, Any]) -> None:
        k.machine.block.freeze_lockdep = freeze_lockdep
        write_then_autoclear(k, notes)

    run = run_model(variant, main)
    assert run.ok, run.outcome.describe()
    return run.kernel.sched.lockdep.graph.after, run.notes["wq"]


def reaches(graph: dict[str, dict[str, Any]], src: str, dst: str) -> bool:
    seen, todo = {src}, [src]
    while todo:
        for nxt in graph.get(todo.pop(), {}):
            if nxt == dst:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


def test_v5_16_chain_open_mutex_lo_mutex_flush() -> None:
    graph, wq = edges("v5.16")
    assert LO in graph[OPEN]
    assert wq in graph[LO]
    assert QIO not in graph and all(QIO not in after for after in graph.values())
    assert "(work_completion)(&lo->rootcg_work)" in graph[wq]  # the worker's I/O, then ...
    assert reaches(graph, wq, "sb_writers#tmpfs")  # ... the backing file's freeze protection
    assert reaches(graph, OPEN, "sb_writers#tmpfs")


def test_a_v6_13_block_layer_sees_the_freeze_as_a_lock() -> None:
    """f1be1788a32e: the freeze is a write *trylock* of the queue's map, held until the
    unfreeze: nothing leads to it, the workqueue flush under it follows it."""
    graph, wq = edges("v5.16", freeze_lockdep=True)
    assert wq in graph[QIO]
    assert QIO not in graph[LO]


@pytest.mark.parametrize("variant", ["v5.17"])
def test_v5_17_still_flushes_the_workqueue_under_open_mutex(variant: str) -> None:
    graph, wq = edges(variant)
    assert wq in graph[OPEN]
    assert reaches(graph, OPEN, "sb_writers#tmpfs")


@pytest.mark.parametrize("variant", ["v5.19", "v6.11"])
def test_v5_19_series_breaks_the_chain(variant: str) -> None:
    graph, wq = edges(variant)
    assert not reaches(graph, OPEN, "sb_writers#tmpfs")
    assert wq not in graph.get(LO, {})
