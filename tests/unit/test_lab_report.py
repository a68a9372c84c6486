"""What a person reads after ``loopdev lab``: the matrix with model and real cells side by side,
one line per kind of failure with a short replay handle, a real lockdep report beside the
model's, the fidelity findings, and the whole default output in about 60 lines; ``--json``
cells carrying their backend and column. Built on a small real model run, with real cells as a
guest would return them (a recorded lockdep console among them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loopdev.cli.main import main
from loopdev.lab import fidelity, html, report
from loopdev.lab.cells import LabConfig
from loopdev.lab.claims import judge_all
from loopdev.lab.outcome import PASS, THIS_KERNEL, CellKey, CellResult, Outcome, RunRecord
from loopdev.lab.runner import LabResult, run_lab, to_json
from loopdev.lab.vmcells import RealColumn
from loopdev.sim.loop import VARIANTS
from loopdev.vm.lockdep_report import lockdep_outcome, parse_reports
from loopdev.vm.userspaces import UDEV_DISTORTION, timing_distortion

CONSOLE = Path(__file__).resolve().parents[1] / "vm" / "data" / "resume-chain-v5.16.console"
EIO = Outcome("fail", "mount: EIO", "mount: /x: can't read superblock on /dev/loop0.")
UDEV = UDEV_DISTORTION
NA = "needs new block-layer callbacks (->post_release), which a module cannot add"


def _real(key: CellKey, outcomes: list[Outcome], *, lockdep: str = "", distorted: str = "",
          planned: int = 0) -> CellResult:  # fmt: skip
    c = CellResult(key, strategy="real trials", planned=planned or len(outcomes),
                   timing_distorted=distorted)  # fmt: skip
    for i, o in enumerate(outcomes):
        c.add(RunRecord(i, o, lockdep=lockdep if o.kind == "lockdep" else "",
                        lockdep_kinds=(o.failure,) if o.kind == "lockdep" else ()))  # fmt: skip
    c.cut = max(0, c.planned - c.runs)
    return c


def _finish(base: LabResult, extra: dict[CellKey, CellResult], real: dict[str, RealColumn],
            columns: list[str]) -> LabResult:  # fmt: skip
    cells = {**base.cells, **extra}
    findings = fidelity.compare(cells)
    return LabResult(
        config=base.config, rows=base.rows, columns=columns, cells=cells,
        claims=judge_all(cells), gaps=[f.line() for f in findings], notes=[], seconds=1.0,
        scenario_titles=base.scenario_titles, real=real,
        distorted={k: c.timing_distorted for k, c in cells.items() if c.timing_distorted},
        findings=findings,
    )  # fmt: skip


@pytest.fixture(scope="module")
def result() -> LabResult:
    cfg = LabConfig(
        scenarios=["mount-loop+udev", "mount-loop", "resume-chain"],
        variants=["v5.16", "v5.17-rc1", "post-release-2026"],
        userspaces=["util-linux-2.37", "loopdev"],
        budget=8, real=False, workers=1,
    )  # fmt: skip
    base = run_lab(cfg)
    (rep,) = parse_reports(CONSOLE.read_text(errors="replace"))[:1]
    found = lockdep_outcome([rep])
    assert found is not None
    outcome, text = found
    vm = {
        CellKey("mount-loop", "util-linux-2.37", "v5.17-rc1", "vm"): _real(
            CellKey("mount-loop", "util-linux-2.37", "v5.17-rc1", "vm"), [EIO] * 6),
        CellKey("mount-loop+udev", "util-linux-2.37", "v5.17-rc1", "vm"): _real(
            CellKey("mount-loop+udev", "util-linux-2.37", "v5.17-rc1", "vm"),
            [PASS] * 6, distorted=UDEV),
        CellKey("mount-loop", "loopdev", "v5.16", "vm"): _real(
            CellKey("mount-loop", "loopdev", "v5.16", "vm"), [PASS] * 2, planned=10),
        CellKey("resume-chain", "loopdev", "v5.16", "vm"): _real(
            CellKey("resume-chain", "loopdev", "v5.16", "vm"), [outcome], lockdep=text),
        CellKey("mount-loop", "loopdev", "my-fix", "vm"): _real(
            CellKey("mount-loop", "loopdev", "my-fix", "vm"), [PASS] * 4),
    }  # fmt: skip
    real = {
        "v5.16": RealColumn("v5.16", "v5.16", "v5.16", kernels=["debian", "lockdep"]),
        "v5.17-rc1": RealColumn("v5.17-rc1", "v5.17-rc1", "v5.17-rc1", kernels=["debian"]),
        "post-release-2026": RealColumn("post-release-2026", "post-release-2026",
                                        "post-release-2026", unavailable=NA),
        "my-fix": RealColumn("my-fix", None, "/tmp/my-fix.patch", kernels=["debian"]),
    }  # fmt: skip
    return _finish(base, vm, real, [*cfg.variants, "my-fix"])


def _row(table: str, scenario: str, userspace: str) -> list[str]:
    lines = table.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(scenario + " "))
    for line in lines[start:]:
        words = line.split()
        if report.ROW_SHORT[userspace] in words:
            return words[words.index(report.ROW_SHORT[userspace]) + 1 :]
    raise AssertionError(f"no row {scenario} {userspace}")


def test_matrix_shows_model_and_real_side_by_side(result: LabResult) -> None:
    table = report.matrix_table(result)
    head2 = table.splitlines()[2].split()
    # 5.16 and 5.17-rc1: mod + vm; post-rel26: mod + vm (n/a); my-fix: vm only
    assert head2 == ["mod", "vm", "mod", "vm", "mod", "vm", "vm"]
    assert "my-fix" in table.splitlines()[1]
    ml37 = _row(table, "mount-loop", "util-linux-2.37")
    assert ml37[-5:] == ["100", "100", "0", "n/a", "-"]  # 5.17-rc1 mod, vm; post-rel26; my-fix
    udev = _row(table, "mount-loop+udev", "util-linux-2.37")
    assert udev[3] == "0!~"  # real v5.17-rc1 never fails with udev: flagged, distorted
    lib = _row(table, "mount-loop", "loopdev")
    assert lib[1] == "0*" and lib[-1] == "0"  # v5.16's real cell cut short; the patch's cell
    assert "n/a: cannot run there (real post-release-2026: needs new block-layer callbacks)" in table
    assert "~ udevd and the programs run emulated while the RCU grace period keeps real time" in table


def test_failures_one_line_per_kind_with_a_short_handle_and_lockdep_side_by_side(
    result: LabResult,
) -> None:
    text = report.failures_text(result)
    lines = text.splitlines()
    eio = next(line for line in lines if "mount-loop " in line and "fail: mount: EIO" in line)
    assert "model 5.17-rc1; real 5.17-rc1" in eio
    assert eio.endswith("mount-loop/util-linux-2.37/v5.17-rc1/random:0")
    i = next(i for i, line in enumerate(lines) if "lockdep: circular" in line)
    assert "model 5.16" in lines[i] and "real 5.16" in lines[i]
    assert lines[i + 1].strip().startswith("5.16 model: ") and "&disk->open_mutex" in lines[i + 1]
    assert lines[i + 2].strip().startswith("real:") and "__flush_workqueue" in lines[i + 2]
    every = report.failures_text(result, verbose=True)
    assert "replay: loopdev lab replay mount-loop/util-linux-2.37/v5.17-rc1/random:0:" in every


def test_claims_say_where_a_verdict_rests_on_a_disagreement(result: LabResult) -> None:
    text = report.claims_text(result, verbose=False)
    line = next(x for x in text.splitlines() if x.startswith("claim 1:"))
    # the guest's udev cell never failed while the model's always did; its timing is the
    # emulator's, so the verdict stands and the brackets say so
    assert line.startswith("claim 1: [reproduced; the real cell disagrees, timing-distorted] ")
    assert line.endswith("! rests on: mount-loop+udev ul-2.37 5.17-rc1 (unreached, disagree) ~")
    assert len(text.splitlines()) == len(result.claims)


def test_json_cells_carry_backend_column_and_timing(result: LabResult) -> None:
    data = json.loads(json.dumps(to_json(result)))
    backends = {(c["backend"], c["column"]) for c in data["cells"]}
    assert ("vm", "v5.17-rc1") in backends and ("model", "v5.17-rc1") in backends
    assert ("vm", "my-fix") in backends
    assert all({"backend", "column", "timing_distorted"} <= set(c) for c in data["cells"])
    udev = next(c for c in data["cells"] if c["backend"] == "vm"
                and c["scenario"] == "mount-loop+udev")  # fmt: skip
    assert udev["timing_distorted"] == UDEV
    assert any(f["kind"] == "disagree" for f in data["fidelity"])
    assert {c["column"] for c in data["real_columns"]} >= {"my-fix", "post-release-2026"}


def test_html_draws_real_beside_model(result: LabResult) -> None:
    page = html.render(result)
    assert 'class="plot bars paired"' in page
    assert 'class="pair lockdep"' in page and "real kernel (lockdep 6.1)" in page
    assert 'id="fidelity"' in page and 'id="real"' in page
    assert "random:0" in page  # the short handle beside the full token
    claims = page[page.index('id="claims"'):page.index("</table>", page.index('id="claims"'))]
    row1 = claims[claims.index("<tr><td>1</td>"):]
    row1 = row1[:row1.index("</tr>")]
    assert "the real cell disagrees, timing-distorted" in row1  # as the terminal's brackets


def test_json_of_the_cli_has_backend_and_column(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["lab", "--no-real", "--json", "--scenario", "mount-loop", "--variant",
               "v5.17-rc1", "--userspace", "loopdev", "--budget", "2", "--workers", "1"])  # fmt: skip
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["cells"] and all(c["backend"] == "model" and c["column"] == "v5.17-rc1"
                                 for c in data["cells"])  # fmt: skip


def _synthetic_default() -> LabResult:
    """A default-sized run: every scenario row x every variant, real cells in every
    buildable column and this kernel's, failures spread over them."""
    from loopdev.lab.model import MODEL_USERSPACES
    from loopdev.lab.scenarios import all_scenarios

    rows = [(s.name, u) for s in all_scenarios() for u in MODEL_USERSPACES
            if getattr(s, "userspaces", None) is None or u in s.userspaces]  # fmt: skip
    variants = list(VARIANTS)
    cells: dict[CellKey, CellResult] = {}
    for n, (s, u) in enumerate(rows):
        for i, v in enumerate(variants):
            fail = Outcome("fail", f"step {n % 7}: EBUSY", "busy")
            outs = [fail] * ((n + i) % 3) + [PASS] * 6
            key = CellKey(s, u, v)
            cells[key] = _real(key, outs)
            if not v.startswith("post-"):
                cells[key.on("vm")] = _real(key.on("vm"), [fail] * (i % 2) + [PASS] * 5)
        host = CellKey(s, u, THIS_KERNEL, "host")
        cells[host] = _real(host, [PASS] * 20)
    real = {v: RealColumn(v, v, v, unavailable=NA if v.startswith("post-") else "",
                          kernels=["debian"]) for v in variants}  # fmt: skip
    findings = fidelity.compare(cells)
    return LabResult(
        config=LabConfig(), rows=rows, columns=[*variants, THIS_KERNEL], cells=cells,
        claims=judge_all(cells), gaps=[], notes=["one note"], seconds=300.0, real=real,
        findings=findings, phases={"model": 60.0, "guests": 200.0}, guests=14,
    )  # fmt: skip


