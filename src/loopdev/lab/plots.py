"""Small inline-SVG plots for the HTML report: bars, histograms, strip plots and measured
distributions side by side.

No JavaScript and no external assets: every plot is one ``<svg>`` element with ``<title>``
tooltips on its marks.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from loopdev.lab.stats import interval_text, spread, wilson

_FONT = "font:11px system-ui,sans-serif"


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * exp:
            return float(m * exp)
    return float(10 * exp)


def bar_chart(
    title: str,
    labels: Sequence[str],
    values: Sequence[float | None],
    *,
    percent: bool = True,
    width: int = 460,
    notes: Sequence[str] | None = None,
) -> str:
    """Vertical bars, one per label; ``None`` draws a grey 'not run' stub."""
    n = max(1, len(labels))
    left, bottom, top = 40, 70, 24
    height = 200
    plot_w = width - left - 10
    plot_h = height - top - bottom
    vmax = 1.0 if percent else _nice_max(max([v for v in values if v is not None] or [0]))
    bw = plot_w / n
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot bars" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" style="{_FONT}">',
        f'<text x="{left}" y="14" font-weight="bold">{_esc(title)}</text>',
    ]
    for frac in (0.0, 0.5, 1.0):
        y = top + plot_h * (1 - frac)
        tick = f"{frac * 100:.0f}%" if percent else f"{frac * vmax:g}"
        out.append(
            f'<line x1="{left}" y1="{y}" x2="{width - 10}" y2="{y}" stroke="#ddd"/>'
            f'<text x="{left - 4}" y="{y + 4}" text-anchor="end" fill="#666">{tick}</text>'
        )
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        x = left + i * bw + bw * 0.15
        w = bw * 0.7
        note = notes[i] if notes and i < len(notes) else ""
        if v is None:
            out.append(
                f'<rect x="{x}" y="{top + plot_h - 2}" width="{w}" height="2" fill="#bbb">'
                f"<title>{_esc(label)}: not run {_esc(note)}</title></rect>"
            )
        else:
            h = plot_h * min(1.0, v / vmax) if vmax else 0
            color = "#c0392b" if v > 0 else "#2e8b57"
            shown = f"{v * 100:.1f}%" if percent else f"{v:g}"
            out.append(
                f'<rect class="bar" x="{x}" y="{top + plot_h - max(h, 1.5)}" width="{w}" '
                f'height="{max(h, 1.5)}" fill="{color}"><title>{_esc(label)}: {shown} '
                f"{_esc(note)}</title></rect>"
            )
        out.append(_xlabel(x + w / 2, top + plot_h + 8, label))
    out.append("</svg>")
    return "".join(out)


def _xlabel(x: float, y: float, label: str) -> str:
    """A bar's label under the axis, turned 40 degrees."""
    return f'<text x="{x}" y="{y}" transform="rotate(40 {x} {y})" fill="#333">{_esc(label)}</text>'


def _percent_grid(left: int, right: float, top: int, plot_h: int) -> str:
    """Grid lines and ticks at 0, 50 and 100%."""
    out = []
    for frac in (0.0, 0.5, 1.0):
        y = top + plot_h * (1 - frac)
        out.append(
            f'<line x1="{left}" y1="{y}" x2="{right}" y2="{y}" stroke="#ddd"/>'
            f'<text x="{left - 4}" y="{y + 4}" text-anchor="end" fill="#666">{frac * 100:.0f}%</text>'
        )
    return "".join(out)


