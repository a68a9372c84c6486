"""Model trace events → a sequence diagram (inline SVG) and a Chrome/Perfetto trace JSON.

Input is the event dicts of :meth:`loopdev.sim.trace.Trace.to_json` (``step``, ``time``,
``thread``, ``kind``, ``name``, ``detail``). Tasks become lanes, time flows down; syscalls and
kernel functions are bars, locks, waits, wakes and state changes are marks, and the failing
operation is a red band across every lane.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Event = Mapping[str, Any]

#: kinds shown in the diagram, in decreasing order of importance for trimming
_ALWAYS = frozenset({"syscall", "sysret", "state", "fail", "lockdep", "uevent", "spawn", "exit"})
_SECONDARY = frozenset({"lock", "unlock", "wait", "wake"})
_FUNCS = frozenset({"enter", "leave"})

LANE_W = 200
ROW_H = 16
GUTTER = 92
HEAD_H = 34

_COLORS = {
    "syscall": "#3b6fb6",
    "enter": "#8a8a8a",
    "lock": "#7a4fb0",
    "unlock": "#7a4fb0",
    "wait": "#b07a1a",
    "wake": "#1f8a5a",
    "state": "#0b6e6e",
    "uevent": "#5a5a9a",
    "fail": "#c0392b",
    "lockdep": "#d35400",
    "spawn": "#444",
    "exit": "#444",
}


def _norm(e: Event) -> dict[str, Any]:
    return {
        "step": int(e.get("step", 0)),
        "time": float(e.get("time", 0.0)),
        "thread": str(e.get("thread", "-")),
        "kind": str(e.get("kind", "point")),
        "name": str(e.get("name", "")),
        "detail": str(e.get("detail", "")),
    }


def _with_depth(events: Sequence[dict[str, Any]]) -> list[tuple[dict[str, Any], int]]:
    """Each event with the kernel-function nesting depth of its thread at that moment."""
    depth: dict[str, int] = {}
    out: list[tuple[dict[str, Any], int]] = []
    for e in events:
        t = e["thread"]
        if e["kind"] == "enter":
            out.append((e, depth.get(t, 0)))
            depth[t] = depth.get(t, 0) + 1
        elif e["kind"] == "leave":
            depth[t] = max(0, depth.get(t, 0) - 1)
            out.append((e, depth[t]))
        else:
            out.append((e, depth.get(t, 0)))
    return out


def select_events(events: Iterable[Event], max_rows: int = 400) -> tuple[list[dict[str, Any]], int]:
    """The events worth drawing, at most ``max_rows``; returns (events, number elided).

    Scheduling points and choices are never drawn. If too many remain, deep kernel functions
    go first, then lock traffic; finally only the tail (where the failure is) is kept.
    """
    evs = [_norm(e) for e in events]
    evs = [e for e in evs if e["kind"] in _ALWAYS | _SECONDARY | _FUNCS]
    for max_depth in (6, 3, 1, 0):
        kept = [e for e, d in _with_depth(evs) if e["kind"] not in _FUNCS or d < max_depth]
        if len(kept) <= max_rows:
            return kept, len(evs) - len(kept)
    kept = kept[-max_rows:]
    return kept, len(evs) - len(kept)


def _is_error_return(detail: str) -> bool:
    """A sysret detail such as ``= -ENOENT`` (the ``=`` is optional) is an error return."""
    d = detail.strip().removeprefix("=").strip()
    return d.startswith("-") or d.startswith("E") or "error" in d.lower()


@dataclass
class _Span:
    lane: int
    row: int
    depth: int
    label: str
    kind: str
    end: int = -1
    error: bool = False


def _esc(text: str) -> str:
    """``text`` escaped for element content (quotes need no escaping there)."""
    return html.escape(text, quote=False)


def _clip(text: str, width_px: int) -> str:
    n = max(4, width_px // 6)
    return text if len(text) <= n else text[: n - 1] + "…"


def _style() -> str:
    """The diagram's CSS, scoped to ``.seq`` (inline SVG styles apply to the whole page):
    colours and weights live here once instead of on every element."""
    fills = "".join(f".seq .{k}{{fill:{c}}}" for k, c in _COLORS.items())
    return (
        "<style>.seq text{font:11px ui-monospace,Menlo,Consolas,monospace}" + fills
        + ".seq .title{font-weight:bold;font-size:12px}.seq .lane{font-weight:bold}"
        ".seq .g{fill:#888;font-size:9px}.seq .ret{fill:#3b6fb6}"
        ".seq .err,.seq .fail,.seq .lockdep,.seq .state{font-weight:bold}.seq .err{fill:#c0392b}"
        ".seq .band{opacity:.16}.seq rect.unlock{fill:#fff;stroke:#7a4fb0}"
        ".seq circle.wait{fill:#fff;stroke:#b07a1a;stroke-width:2}"
        ".seq line.wake{stroke:#1f8a5a;stroke-width:1.3}"
        ".seq rect.sys{fill:#3b6fb6;opacity:.85}.seq rect.fn{fill:#8a8a8a;opacity:.5}"
        ".seq text.sys{fill:#3b6fb6;text-anchor:end}.seq text.fn{fill:#8a8a8a;font-size:9px}"
        ".seq .sys.e{fill:#c0392b}.seq .lh{fill:#eef2f8;stroke:#9ab}"
        ".seq .ll{stroke:#ccd;stroke-dasharray:3,3}</style>"
    )


def _text(x: int, y: int, cls: str, text: str, width_px: int) -> str:
    """A label clipped to ``width_px``; a clipped one carries its full text as a tooltip."""
    shown = _clip(text, width_px)
    tip = f"<title>{_esc(text)}</title>" if shown != text else ""
    return f'<text x="{x}" y="{y}" class="{cls}">{tip}{_esc(shown)}</text>'


def sequence_svg(
    events: Iterable[Event], *, title: str = "", max_rows: int = 400
) -> str:
    """An inline ``<svg>`` sequence diagram of one run's trace.

    Kept small (reports embed dozens): integer coordinates, colours from the CSS classes
    of :func:`_style`, and tooltips only on labels that had to be clipped (the row's step and
    time are in the left gutter, its task in the lane header).
    """
    evs, elided = select_events(events, max_rows)
    lanes: list[str] = []
    for e in evs:
        if e["thread"] not in lanes:
            lanes.append(e["thread"])
    if not lanes:
        lanes = ["-"]
    lane_of = {t: i for i, t in enumerate(lanes)}
    head = 18 if title else 0
    top = HEAD_H + (ROW_H if elided else 0) + head
    width = GUTTER + LANE_W * len(lanes) + 130
    height = top + ROW_H * (len(evs) + 1) + 8

    def lx(lane: int) -> int:
        return GUTTER + lane * LANE_W + LANE_W // 2

    def ry(row: int) -> int:
        return top + row * ROW_H + ROW_H // 2

    parts: list[str] = []
    marks: list[str] = []
    open_spans: dict[str, list[_Span]] = {}
    spans: list[_Span] = []
    waiting: dict[str, list[int]] = {}  # wait-queue name -> lanes waiting on it, in order
    for row, e in enumerate(evs):
        lane = lane_of[e["thread"]]
        kind, name, detail = e["kind"], e["name"], e["detail"]
        stack = open_spans.setdefault(e["thread"], [])
        label = f"{name} {detail}".strip()
        x, y = lx(lane), ry(row)
        if kind in ("syscall", "enter"):
            sp = _Span(lane, row, len(stack), label if kind == "syscall" else name, kind)
            stack.append(sp)
            spans.append(sp)
            continue
        if kind in ("sysret", "leave"):
            want = "syscall" if kind == "sysret" else "enter"
            while stack:
                sp = stack.pop()
                sp.end = row
                if sp.kind == want:
                    if kind == "sysret":
                        sp.error = _is_error_return(detail)
                        cls = "err" if sp.error else "ret"
                        marks.append(_text(x + 8, y + 4, cls, "→ " + label, LANE_W - 10))
                    break
            continue
        if kind in ("fail", "lockdep"):
            marks.append(
                f'<rect x="{GUTTER}" y="{y - ROW_H // 2}" width="{LANE_W * len(lanes)}" '
                f'height="{ROW_H}" class="band {kind}"/>'
            )
            marks.append(_text(x - LANE_W // 2 + 4, y + 4, kind, "✗ " + label, 3 * LANE_W + 12))
            continue
        if kind == "state":
            marks.append(
                f'<path d="M{x - 5},{y}L{x},{y - 5}L{x + 5},{y}L{x},{y + 5}Z" class="state"/>'
                + _text(x + 8, y + 4, "state", label, LANE_W - 10)
            )
            continue
        if kind == "wait":
            waiting.setdefault(name, []).append(lane)
        if kind == "wake":
            target = _wake_target(name, detail, lane_of)
            if target is None and waiting.get(name):
                target = waiting[name].pop(0)  # the task that waited on it longest
            if target is not None and target != lane:
                marks.append(
                    f'<line x1="{x}" y1="{y}" x2="{lx(target)}" y2="{y}" class="wake" '
                    'marker-end="url(#arrow)"/>'
                )
        shape = {
            "lock": f'<rect x="{x - 4}" y="{y - 4}" width="8" height="8" class="lock"/>',
            "unlock": f'<rect x="{x - 4}" y="{y - 4}" width="8" height="8" class="unlock"/>',
            "wait": f'<circle cx="{x}" cy="{y}" r="4" class="wait"/>',
            "wake": f'<circle cx="{x}" cy="{y}" r="3" class="wake"/>',
            "uevent": f'<circle cx="{x}" cy="{y}" r="4" class="uevent"/>',
            "spawn": f'<circle cx="{x}" cy="{y}" r="5" class="spawn"/>',
            "exit": f'<rect x="{x - 5}" y="{y - 2}" width="10" height="4" class="exit"/>',
        }.get(kind, f'<circle cx="{x}" cy="{y}" r="2" fill="#555"/>')
        word = {"lock": "lock", "unlock": "unlock", "wait": "wait", "wake": "wake"}.get(kind, "")
        text = f"{word} {label}".strip() if word else label
        marks.append(shape + _text(x + 8, y + 4, kind, text, LANE_W - 12))

    last = len(evs)
    for sp in spans:
        end = sp.end if sp.end >= 0 else last
        x = lx(sp.lane) - 6 + sp.depth * 3
        y0 = ry(sp.row) - ROW_H // 2 + 2
        h = max(ROW_H - 4, (end - sp.row) * ROW_H)
        cls = "sys" if sp.kind == "syscall" else "fn"
        if sp.error:
            cls += " e"
        parts.append(
            f'<rect x="{x}" y="{y0}" width="{5 if sp.kind == "syscall" else 3}" '
            f'height="{h}" class="{cls}"/>'
        )
        if sp.kind == "syscall":
            parts.append(_text(x - 3, ry(sp.row) + 4, cls, sp.label, LANE_W // 2 - 8))
        else:
            parts.append(_text(x + 6, ry(sp.row) + 4, cls, sp.label, LANE_W // 2 - 8))

    gutter = "".join(
        f'<text x="4" y="{ry(row) + 4}">{e["step"]} {e["time"] * 1000:.3f}ms</text>'
        for row, e in enumerate(evs)
    )
    heads = "".join(
        f'<rect x="{GUTTER + i * LANE_W + 6}" y="{head + 4}" width="{LANE_W - 12}" height="22" '
        f'rx="4" class="lh"/>'
        f'<text x="{lx(i)}" y="{head + 19}" text-anchor="middle" class="lane">'
        f"{_esc(_clip(t if t != '-' else '(scheduler)', LANE_W - 16))}</text>"
        f'<line x1="{lx(i)}" y1="{top - 4}" x2="{lx(i)}" y2="{height - 4}" class="ll"/>'
        for i, t in enumerate(lanes)
    )
    header = f'<text x="4" y="14" class="title">{_esc(title)}</text>' if title else ""
    elision = (
        f'<text x="{GUTTER}" y="{top - 4}" class="g">… {elided} earlier events not drawn '
        f"(kernel-function detail and the start of the run: see the trace JSON)</text>"
        if elided
        else ""
    )
    defs = (
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" '
        'markerHeight="6" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#1f8a5a"/></marker></defs>'
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="seq" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">{_style()}{defs}{header}{heads}'
        f'{elision}<g class="g">{gutter}</g>'
        + "".join(parts)
        + "".join(marks)
        + "</svg>"
    )


def _wake_target(name: str, detail: str, lane_of: Mapping[str, int]) -> int | None:
    for text in (detail, name):
        for word in text.replace(",", " ").replace("=", " ").split():
            if word in lane_of:
                return lane_of[word]
        if text in lane_of:
            return lane_of[text]
    return None


def chrome_trace(events: Iterable[Event], *, process: str = "model") -> dict[str, Any]:
    """A Chrome/Perfetto trace (``{"traceEvents": [...]}``) of one run.

    Timestamps are virtual microseconds, nudged forward by a nanosecond per event so that
    events at the same virtual instant keep their execution order. Syscalls and kernel
    functions are B/E slices (unclosed ones are closed at the end), everything else is an
    instant event; ``args`` carry the step, virtual time and detail.
    """
    evs = [_norm(e) for e in events if str(e.get("kind", "")) not in ("point", "choice")]
    tids: dict[str, int] = {}
    out: list[dict[str, Any]] = [
        {"ph": "M", "pid": 1, "tid": 0, "name": "process_name", "args": {"name": process}}
    ]
    stacks: dict[str, list[str]] = {}
    ts = -1.0
    for e in evs:
        t = e["thread"]
        if t not in tids:
            tids[t] = len(tids) + 1
            out.append(
                {"ph": "M", "pid": 1, "tid": tids[t], "name": "thread_name", "args": {"name": t}}
            )
        ts = max(ts + 0.001, e["time"] * 1e6)
        base = {
            "pid": 1,
            "tid": tids[t],
            "ts": round(ts, 3),
            "args": {"step": e["step"], "vtime": e["time"], "detail": e["detail"]},
        }
        kind = e["kind"]
        stack = stacks.setdefault(t, [])
        if kind in ("syscall", "enter"):
            name = e["name"]
            stack.append(kind)
            out.append({**base, "ph": "B", "name": name, "cat": kind})
        elif kind in ("sysret", "leave"):
            want = "syscall" if kind == "sysret" else "enter"
            while stack:
                k = stack.pop()
                out.append({**base, "ph": "E"})
                if k == want:
                    break
        else:
            out.append(
                {
                    **base,
                    "ph": "i",
                    "s": "g" if kind in ("fail", "lockdep") else "t",
                    "name": f"{kind} {e['name']}".strip(),
                    "cat": kind,
                }
            )
    for t, stack in stacks.items():
        while stack:
            stack.pop()
            ts += 0.001
            out.append({"pid": 1, "tid": tids[t], "ts": round(ts, 3), "ph": "E", "args": {}})
    return {"traceEvents": out, "displayTimeUnit": "ns", "otherData": {"source": "loopdev lab"}}


def chrome_trace_json(events: Iterable[Event], *, process: str = "model") -> str:
    """:func:`chrome_trace` as a JSON string."""
    return json.dumps(chrome_trace(events, process=process), separators=(",", ":"))