def test_the_default_output_fits_in_about_60_lines() -> None:
    text = report.summary_text(_synthetic_default())
    lines = text.splitlines()
    assert len(lines) <= 62, "\n".join(lines)
    assert max(len(line) for line in lines) < 240


def test_without_root_the_report_says_why_real_kernels_did_not_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    cfg = LabConfig(scenarios=["mount-loop"], variants=["v5.17-rc1"], userspaces=["loopdev"],
                    budget=2, workers=1)  # fmt: skip
    result = run_lab(cfg)
    assert not result.has_real and not result.real
    text = report.summary_text(result)
    assert "note: this kernel: not run (needs root)" in text
    assert "note: real loop modules in guests: not run (needs root" in text
    assert "fidelity: no real cells in this run" in text


@pytest.mark.parametrize(
    "scenario,udev", [("mount-loop+udev", True), ("iouring-kill", False), ("detach-open", False)]
)
def test_legend_shortens_each_distortion_reason_whole(scenario: str, udev: bool) -> None:
    """The legend's '~' line keeps each reason's words and drops its figures in parentheses,
    also when the figures themselves contain '; ' (no dangling ')')."""
    why = timing_distortion(scenario, udev, "util-linux-2.38")
    short = report._short_reason(why)
    assert short and "(" not in short and ")" not in short
    for part in why.split("; "):
        head = part.split(" (", 1)[0].strip()
        if "(" not in head and ")" not in head:
            assert head in short
