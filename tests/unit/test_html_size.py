"""The HTML report embeds each failure's Perfetto trace compressed: the page stays small, and
what a click unpacks is exactly the trace JSON the lab produced for that failure."""

from __future__ import annotations

import json
import re

import pytest

from loopdev.lab import html
from loopdev.lab.cells import LabConfig
from loopdev.lab.diagram import chrome_trace_json
from loopdev.lab.runner import LabResult, run_lab

LINK = re.compile(r'<a href="#[^"]+" data-trace="([^"]+)" data-file="([^"]+)">')


@pytest.fixture(scope="module")
def result() -> LabResult:
    cfg = LabConfig(
        scenarios=["mount-loop+udev", "nested-umount"],
        variants=["v5.17-rc1"],
        userspaces=["util-linux-2.37", "loopdev"],
        budget=12,
        real=False,
        workers=1,
    )
    return run_lab(cfg)


def _embedded(page: str) -> dict[str, str]:
    """Download file name -> the base64 text of the inert element its link points at."""
    out: dict[str, str] = {}
    for tid, name in LINK.findall(page):
        m = re.search(rf'<script type="application/gzip" id="{re.escape(tid)}">([^<]*)</script>', page)
        assert m, f"link to {tid} has no embedded trace"
        out[name] = m.group(1)
    return out


def test_unpacked_traces_are_the_lab_trace_json(result: LabResult) -> None:
    page = html.render(result)
    expected = {
        chrome_trace_json(ex.events, process=f"{key.scenario} on {key.column}")
        for key, cell in result.cells.items()
        for ex in cell.examples.values()
        if ex.events and ex.label != "unsupported"
    }
    assert expected, "the run found no failure with a trace"
    embedded = _embedded(page)
    assert len(embedded) == len(expected)
    unpacked = {html.unpack(data) for data in embedded.values()}
    assert unpacked == expected
    for text in unpacked:
        assert isinstance(json.loads(text)["traceEvents"], list)
    for n, name in enumerate(sorted(embedded, key=lambda s: int(s.split("-")[-1].split(".")[0]))):
        assert re.fullmatch(rf"failure-[a-z0-9-]+-{n + 1}\.perfetto\.json", name), name


def test_traces_are_embedded_compressed_not_as_data_uris(result: LabResult) -> None:
    page = html.render(result)
    embedded = _embedded(page)
    assert "data:application/json" not in page
    for data in embedded.values():
        # the lab's traces are repetitive: gzip+base64 is well under a quarter of the JSON
        assert len(data) * 4 < len(html.unpack(data))
    # every failure costs the page far less than its trace JSON did as a data: URI (~4/3 x)
    raw = sum(len(html.unpack(d)) for d in embedded.values())
    assert len(page.encode()) < raw / 2


def test_only_the_page_script_runs_and_nothing_is_fetched(result: LabResult) -> None:
    page = html.render(result)
    scripts = re.findall(r"<script([^>]*)>", page)
    assert scripts.count("") == 1  # the click handler
    assert all(s.startswith(' type="application/gzip"') for s in scripts if s)
    assert not re.search(r"\bsrc=", page)
    assert "fetch(" not in page and "XMLHttpRequest" not in page


def test_pack_round_trips_and_is_deterministic() -> None:
    text = '{"traceEvents":[{"ph":"i","name":"é ✗"}]}'
    assert html.unpack(html.pack(text)) == text
    assert html.pack(text) == html.pack(text)
