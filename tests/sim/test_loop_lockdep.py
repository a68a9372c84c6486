"""RESEARCH §3 claim 6: v5.16's synchronous teardown under ``disk->open_mutex`` makes lockdep
record open_mutex → lo_mutex → q_usage_counter(io) / (wq_completion)loopN → sb_writers; the
v5.19 series breaks the chain (no workqueue flush, no freeze from ->release)."""

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


def edges(variant: str) -> tuple[dict[str, dict[str, Any]], str]:
    run = run_model(variant, write_then_autoclear)
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


def test_v5_16_chain_open_mutex_lo_mutex_freeze_and_flush() -> None:
    graph, wq = edges("v5.16")
    assert LO in graph[OPEN]
    assert QIO in graph[LO]
    assert wq in graph[LO]
    assert any(c.startswith("sb_writers") for c in graph[wq])
    assert reaches(graph, OPEN, "sb_writers#tmpfs")


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