def paired_bars(
    title: str,
    labels: Sequence[str],
    model: Sequence[tuple[int, int] | None],
    real: Sequence[tuple[int, int] | None],
    *,
    width: int = 520,
) -> str:
    """Per label two bars, the model's failure rate and the real one's, each ``(failures,
    runs with a verdict)`` or None (not run), with its 95% Wilson interval as a whisker."""
    n = max(1, len(labels))
    left, bottom, top, height = 40, 70, 24, 210
    plot_w, plot_h = width - left - 10, height - top - bottom
    bw = plot_w / n
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot bars paired" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" style="{_FONT}">',
        f'<text x="{left}" y="14" font-weight="bold">{_esc(title)}</text>',
        f'<text x="{width - 10}" y="14" text-anchor="end" fill="#555">'
        f'<tspan fill="#c0392b">&#9632;</tspan> model '
        f'<tspan fill="#e67e22">&#9632;</tspan> real (95% interval)</text>',
    ]
    out.append(_percent_grid(left, width - 10, top, plot_h))
    for i, label in enumerate(labels):
        for j, (side, fills) in enumerate(
            ((model, ("#c0392b", "#2e8b57")), (real, ("#e67e22", "#7fb3d5")))
        ):
            kn = side[i] if i < len(side) else None
            x = left + i * bw + bw * (0.1 + 0.4 * j)
            w = bw * 0.38
            who = ("model", "real")[j]
            if kn is None or kn[1] == 0:
                out.append(
                    f'<rect x="{x}" y="{top + plot_h - 2}" width="{w}" height="2" fill="#bbb">'
                    f"<title>{_esc(label)} {who}: not run</title></rect>"
                )
                continue
            k, runs = kn
            h = max(1.5, plot_h * k / runs)
            lo, hi = wilson(k, runs)
            out.append(
                f'<rect class="bar" x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{w:.1f}" '
                f'height="{h:.1f}" fill="{fills[0] if k else fills[1]}"><title>{_esc(label)} '
                f"{who}: {_esc(interval_text(k, runs))}</title></rect>"
                f'<line x1="{x + w / 2:.1f}" y1="{top + plot_h * (1 - hi):.1f}" '
                f'x2="{x + w / 2:.1f}" y2="{top + plot_h * (1 - lo):.1f}" stroke="#222"/>'
            )
        out.append(_xlabel(left + i * bw + bw * 0.3, top + plot_h + 8, label))
    out.append("</svg>")
    return "".join(out)


def histogram(
    title: str,
    samples: Sequence[float],
    *,
    unit: str = "ms",
    scale: float = 1000.0,
    bins: int = 24,
    width: int = 460,
) -> str:
    """A histogram of ``samples`` (seconds, shown times ``scale`` in ``unit``)."""
    height, left, bottom, top = 190, 40, 36, 24
    plot_w, plot_h = width - left - 10, height - top - bottom
    vals = sorted(v * scale for v in samples)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot hist" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" style="{_FONT}">',
        f'<text x="{left}" y="14" font-weight="bold">{_esc(title)}</text>',
    ]
    if not vals:
        out.append(
            f'<text x="{left}" y="{top + plot_h / 2}" fill="#888">no samples</text></svg>'
        )
        return "".join(out)
    lo, hi = vals[0], vals[-1]
    if hi <= lo:
        hi = lo + 1e-9 + abs(lo) * 0.1 + (1.0 if lo == 0 else 0.0)
    counts = [0] * bins
    for v in vals:
        counts[min(bins - 1, int((v - lo) / (hi - lo) * bins))] += 1
    cmax = max(counts)
    bw = plot_w / bins
    for i, c in enumerate(counts):
        h = plot_h * c / cmax
        a = lo + (hi - lo) * i / bins
        b = lo + (hi - lo) * (i + 1) / bins
        out.append(
            f'<rect class="bin" x="{left + i * bw}" y="{top + plot_h - h}" width="{bw - 1}" '
            f'height="{h}" fill="#3b6fb6"><title>{a:.3g} to {b:.3g} {unit}: {c}</title></rect>'
        )
    med = vals[len(vals) // 2]
    out.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 10}" y2="{top + plot_h}" '
        f'stroke="#333"/><text x="{left}" y="{height - 18}" fill="#333">{lo:.3g} {unit}</text>'
        f'<text x="{width - 10}" y="{height - 18}" text-anchor="end" fill="#333">'
        f"{hi:.3g} {unit}</text>"
        f'<text x="{left + plot_w / 2}" y="{height - 4}" text-anchor="middle" fill="#555">'
        f"n={len(vals)}, median {med:.3g} {unit}, max {vals[-1]:.3g} {unit}</text>"
    )
    out.append("</svg>")
    return "".join(out)


