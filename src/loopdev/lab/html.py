"""The lab's HTML report: one self-contained page (inline CSS and SVG, no external resources)
with the matrix, the claims, plots, and for each failure found its interleaving as a sequence
diagram plus a downloadable Chrome/Perfetto trace JSON.

The trace JSONs are what made the page big (0.5 MB each as data: URIs), so each is embedded
gzip-compressed and base64-encoded in an inert ``<script type="application/gzip">`` element;
the page's one small script unpacks it with the browser's ``DecompressionStream`` when its
link is clicked and downloads it as ``failure-<scenario>-<userspace>-<variant>-<n>.perfetto.json``.
Everything else works without JavaScript.
"""

from __future__ import annotations

import base64
import gzip
import html
import re

from loopdev.lab import plots
from loopdev.lab.backends import USERSPACES
from loopdev.lab.diagram import chrome_trace_json, sequence_svg
from loopdev.lab.outcome import THIS_KERNEL, CellKey, CellResult, Example
from loopdev.lab.report import cell_text, replay_ref, row_label
from loopdev.lab.runner import LabResult

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#222;max-width:1500px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:20px 0 6px}
table{border-collapse:collapse;margin:8px 0}
th,td{border:1px solid #d4d4d4;padding:3px 7px;text-align:center}
th{background:#f3f5f8;font-weight:600}
td.l{text-align:left;white-space:nowrap}
td.z{background:#e8f5e9}td.f{background:#fdecea;font-weight:600}td.na{background:#f4f4f4;color:#888}
td.e{background:#fff3cd}
.verdict{font-weight:700;padding:1px 6px;border-radius:4px}
.v-reproduced{background:#d4edda;color:#155724}.v-NOT{background:#f8d7da;color:#721c24}
.v-not{background:#eee;color:#555}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
pre{background:#f7f7f9;padding:8px;overflow:auto;max-height:320px}
.diagram{overflow:auto;border:1px solid #ddd;max-height:760px;background:white}
.plots{display:flex;flex-wrap:wrap;gap:18px}
.small{color:#666;font-size:12px}
.token{word-break:break-all;font-size:11px}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _cls(cell: CellResult | None) -> str:
    if cell is None or cell.runs == 0:
        return "na"
    if cell.checked == 0:
        return "na" if cell.unsupported else "e"
    return "f" if cell.failures else "z"


def _matrix(result: LabResult) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in result.columns)
    rows: list[str] = []
    for s, u in result.rows:
        tds = []
        for c in result.columns:
            cell = result.cell(s, u, c)
            tip = ""
            if cell is not None:
                counts = ", ".join(f"{k}: {n}" for k, n in sorted(cell.counts.items()))
                tip = f"{cell.runs} runs; {counts}"
                if cell.unsupported:
                    tip += f"; {cell.unsupported}"
                if cell.time_limited:
                    tip += f"; {cell.cut} of {cell.planned} planned runs not run (time limit)"
            tds.append(
                f'<td class="{_cls(cell)}" title="{_e(tip)}">{_e(cell_text(cell))}'
                + (
                    f'<br><span class="small">{cell.failures}/{cell.checked}</span>'
                    if cell is not None and cell.checked
                    else ""
                )
                + "</td>"
            )
        rows.append(
            f'<tr><td class="l"><b>{_e(s)}</b></td><td class="l">{_e(row_label(s, u))}</td>'
            + "".join(tds)
            + "</tr>"
        )
    return (
        '<table class="matrix" id="matrix"><tr><th>scenario</th><th>userspace</th>'
        + head
        + "</tr>"
        + "".join(rows)
        + "</table>"
        '<p class="small">Cells: failure rate (failed runs / runs with a verdict). '
        "n/a: the backend lacks what the scenario needs (not yet checkable). "
        "Hover a cell for its outcome counts.</p>"
    )


def _claims(result: LabResult) -> str:
    out = ['<table class="claims" id="claims"><tr><th>#</th><th>claim</th><th>source</th>'
           "<th>should be observed</th><th>verdict</th><th>evidence</th></tr>"]
    for v in result.claims:
        c = v.claim
        cls = "v-" + v.verdict.split()[0]
        ev = "<br>".join(
            f"<b>{_e(r.status)}</b>: {_e(r.expect.describe())}: {_e(r.evidence)}"
            + (
                f'<br><code class="token">{_e(replay_ref(r.expect.scenario, r.expect.userspace, r.expect.column, r.token))}</code>'
                if r.token
                else ""
            )
            for r in v.results
        )
        out.append(
            f'<tr><td>{c.number}</td><td class="l" style="white-space:normal;max-width:340px">'
            f'{_e(c.text)}</td><td class="l" style="white-space:normal;max-width:200px">'
            f'{_e(c.source)}</td><td class="l" style="white-space:normal;max-width:260px">'
            f'{_e(c.observe)}</td><td><span class="verdict {cls}">{_e(v.verdict)}</span></td>'
            f'<td class="l" style="white-space:normal;text-align:left;max-width:420px">{ev}</td></tr>'
        )
    out.append("</table>")
    return "".join(out)


def _plots(result: LabResult) -> str:
    parts: list[str] = []
    # failure rate per variant, one small chart per row that ran anywhere
    for s, u in result.rows:
        vals: list[float | None] = []
        notes: list[str] = []
        for c in result.columns:
            cell = result.cell(s, u, c)
            vals.append(cell.failure_rate if cell is not None and cell.checked else None)
            notes.append(f"({cell.failures}/{cell.checked})" if cell and cell.checked else "")
        if all(v is None for v in vals):
            continue
        parts.append(
            plots.bar_chart(
                f"failure rate per variant: {s} / {row_label(s, u)}",
                result.columns,
                vals,
                notes=notes,
            )
        )
    ttff_rows = [
        (f"{k.scenario}/{k.userspace}/{k.column}", [float(g) for g in c.failure_gaps()])
        for k, c in result.cells.items()
        if c.failure_runs
    ]
    ttff = plots.strip_plot(
        "time to first failure (runs until a failure, restarting after each)",
        sorted(ttff_rows),
    )
    real = [c for k, c in result.cells.items() if k.column == THIS_KERNEL]
    detach = [v for c in real for v in c.measurements.get("detach_delay", [])]
    umount = [v for c in real for v in c.measurements.get("umount_latency", [])]
    hists = (
        plots.histogram("this kernel: detach delay after umount returned", detach)
        + plots.histogram("this kernel: umount latency", umount)
    )
    return (
        '<div class="plots" id="rates">' + "".join(parts) + "</div>"
        '<h3>Time to first failure</h3><div id="ttff">' + ttff + "</div>"
        '<h3>Real kernel latencies</h3><div class="plots" id="latency">' + hists + "</div>"
    )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


#: failures drawn with a diagram and trace JSON (the rest are listed with message and token);
#: the default lab run finds about 60, all drawn (the page is then about 6 MB)
MAX_DRAWN = 120


#: the page's script: a click on a trace link unpacks its embedded trace and downloads it.
#: ``loopdevTrace(id)`` (a Promise of the JSON Blob) is also what the Chromium test calls.
_JS = """
"use strict";
async function loopdevTrace(id){
 const b=atob(document.getElementById(id).textContent.trim()),u=new Uint8Array(b.length);
 for(let i=0;i<b.length;i++)u[i]=b.charCodeAt(i);
 const s=new Blob([u]).stream().pipeThrough(new DecompressionStream("gzip"));
 return new Blob([await new Response(s).arrayBuffer()],{type:"application/json"});
}
document.addEventListener("click",async ev=>{
 const a=ev.target instanceof Element&&ev.target.closest("a[data-trace]");
 if(!a)return;
 ev.preventDefault();
 if(!("DecompressionStream" in window)){alert("This browser cannot unpack the trace (no DecompressionStream).");return;}
 const url=URL.createObjectURL(await loopdevTrace(a.dataset.trace)),d=document.createElement("a");
 d.href=url;d.download=a.dataset.file;document.body.append(d);d.click();d.remove();
 setTimeout(()=>URL.revokeObjectURL(url),60000);
});
"""


def pack(text: str) -> str:
    """``text`` gzip-compressed and base64-encoded, as embedded in the page (deterministic:
    the gzip header carries no timestamp)."""
    return base64.b64encode(gzip.compress(text.encode(), compresslevel=9, mtime=0)).decode()


def unpack(data: str) -> str:
    """The inverse of :func:`pack`."""
    return gzip.decompress(base64.b64decode(data)).decode()


def trace_file_name(key: CellKey, n: int) -> str:
    """The download name of failure ``n``'s trace."""
    return f"failure-{_slug(key.scenario)}-{_slug(key.userspace)}-{_slug(key.column)}-{n}.perfetto.json"


def failure_section(
    key: CellKey, ex: Example, count: int, checked: int, *, draw: bool = True, n: int = 0
) -> str:
    """One failure (number ``n`` on the page): message, replay token, lockdep report,
    sequence diagram, trace JSON."""
    title = f"{key.scenario} / {USERSPACES.get(key.userspace, key.userspace)} / {key.column}: {ex.label}"
    anchor = f"f-{_slug(str(key) + ex.label)}"
    parts = [
        f'<div class="failure" id="{anchor}">',
        f"<h3>{_e(title)}</h3>",
        f'<p>{count} of {checked} runs; first at seed {ex.seed}.</p>',
    ]
    if ex.message:
        parts.append(f"<pre>{_e(ex.message[:4000])}</pre>")
    if ex.token:
        ref = replay_ref(key.scenario, key.userspace, key.column, ex.token)
        parts.append(f'<p class="small">replay: <code class="token">loopdev lab replay {_e(ref)}</code></p>')
    if ex.lockdep:
        parts.append(f"<pre>{_e(ex.lockdep[:6000])}</pre>")
    if ex.events and draw:
        svg = sequence_svg(ex.events, title=title)
        data = pack(chrome_trace_json(ex.events, process=f"{key.scenario} on {key.column}"))
        parts.append(
            f'<p><a href="#{anchor}" data-trace="trace-{n}" data-file="{trace_file_name(key, n)}">'
            f"Chrome/Perfetto trace JSON</a> (open in ui.perfetto.dev or chrome://tracing)</p>"
            f'<script type="application/gzip" id="trace-{n}">{data}</script>'
        )
        parts.append(f'<div class="diagram">{svg}</div>')
    else:
        parts.append(
            '<p class="small">'
            + ("no trace (real kernel: outcome and message only)" if not ex.events
               else "diagram not drawn here (too many failures): use the replay command")
            + "</p>"
        )
    parts.append("</div>")
    return "".join(parts)


def render(result: LabResult) -> str:
    """The whole page."""
    cfg = result.config
    found = result.failures()  # only the first MAX_DRAWN carry diagrams
    failures = [
        failure_section(
            key, ex, cell.counts.get(ex.label, 0), cell.checked, draw=i < MAX_DRAWN, n=i + 1
        )
        for i, (key, cell, ex) in enumerate(found)
    ]
    gaps = (
        "<ul>" + "".join(f"<li>{_e(g)}</li>" for g in result.gaps) + "</ul>"
        if result.gaps
        else "<p>Every outcome seen on this kernel was reached in the v6.11 model.</p>"
        if THIS_KERNEL in result.columns
        else "<p>This kernel was not run (not root), so there is nothing to compare.</p>"
    )
    notes = "".join(f"<li>{_e(n)}</li>" for n in result.notes)
    scen = "".join(
        f"<tr><td class='l'>{_e(n)}</td><td class='l'>{_e(t)}</td><td class='l'>{_e(src)}</td></tr>"
        for n, (t, src) in result.scenario_titles.items()
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<title>loopdev race lab</title>"
        f"<style>{_CSS}</style><script>{_JS}</script></head><body>"
        "<h1>loopdev race lab</h1>"
        f"<p class='small'>strategy {_e(cfg.strategy)}, budget {_e(cfg.budget_text())} runs per model cell, "
        f"seed {cfg.seed}, {cfg.workers} workers, {result.seconds:.1f}s.</p>"
        "<h2>Matrix</h2>" + _matrix(result)
        + "<h2>Claims (RESEARCH §3)</h2>" + _claims(result)
        + "<h2>Plots</h2>" + _plots(result)
        + "<h2>Model fidelity</h2>" + gaps
        + (f"<h2>Notes</h2><ul>{notes}</ul>" if notes else "")
        + "<h2>Scenarios</h2><table><tr><th>scenario</th><th>what</th><th>shape of</th></tr>"
        + scen + "</table>"
        + f"<h2>Failures ({len(failures)})</h2>"
        + ("".join(failures) if failures else "<p>No failures found.</p>")
        + "</body></html>"
    )


def write(result: LabResult, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(render(result))
