"""Open the lab's HTML report in headless Chromium and check, from a screenshot and from the
DOM Chromium built, that the matrix, the plots and at least one sequence diagram render, and,
driving Chromium over the DevTools protocol, that clicking a failure's trace link downloads
its Perfetto JSON (unpacked in the page from the embedded gzip).

The report comes from a real (small) lab run on the model, so the diagram is a real failing
interleaving found by exploration.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from loopdev.lab import html
from loopdev.lab.cells import LabConfig
from loopdev.lab.runner import run_lab

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (LOOPDEV_FOR_TESTS=1 scripts/setup.sh installs it)")


def _png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA PNG (what Chromium writes) into rows of pixel bytes."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, ctype = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert depth == 8
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    bpp = {2: 3, 6: 4}[ctype]
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    i = 0
    for _ in range(height):
        f, line = raw[i], bytearray(raw[i + 1 : i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 0xFF
            elif f == 2:
                line[x] = (line[x] + b) & 0xFF
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[x] = (line[x] + pred) & 0xFF
        rows.append(bytes(line if bpp == 3 else bytes(v for j, v in enumerate(line) if j % 4 != 3)))
        prev = line
    return width, height, rows


def _count_color(rows: list[bytes], rgb: tuple[int, int, int], tol: int = 12) -> int:
    n = 0
    for row in rows[::2]:
        for x in range(0, len(row) - 2, 6):
            r, g, b = row[x], row[x + 1], row[x + 2]
            if abs(r - rgb[0]) <= tol and abs(g - rgb[1]) <= tol and abs(b - rgb[2]) <= tol:
                n += 1
    return n


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = LabConfig(
        scenarios=["mount-loop+udev", "nested-umount", "iouring-kill"],
        variants=["v5.17-rc1", "v6.11"],
        userspaces=["util-linux-2.37", "loopdev"],
        budget=40,
        real=False,
        workers=2,
    )
    result = run_lab(cfg)
    path = tmp_path_factory.mktemp("report") / "lab.html"
    html.write(result, str(path))
    return path


def _env(profile: Path) -> dict[str, str]:
    """Chromium's environment: its singleton socket directory goes under the test's own
    temporary directory, not /tmp, so nothing outlives the test."""
    return {**os.environ, "TMPDIR": str(profile.parent)}


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[bytes]:
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        timeout=120,
        env=_env(profile),
    )


def test_report_is_self_contained(report: Path) -> None:
    text = report.read_text()
    # one inline script (the trace download handler); the other script elements are inert data
    scripts = re.findall(r"<script([^>]*)>", text)
    assert scripts.count("") == 1
    assert all(s.startswith(' type="application/gzip"') for s in scripts if s)
    # no external resources: every src/href is a data: URI or an in-page anchor
    for ref in re.findall(r'(?:src|href)="([^"]*)"', text):
        assert ref.startswith(("data:", "#")), ref
    assert "<link" not in text


def test_chromium_renders_matrix_plots_and_a_sequence_diagram(
    report: Path, tmp_path: Path
) -> None:
    dom = _chromium(["--dump-dom", report.as_uri()], tmp_path / "p1")
    assert dom.returncode == 0, dom.stderr.decode()[-2000:]
    page = dom.stdout.decode()
    assert 'id="matrix"' in page and page.count("<tr>") > 3
    assert len(re.findall(r'<svg[^>]*class="plot bars"', page)) >= 1
    assert re.search(r'<svg[^>]*class="plot strip"', page)
    # iouring-kill's clearing delays: a plot with a dot per measured run, and its table
    dist = re.search(r'<div class="dist" id="dist-ebusy-clear-iouring-kill-util-linux-2-37"'
                     r'.*?<svg[^>]*class="plot dist".*?</svg>(.*?)</div>', page, re.S)  # fmt: skip
    assert dist, "no clearing-delay distribution in the report"
    assert "model v6.11" in dist.group(1) and "median ms" in dist.group(1)
    assert len(re.findall(r'<circle class="dot"[^>]*fill="#c0392b"', dist.group(0))) >= 10
    assert re.search(r'<svg[^>]*class="seq"', page), "no sequence diagram in the report"
    assert "Chrome/Perfetto trace JSON" in page

    shot = tmp_path / "shot.png"
    r = _chromium(
        ["--hide-scrollbars", "--window-size=1500,2600", f"--screenshot={shot}", report.as_uri()],
        tmp_path / "p2",
    )
    assert r.returncode == 0 and shot.exists(), r.stderr.decode()[-2000:]
    width, height, rows = _png_pixels(shot.read_bytes())
    assert (width, height) == (1500, 2600)
    # matrix cells (green = no failure, red = failures) and red failure bars are painted
    assert _count_color(rows, (0xE8, 0xF5, 0xE9)) + _count_color(rows, (0xFD, 0xEC, 0xEA)) > 50
    assert _count_color(rows, (0xC0, 0x39, 0x2B), tol=20) > 20
    # the page is not blank: plenty of non-white pixels
    dark = sum(1 for row in rows[::4] for x in range(0, len(row), 12) if row[x] < 128)
    assert dark > 500


class _DevTools:
    """Chromium driven over ``--remote-debugging-pipe`` (DevTools protocol messages, NUL
    separated, on the browser's fds 3 and 4)."""

    def __init__(self, profile: Path) -> None:
        assert CHROMIUM is not None
        to_chrome, self._w = os.pipe()
        self._r, from_chrome = os.pipe()
        self.proc = subprocess.Popen(
            ["bash", "-c", f'exec "$@" 3<&{to_chrome} 4>&{from_chrome}', "bash", CHROMIUM, *FLAGS,
             f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            pass_fds=(to_chrome, from_chrome),
            env=_env(profile),
            stdout=subprocess.DEVNULL,
            stderr=(profile.parent / f"{profile.name}.log").open("wb"),
        )  # fmt: skip
        self.log = profile.parent / f"{profile.name}.log"
        os.close(to_chrome)
        os.close(from_chrome)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []

    def close(self) -> None:
        os.close(self._w)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._r)

    def _message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            assert left > 0, "Chromium did not answer in time"
            ready, _, _ = select.select([self._r], [], [], left)
            if ready:
                chunk = os.read(self._r, 1 << 16)
                assert chunk, "Chromium closed the DevTools pipe: " + self.log.read_text()[-3000:]
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        msg: dict[str, Any] = json.loads(raw)
        return msg

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command, return its result (events that arrive meanwhile are kept)."""
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + 60
        while True:
            reply = self._message(deadline)
            if reply.get("id") == self._id:
                assert "error" not in reply, reply
                result: dict[str, Any] = reply["result"]
                return result
            self.events.append(reply)

    def evaluate(self, session: str, expression: str) -> Any:
        r = self.call(
            "Runtime.evaluate", session, expression=expression, returnByValue=True,
            awaitPromise=True, userGesture=True,
        )  # fmt: skip
        assert "exceptionDetails" not in r, r["exceptionDetails"]
        return r["result"].get("value")


def test_chromium_downloads_a_failure_trace_as_perfetto_json(report: Path, tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    devtools = _DevTools(tmp_path / "p3")
    try:
        devtools.call("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads))
        target = devtools.call("Target.createTarget", url=report.as_uri())["targetId"]
        session = devtools.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        deadline = time.monotonic() + 60
        loaded = f"location.href === {json.dumps(report.as_uri())} && document.readyState === 'complete'"
        while not devtools.evaluate(session, loaded):  # (not the initial about:blank)
            assert time.monotonic() < deadline, "the report did not finish loading"
            time.sleep(0.2)
        link = devtools.evaluate(
            session,
            "(() => { const a = document.querySelector('a[data-trace]'); a.click();"
            " return {file: a.dataset.file, id: a.dataset.trace,"
            " text: a.textContent}; })()",
        )
        assert link["text"] == "Chrome/Perfetto trace JSON"
        assert re.fullmatch(r"failure-[a-z0-9-]+-1\.perfetto\.json", link["file"]), link
        saved = downloads / link["file"]
        while not saved.exists():
            assert time.monotonic() < deadline, f"nothing downloaded: {os.listdir(downloads)}"
            time.sleep(0.2)
        # the page's own unpacking, evaluated directly, gives the same text
        in_page = devtools.evaluate(session, f"loopdevTrace({json.dumps(link['id'])}).then(b => b.text())")
    finally:
        devtools.close()
    text = saved.read_text()
    trace = json.loads(text)
    assert isinstance(trace["traceEvents"], list) and trace["traceEvents"]
    assert any(e.get("ph") == "B" for e in trace["traceEvents"])
    assert in_page == text
    page = report.read_text()
    m = re.search(rf'<script type="application/gzip" id="{link["id"]}">([^<]*)</script>', page)
    assert m and html.unpack(m.group(1)) == text