#: the colours of :func:`distributions`' rows, by kind
_KIND_FILL = {"model": "#c0392b", "real": "#e67e22", "distorted": "#999999"}


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks from the last one below ``lo`` (so no sample sits on the axis's edge) to the
    first at or above ``hi`` (both > 0)."""
    e = math.floor(math.log10(lo)) - 1
    ticks = [m * 10.0**k for k in range(e, e + 3 + math.ceil(math.log10(hi / lo) + 1))
             for m in (1, 2, 5)]  # fmt: skip
    first = max(i for i, t in enumerate(ticks) if t < lo * (1 - 1e-9))
    last = min(i for i, t in enumerate(ticks) if t >= hi * (1 - 1e-9))
    return ticks[first : last + 1] if last > first else ticks[first : first + 2]


def distributions(
    title: str,
    rows: Sequence[tuple[str, Sequence[float], str]],
    *,
    unit: str = "ms",
    scale: float = 1000.0,
    width: int = 760,
    css: str = "dist",
    empty: str = "no samples",
) -> str:
    """One row per ``(label, samples, kind)`` on a shared log axis in ``unit`` (samples times
    ``scale``: seconds to ms by default): a dot per sample, a bar from the 10th to the 90th
    percentile and a tick at the median. ``kind`` colours the row: ``model``, ``real`` or
    ``distorted`` (a real cell whose timing is not hardware's, grey); the legend names the
    kinds the rows have. A row without samples says so; ``empty`` is said when none has any."""
    # the labels' column as wide as the longest label (about 6.5 px a character)
    left = max(250, 12 + math.ceil(6.5 * max((len(label) for label, _, _ in rows), default=0)))
    right, top, row_h = 20, 40, 24
    height = top + row_h * max(1, len(rows)) + 34
    plot_w = width - left - right
    allv = [v * scale for _, vs, _ in rows for v in vs if v > 0]
    names = {"model": "model", "real": "real", "distorted": "real, timing-distorted"}
    kinds = [k for k in names if any(kind == k for _, _, kind in rows)]
    legend = " ".join(f'<tspan fill="{_KIND_FILL[k]}">&#9679;</tspan> {names[k]}' for k in kinds)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot {css}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" style="{_FONT}">',
        f'<text x="4" y="14" font-weight="bold">{_esc(title)}</text>',
        f'<text x="4" y="30" fill="#555">{legend}; bar: 10th-90th percentile; tick: median'
        "</text>",
    ]
    if not allv:
        out.append(f'<text x="{left}" y="{top + 12}" fill="#888">{_esc(empty)}</text></svg>')
        return "".join(out)
    ticks = _log_ticks(min(allv), max(allv))
    llo, lhi = math.log10(ticks[0]), math.log10(ticks[-1])

    def xpos(v: float) -> float:
        v = max(v, ticks[0])
        return left + plot_w * (math.log10(v) - llo) / (lhi - llo) if lhi > llo else left

    axis_y = top + row_h * len(rows) + 4
    out.append(
        f'<line x1="{left}" y1="{axis_y}" x2="{width - right}" y2="{axis_y}" stroke="#333"/>'
    )
    for t in ticks:
        out.append(
            f'<line x1="{xpos(t):.1f}" y1="{top}" x2="{xpos(t):.1f}" y2="{axis_y}" '
            f'stroke="#eee"/><text x="{xpos(t):.1f}" y="{axis_y + 14}" '
            f'text-anchor="middle" fill="#555">{t:g}</text>'
        )
    for i, (label, vs, kind) in enumerate(rows):
        y = top + i * row_h + row_h / 2
        fill = _KIND_FILL.get(kind, "#3b6fb6")
        sp = spread(vs)
        out.append(
            f'<text x="{left - 6}" y="{y + 4}" text-anchor="end">{_esc(label)}</text>'
            f'<line x1="{left}" y1="{y}" x2="{width - right}" y2="{y}" stroke="#f4f4f4"/>'
        )
        if sp is None:
            out.append(f'<text x="{left + 4}" y="{y + 4}" fill="#888">no samples</text>')
            continue
        out.append(
            f'<rect class="spread" x="{xpos(sp.p10 * scale):.1f}" y="{y - 4}" '
            f'width="{max(1.0, xpos(sp.p90 * scale) - xpos(sp.p10 * scale)):.1f}" height="8" '
            f'fill="{fill}" opacity="0.25"><title>{_esc(label)}: {_esc(sp.text(scale, unit))}'
            f"</title></rect>"
        )
        for j, v in enumerate(vs):
            dy = ((j * 7) % 9 - 4) * 1.2  # a fixed jitter, so equal values stay visible
            out.append(
                f'<circle class="dot" cx="{xpos(v * scale):.1f}" cy="{y + dy:.1f}" r="2.5" '
                f'fill="{fill}" opacity="0.6"><title>{_esc(label)}: {v * scale:.3g} {unit}'
                f"</title></circle>"
            )
        med = xpos(sp.median * scale)
        out.append(
            f'<line class="median" x1="{med:.1f}" y1="{y - 9}" x2="{med:.1f}" y2="{y + 9}" '
            f'stroke="#222" stroke-width="2"><title>{_esc(label)}: median '
            f"{sp.median * scale:.3g} {unit}</title></line>"
        )
    out.append(
        f'<text x="{width - right}" y="{axis_y + 28}" text-anchor="end" fill="#555">{unit} '
        f"(log)</text></svg>"
    )
    return "".join(out)
