"""The sequence diagram and the Chrome/Perfetto trace drawn from trace events."""

from __future__ import annotations

import json
import re
from typing import Any

from loopdev.lab.diagram import chrome_trace, chrome_trace_json, select_events, sequence_svg


def _ev(step: int, thread: str, kind: str, name: str, detail: str = "", t: float = 0.0) -> dict[str, Any]:
    return {"step": step, "time": t, "thread": thread, "kind": kind, "name": name, "detail": detail}


EVENTS = [
    _ev(1, "mount", "syscall", "open", "/dev/loop0"),
    _ev(2, "mount", "enter", "lo_open"),
    _ev(3, "mount", "lock", "disk->open_mutex"),
    _ev(4, "udevd", "syscall", "close", "fd 3"),
    _ev(5, "udevd", "point", "atomic"),
    _ev(6, "udevd", "state", "lo_state", "Lo_bound -> Lo_rundown"),
    _ev(7, "mount", "wait", "open_mutex"),
    _ev(8, "udevd", "wake", "mount"),
    _ev(9, "udevd", "sysret", "close", "0"),
    _ev(10, "mount", "leave", "lo_open"),
    _ev(11, "mount", "sysret", "open", "-ENXIO", t=0.001),
    _ev(12, "mount", "fail", "mount", "can't read superblock on /dev/loop0", t=0.002),
]


def test_diagram_has_a_lane_per_task_and_marks_the_failure() -> None:
    svg = sequence_svg(EVENTS, title="mount-loop on v5.17-rc1")
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert ">mount<" in svg and ">udevd<" in svg  # lane headers
    assert "can&#x27;t read superblock" in svg or "can't read superblock" in svg
    assert "Lo_rundown" in svg  # state change
    assert "lock disk-&gt;open_mutex" in svg
    assert 'marker-end="url(#arrow)"' in svg  # the wake arrow from udevd to mount
    assert 'class="err"' in svg  # the failing return
    assert "atomic" not in svg  # scheduling points are not drawn


def test_diagram_trims_long_traces_keeping_the_tail() -> None:
    many = [_ev(i, "t", "lock" if i % 2 else "unlock", f"l{i}") for i in range(2000)]
    many.append(_ev(2000, "t", "fail", "boom"))
    kept, elided = select_events(many, max_rows=100)
    assert len(kept) <= 100 and kept[-1]["kind"] == "fail"
    svg = sequence_svg(many, max_rows=100)
    assert "earlier events not drawn" in svg and "boom" in svg
    assert elided > 0


def test_chrome_trace_slices_are_balanced_and_ordered() -> None:
    trace = chrome_trace([*EVENTS, _ev(13, "udevd", "syscall", "read", "fd 4")])
    evs = trace["traceEvents"]
    names = {e["args"]["name"] for e in evs if e["ph"] == "M" and e["name"] == "thread_name"}
    assert names == {"mount", "udevd"}
    depth: dict[int, int] = {}
    last_ts = -1.0
    for e in evs:
        if e["ph"] == "M":
            continue
        assert e["ts"] > last_ts
        last_ts = e["ts"]
        if e["ph"] == "B":
            depth[e["tid"]] = depth.get(e["tid"], 0) + 1
        elif e["ph"] == "E":
            depth[e["tid"]] -= 1
            assert depth[e["tid"]] >= 0
    assert all(d == 0 for d in depth.values())  # the unfinished read is closed at the end
    fails = [e for e in evs if e.get("cat") == "fail"]
    assert fails and fails[0]["s"] == "g"
    assert json.loads(chrome_trace_json(EVENTS))["traceEvents"]


def test_diagram_escapes_markup_in_names() -> None:
    svg = sequence_svg([_ev(1, "a<b>", "fail", "<script>", "&")])
    assert "<script>" not in svg
    assert re.search(r"&lt;script&gt;", svg)


def test_diagram_marks_model_shaped_errors_and_wakeups() -> None:
    """Details as the model writes them: sysret ``= -EIO``, wake ``1 waiter(s)`` naming the
    wait queue, not the task."""
    events = [
        _ev(1, "mount/106", "syscall", "pread64", "(3, 4096, 0)"),
        _ev(2, "mount/106", "wait", "loop0:mq_freeze_wq", "wait_event"),
        _ev(3, "kworker/105", "wake", "loop0:mq_freeze_wq", "1 waiter(s)"),
        _ev(4, "mount/106", "sysret", "pread64", "= -EIO"),
        _ev(5, "mount/106", "syscall", "close", "(3,)"),
        _ev(6, "mount/106", "sysret", "close", "= 0"),
    ]
    svg = sequence_svg(events)
    assert svg.count('class="err"') == 1  # the -EIO return, not the close's 0
    assert 'marker-end="url(#arrow)"' in svg  # kworker wakes mount
