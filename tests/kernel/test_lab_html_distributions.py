"""The HTML report of a real lab run (the model and this machine's kernel, iouring-kill on
v6.11) draws the clearing delay after EBUSY of both side by side: each with its number of
samples and its median, as the run measured them."""

from __future__ import annotations

import re

from loopdev.lab import html
from loopdev.lab.cells import LabConfig
from loopdev.lab.outcome import THIS_KERNEL
from loopdev.lab.realkernel import util_linux_row
from loopdev.lab.runner import run_lab, to_json
from loopdev.lab.stats import spread


def _table_rows(block: str) -> dict[str, list[str]]:
    """The distribution table's rows: label -> the other cells' text."""
    rows: dict[str, list[str]] = {}
    for tr in re.findall(r"<tr class=\"\w+\">(.*?)</tr>", block):
        cells = [re.sub(r"<[^>]+>", "", td) for td in re.findall(r"<td[^>]*>(.*?)</td>", tr)]
        rows[cells[0]] = cells[1:]
    return rows


def test_html_shows_model_and_real_clearing_delays_from_the_run() -> None:
    row = util_linux_row()
    assert row is not None, "util-linux mount(8) not found"
    cfg = LabConfig(
        scenarios=["iouring-kill"],
        variants=["v6.11"],
        userspaces=[row],
        budget=12,
        real_trials={"iouring-kill": 12},
        vm=False,
        host_lock=False,  # the session holds the machine lock
        workers=2,
    )
    result = run_lab(cfg)
    model = result.cell("iouring-kill", row, "v6.11", "model")
    host = result.cell("iouring-kill", row, THIS_KERNEL, "host")
    assert model is not None and host is not None, result.notes
    page = html.render(result)
    as_json = {(c["column"], c["backend"]): c for c in to_json(result)["cells"]}

    m = re.search(r'<div class="dist" id="dist-ebusy-clear-iouring-kill-[^"]*"(.*?)</div>', page)
    assert m, "no clearing-delay section in the report"
    block = m.group(1)
    rows = _table_rows(block)
    real = next(label for label in rows if label.startswith("real: this kernel"))
    assert ("loaded" in real) == bool(host.timing_distorted)  # other work's load is marked
    for label, cell in (("model v6.11", model), (real, host)):
        samples = cell.measurements.get("ebusy_clear", [])
        assert samples, (label, cell.counts)  # both saw EBUSY, so both measured
        sp = spread(samples)
        assert sp is not None
        runs, n, median, p10_p90, span = rows[label][:5]
        assert p10_p90 == f"{sp.p10 * 1000:.3g}-{sp.p90 * 1000:.3g}"
        assert (int(runs), int(n)) == (cell.checked, len(samples))
        assert float(median) == float(f"{sp.median * 1000:.3g}")
        assert span == f"{sp.low * 1000:.3g}-{sp.high * 1000:.3g}"
        # the plot: one dot per sample, and the median named in its row
        assert block.count(f"<title>{label}: ") == len(samples) + 2
        assert f"<title>{label}: median {sp.median * 1000:.3g} ms</title>" in block
        # --json carries the same figures (seconds)
        got = as_json[(cell.key.column, cell.key.backend)]["measurement_spread"]["ebusy_clear"]
        assert (got["n"], got["median"]) == (len(samples), round(sp.median, 6))
