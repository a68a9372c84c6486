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
from dataclasses import dataclass

from loopdev.lab import plots
from loopdev.lab.backends import USERSPACES
from loopdev.lab.cells import REFERENCE
from loopdev.lab.claims import ClaimVerdict
from loopdev.lab.diagram import chrome_trace_json, sequence_svg
from loopdev.lab.outcome import THIS_KERNEL, CellKey, CellResult, Example
from loopdev.lab.replayref import short_handle
from loopdev.lab.report import SubColumn, replay_ref, row_label, sub_columns, sub_text
from loopdev.lab.runner import LabResult
from loopdev.lab.stats import interval_text, percent, spread, wilson

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
.scroll{overflow-x:auto}table.matrix td{padding:2px 4px;white-space:nowrap}table.matrix td.l{white-space:normal;max-width:220px}
table.matrix .small{font-size:10px}
td.real{border-left:2px solid #bbb}td.flag{outline:2px solid #8e44ad;outline-offset:-3px}
td.w200,td.w260,td.w340,td.w420{white-space:normal;text-align:left}
td.w200{max-width:200px}td.w260{max-width:260px}td.w340{max-width:340px}td.w420{max-width:420px}
.flagtext{color:#8e44ad}
.pair{display:flex;gap:12px;flex-wrap:wrap}.pair>div{flex:1 1 480px;min-width:0}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _cls(cell: CellResult | None) -> str:
    if cell is None or cell.runs == 0:
        return "na"
    if cell.checked == 0:
        return "na" if cell.unsupported else "e"
    return "f" if cell.failures else "z"


def _td(result: LabResult, cell: CellResult | None, sub: SubColumn, s: str, u: str) -> str:
    """One matrix cell: rate, count and 95% interval; a real cell's marks (``!`` flagged by
    the fidelity check, ``~`` timing-distorted) with the reason in its tooltip."""
    tip = ""
    if cell is not None:
        counts = ", ".join(f"{k}: {n}" for k, n in sorted(cell.counts.items()))
        tip = f"{cell.runs} runs; {counts}"
        if cell.unsupported:
            tip += f"; {cell.unsupported}"
        if cell.time_limited:
            tip += f"; {cell.cut} of {cell.planned} planned runs not run (time limit)"
        if cell.timing_distorted:
            where = "this machine" if cell.key.backend == "host" else "the guest"
            tip += f"; timing-distorted ({where}): {cell.timing_distorted}"
        for f in result.findings:
            if f.real == cell.key:
                tip += f"; {f.kind}: {f.detail}"
    col = result.real.get(sub.column) if sub.backend == "vm" else None
    if cell is None and col is not None and col.unavailable:
        tip = col.unavailable
    small = ""
    if cell is not None and cell.checked:
        lo, hi = wilson(cell.failures, cell.checked)
        small = (f'<br><span class="small">{cell.failures}/{cell.checked} '
                 f"[{percent(lo)}-{percent(hi)}]</span>")  # fmt: skip
    cls = _cls(cell) + (" real" if sub.backend != "model" else "")
    if cell is not None and cell.key in {f.real for f in result.findings}:
        cls += " flag"
    return (f'<td class="{cls}" title="{_e(tip)}">{_e(sub_text(result, sub, s, u))}'
            f"{small}</td>")  # fmt: skip


def _matrix(result: LabResult) -> str:
    subs = sub_columns(result)
    groups: list[tuple[str, int]] = []
    for sub in subs:
        if groups and groups[-1][0] == sub.column:
            groups[-1] = (sub.column, groups[-1][1] + 1)
        else:
            groups.append((sub.column, 1))
    head1 = "".join(f'<th colspan="{n}">{_e(c)}</th>' for c, n in groups)
    head2 = "".join(f"<th>{_e(sub.head)}</th>" for sub in subs)
    rows: list[str] = []
    span = {s: sum(1 for r, _ in result.rows if r == s) for s, _ in result.rows}
    prev = ""
    for s, u in result.rows:
        tds = "".join(
            _td(result, result.cell(s, u, sub.column, sub.backend), sub, s, u) for sub in subs
        )
        head = "" if s == prev else f'<td class="l" rowspan="{span[s]}"><b>{_e(s)}</b></td>'
        prev = s
        rows.append(f'<tr>{head}<td class="l">{_e(row_label(s, u))}</td>{tds}</tr>')
    reasons = "".join(f"<li>{_e(r)}</li>" for r in sorted(set(result.distorted.values())))
    return (
        '<div class="scroll"><table class="matrix" id="matrix"><tr><th rowspan="2">scenario</th>'
        f'<th rowspan="2">userspace</th>{head1}</tr><tr>{head2}</tr>'
        + "".join(rows)
        + "</table></div>"
        '<p class="small">Cells: failure rate in % (failed runs / runs with a verdict) and its '
        "95% Wilson interval. <b>mod</b>: the model; <b>vm</b>: the variant's loop.c built for "
        "Debian's 6.1 kernel in a QEMU guest (resume-chain on the lockdep kernel); "
        "<b>host</b>: this machine's kernel, compared with the "
        f"{REFERENCE} model. <b>!</b>: the fidelity check flags the real cell; <b>~</b>: its "
        "timing is distorted in the guest, or other work loaded this machine while it ran; <b>*</b>: cut short by the time limit; n/a: cannot "
        "run there. Hover a cell for its outcome counts.</p>"
        + (f'<p class="small">Timing-distorted real cells (~):</p><ul class="small">{reasons}</ul>'
           if reasons else "")
    )


def _claims(result: LabResult) -> str:
    resting = result.resting_on_findings()
    out = ['<table class="claims" id="claims"><tr><th>#</th><th>claim</th><th>source</th>'
           "<th>should be observed</th><th>verdict</th><th>evidence</th></tr>"]
    for v in result.claims:
        c = v.claim
        cls = "v-" + v.verdict.split()[0]
        parts = []
        for r in v.results:
            text = f"<b>{_e(r.status)}</b>: {_e(r.expect.describe())}: {_e(r.evidence)}"
            real_status = getattr(r, "real_status", "")
            if real_status:
                text += (f"<br><i>real</i> <b>{_e(real_status)}</b>: "
                         f"{_e(getattr(r, 'real_evidence', ''))}")  # fmt: skip
            if r.token:
                e = r.expect
                text += ('<br><code class="token">'
                         f"{_e(replay_ref(e.scenario, e.userspace, e.column, r.token))}</code>")  # fmt: skip
            parts.append(text)
        for f in resting.get(c.number, []):
            parts.append(f'<span class="flagtext">rests on a flagged cell: {_e(f.line())}</span>')
        note = getattr(c, "note", "")
        if note:
            parts.append(f"<i>{_e(note)}</i>")
        out.append(
            f'<tr><td>{c.number}</td><td class="l w340">{_e(c.text)}</td>'
            f'<td class="l w200">{_e(c.source)}</td><td class="l w260">{_e(c.observe)}</td>'
            f'<td><span class="verdict {cls}">{_e(v.verdict)}</span>{_disagreement(v)}</td>'
            f'<td class="l w420">{"<br>".join(parts)}</td></tr>'
        )
    out.append("</table>")
    return "".join(out)


def _disagreement(v: ClaimVerdict) -> str:
    """Under the verdict: whether a real cell disagrees with the model, and whether its timing
    is the emulator's (the terminal's brackets say the same)."""
    text = v.disagreement_text()
    return f'<br><span class="flagtext">{_e(text)}</span>' if text else ""


def _fidelity(result: LabResult) -> str:
    if not result.has_real:
        return "<p>No real cells in this run (not root, --no-real, or guests cannot run).</p>"
    if not result.findings:
        return "<p>Every real cell agrees with the model cell beside it.</p>"
    rows = []
    for f in result.findings:
        m, r = result.cells.get(f.model), result.cells.get(f.real)
        rows.append(
            f"<tr><td>{_e(f.kind)}</td><td class='l'>{_e(f.where)}</td>"
            f"<td>{_e(_interval(m))}</td><td>{_e(_interval(r))}</td>"
            f"<td class='l w420'>{_e(f.detail)}</td><td class='l w260'>{_e(f.distorted)}</td></tr>"
        )
    return (
        '<table id="fidelity"><tr><th>kind</th><th>cell</th><th>model</th><th>real</th>'
        "<th>finding</th><th>timing-distorted</th></tr>" + "".join(rows) + "</table>"
        '<p class="small">unreached: an outcome the real kernel showed that the model never '
        "reached; disagree: one side never fails while the other fails clearly (its 95% "
        "interval starts at 10% or more); rates: the 95% intervals do not overlap.</p>"
    )


def _interval(cell: CellResult | None) -> str:
    if cell is None or not cell.checked:
        return "-"
    return interval_text(cell.failures, cell.checked)


def _real_columns(result: LabResult) -> str:
    if not result.real:
        return ""
    rows = []
    for c in result.real.values():
        guests = "; ".join(
            f"{g.get('kernel') or '?'}: {g['status']}"
            + (f" (boot {g['boot_seconds']} s, {g['seconds']} s"
               + (f", lockdep {g['lockdep']}" if g.get("lockdep") else "") + ")")
            for g in c.guests
        )  # fmt: skip
        what = _e(c.unavailable) if c.unavailable else _e(guests)
        notes = "<br>".join(_e(n) for n in c.notes[:8])
        rows.append(f"<tr><td class='l'>{_e(c.column)}</td><td class='l w340'>{_e(c.origin)}</td>"
                    f"<td class='l w420'>{what}</td><td class='l w420 small'>{notes}</td></tr>")  # fmt: skip
    return ('<h2>Real columns</h2><table id="real"><tr><th>column</th><th>loop.c</th>'
            "<th>guests</th><th>notes</th></tr>" + "".join(rows) + "</table>")  # fmt: skip


def _plots(result: LabResult) -> str:
    parts: list[str] = []
    for s, u in result.rows:
        model: list[tuple[int, int] | None] = []
        real: list[tuple[int, int] | None] = []
        for c in result.columns:
            m = result.cell(s, u, c, "model")
            r = result.real_cell(s, u, c)
            model.append((m.failures, m.checked) if m is not None and m.checked else None)
            real.append((r.failures, r.checked) if r is not None and r.checked else None)
        if all(v is None for v in model + real):
            continue
        title = f"failure rate per variant: {s} / {row_label(s, u)}"
        if any(v is not None for v in real):
            parts.append(plots.paired_bars(title, result.columns, model, real))
        else:
            parts.append(plots.bar_chart(
                title, result.columns,
                [v[0] / v[1] if v else None for v in model],
                notes=[f"({v[0]}/{v[1]})" if v else "" for v in model],
            ))  # fmt: skip
    ttff_rows = [
        (f"{k.scenario}/{k.userspace}/{k.column}", [float(g) for g in c.failure_gaps()], "model")
        for k, c in result.cells.items()
        if c.failure_runs and k.backend == "model"
    ]
    ttff = plots.distributions(
        "time to first failure (runs until a failure, restarting after each)",
        sorted(ttff_rows), unit="runs", scale=1.0, css="strip", empty="no failures",
    )  # fmt: skip
    host = [c for k, c in result.cells.items() if k.backend == "host"]
    detach = [v for c in host for v in c.measurements.get("detach_delay", [])]
    umount = [v for c in host for v in c.measurements.get("umount_latency", [])]
    hists = (
        plots.histogram("this kernel: detach delay after umount returned", detach)
        + plots.histogram("this kernel: umount latency", umount)
    )
    return (
        '<div class="plots" id="rates">' + "".join(parts) + "</div>"
        '<h3>Time to first failure</h3><div id="ttff">' + ttff + "</div>"
        '<h3>Real kernel latencies</h3><div class="plots" id="latency">' + hists + "</div>"
        + _distributions(result)
    )


#: measurements drawn as distributions, the model's beside the real kernel's: name -> (title,
#: what the scenario measures)
DISTRIBUTIONS: dict[str, tuple[str, str]] = {
    "ebusy_clear": (
        "clearing delay after EBUSY",
        "from the EBUSY umount's return to the start of the first umount2 that succeeds "
        "(retried every millisecond)",
    ),
}


@dataclass(frozen=True)
class DistRow:
    """One cell's samples of a measurement, as drawn."""

    label: str
    kind: str  # model, real or distorted
    cell: CellResult
    samples: list[float]


def distribution_rows(result: LabResult, scenario: str, userspace: str, name: str) -> list[DistRow]:
    """The cells of one row that ran, with their samples of ``name``: the reference model
    and this kernel first (the pair the fidelity check compares), then every other column's
    model and guest. Empty when no cell of the row has a sample."""
    rows: list[DistRow] = []

    def add(cell: CellResult | None, label: str, kind: str) -> None:
        if cell is not None and cell.checked:
            rows.append(DistRow(label, kind, cell, list(cell.measurements.get(name, []))))

    host = result.cell(scenario, userspace, THIS_KERNEL, "host")
    columns = [c for c in result.columns if c != THIS_KERNEL]
    if host is not None and REFERENCE in columns:
        columns.remove(REFERENCE)
        columns.insert(0, REFERENCE)
    for i, column in enumerate(columns):
        add(result.cell(scenario, userspace, column, "model"), f"model {column}", "model")
        if i == 0 and host is not None:
            add(host, _host_label(host), "distorted" if host.timing_distorted else "real")
        vm = result.cell(scenario, userspace, column, "vm")
        if vm is not None:
            guest = "guest, timing-distorted" if vm.timing_distorted else "guest"
            add(vm, f"real {column} ({guest})", "distorted" if vm.timing_distorted else "real")
    if host is not None and not columns:
        add(host, _host_label(host), "distorted" if host.timing_distorted else "real")
    return rows if any(r.samples for r in rows) else []


def _host_label(cell: CellResult) -> str:
    return "real: this kernel" + (" (loaded, timing-distorted)" if cell.timing_distorted else "")


def _distributions(result: LabResult) -> str:
    """Per scenario row and measurement of :data:`DISTRIBUTIONS`: the plot and a table of n,
    median, percentiles and range per cell."""
    parts: list[str] = []
    for s, u in result.rows:
        for name, (title, what) in DISTRIBUTIONS.items():
            rows = distribution_rows(result, s, u, name)
            if not rows:
                continue
            head = f"{title}: {s} / {row_label(s, u)}"
            drawn = [(r.label, r.samples, r.kind) for r in rows if r.samples]
            plot = plots.distributions(head, drawn)  # cells without a sample: the table only
            trs = []
            for r in rows:
                sp = spread(r.samples)
                ms = [] if sp is None else [sp.median, sp.p10, sp.p90, sp.low, sp.high]
                m = [f"{v * 1000:.3g}" for v in ms] or ["-"] * 5
                trs.append(
                    f'<tr class="{_e(r.kind)}"><td class="l">{_e(r.label)}</td>'
                    f"<td>{r.cell.checked}</td><td>{len(r.samples)}</td><td>{m[0]}</td>"
                    f"<td>{m[1]}-{m[2]}</td><td>{m[3]}-{m[4]}</td>"
                    f'<td class="l w260 small">{_e(r.cell.timing_distorted)}</td></tr>'
                )
            parts.append(
                f'<div class="dist" id="dist-{_slug(f"{name}-{s}-{u}")}" data-measure="{name}">'
                f"{plot}<table><tr><th>cell</th><th>runs</th><th>n (measured)</th>"
                "<th>median ms</th><th>p10-p90 ms</th><th>range ms</th><th>timing-distorted"
                "</th></tr>" + "".join(trs) + "</table>"
                f'<p class="small">{_e(title)}: {_e(what)}. The model\'s times are virtual (its '
                "clock), the real kernel's wall-clock; a guest's run under emulation (TCG, "
                "~50x slower) and are not hardware's; this kernel's, marked loaded, ran while "
                "other work kept the CPUs busy.</p></div>"
            )
    if not parts:
        return ""
    return ('<h3>Measured delays, model beside real</h3><div id="distributions">'
            + "".join(parts) + "</div>")  # fmt: skip


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


def _lockdep_pair(real: str, model: str) -> str:
    """A real lockdep report beside the model's for the same cell: each report's cycle, the
    task and stack that closed it, and the whole text."""
    from loopdev.vm.lockdep_report import parse_reports

    def side(title: str, text: str) -> str:
        reps = parse_reports(text)
        head = "(no report parsed)"
        if reps:
            r = reps[0]
            cycle = [f"   {c}" if i else f"#0 {c}" for i, c in enumerate(r.classes)]
            closing = "\n   <- ".join(r.closing_stack()[:6]) or r.call_function
            head = "\n".join([r.title, "the cycle, each taken while holding the one above:",
                              *cycle, f"closed by {r.thread or '?'} in {closing}",
                              f"holding {', '.join(r.held)}" if r.held else ""])  # fmt: skip
        return (f"<div><h4>{_e(title)}</h4><pre>{_e(head)}</pre><details><summary>the whole "
                f"report</summary><pre>{_e(text[:8000])}</pre></details></div>")  # fmt: skip

    return ('<div class="pair lockdep">' + side("real kernel (lockdep 6.1)", real)
            + (side("the model, same cell", model) if model else
               "<div><h4>the model, same cell</h4><p>no lockdep report in the model</p></div>")
            + "</div>")  # fmt: skip


def failure_section(
    key: CellKey,
    ex: Example,
    count: int,
    checked: int,
    *,
    draw: bool = True,
    n: int = 0,
    model_lockdep: str = "",
) -> str:
    """One failure (number ``n`` on the page): message, replay handle and token, lockdep
    report (a real one beside the model's ``model_lockdep`` for the same cell), sequence
    diagram, trace JSON."""
    where = {"vm": " (real, guest)", "host": " (real)"}.get(key.backend, "")
    title = (f"{key.scenario} / {USERSPACES.get(key.userspace, key.userspace)} / "
             f"{key.column}{where}: {ex.label}")  # fmt: skip
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
        handle = f"{key.scenario}/{key.userspace}/{key.column}/{short_handle(ex.token)}"
        parts.append(f'<p class="small">replay: <code>loopdev lab replay {_e(handle)}</code> '
                     f'(this version of loopdev) or, with the recorded schedule, '
                     f'<code class="token">loopdev lab replay {_e(ref)}</code></p>')  # fmt: skip
    if ex.lockdep and key.backend != "model":
        parts.append(_lockdep_pair(ex.lockdep, model_lockdep))
    elif ex.lockdep:
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
            key, ex, cell.counts.get(ex.label, 0), cell.checked, draw=i < MAX_DRAWN, n=i + 1,
            model_lockdep=_model_lockdep(result, key),
        )
        for i, (key, cell, ex) in enumerate(found)
    ]  # fmt: skip
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
        + "<h2>Plots</h2>" + _plots(result)
        + "<h2>Claims (the 2022 linux-block thread)</h2>" + _claims(result)
        + "<h2>Model and real, per variant</h2>" + _fidelity(result)
        + _real_columns(result)
        + (f"<h2>Notes</h2><ul>{notes}</ul>" if notes else "")
        + "<h2>Scenarios</h2><table><tr><th>scenario</th><th>what</th><th>shape of</th></tr>"
        + scen + "</table>"
        + f"<h2>Failures ({len(failures)})</h2>"
        + ("".join(failures) if failures else "<p>No failures found.</p>")
        + "</body></html>"
    )


def _model_lockdep(result: LabResult, key: CellKey) -> str:
    """The model's lockdep report text for a real cell's row and column (first example that
    has one), for drawing beside the real report."""
    if key.backend == "model":
        return ""
    model = result.cells.get(key.on("model", REFERENCE if key.backend == "host" else None))
    if model is None:
        return ""
    return next((ex.lockdep for ex in model.examples.values() if ex.lockdep), "")


def write(result: LabResult, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(render(result))
