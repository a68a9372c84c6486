"""What a guest's pytest run reports, without a guest: the agent reads pytest's JUnit XML into
one event per test, and a run is good only when nothing failed and every skip was expected."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from loopdev.vm.agent import junit_cases
from loopdev.vm.guest_tests import GuestTest, GuestTestRun


def test_junit_xml_of_a_real_pytest_run(tmp_path: Path) -> None:
    tests = tmp_path / "test_sample.py"
    tests.write_text(
        "import pytest\n"
        "def test_ok():\n    pass\n"
        "def test_broken():\n    assert 1 == 2\n"
        "def test_skipped():\n    pytest.skip('this kernel does not parse DOS partition tables')\n"
    )
    xml = tmp_path / "junit.xml"
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        f"--junitxml={xml}", str(tests)], cwd=tmp_path, capture_output=True)  # fmt: skip
    assert r.returncode == 1
    cases = {c["nodeid"].rsplit("::", 1)[1]: c for c in junit_cases(str(xml))}
    assert {k: v["outcome"] for k, v in cases.items()} == {
        "test_ok": "passed", "test_broken": "failed", "test_skipped": "skipped"}  # fmt: skip
    assert "assert 1 == 2" in str(cases["test_broken"]["message"])
    assert "DOS partition tables" in str(cases["test_skipped"]["message"])
    assert junit_cases(str(tmp_path / "missing.xml")) == []


def _run(*tests: GuestTest, returncode: int = 0) -> GuestTestRun:
    return GuestTestRun("v5.19", "debian", "ok", "", returncode, list(tests))


def test_only_expected_skips_pass() -> None:
    skip = GuestTest("t.py::test_a", "skipped", "needs chromium", 0.0)
    ok = GuestTest("t.py::test_b", "passed", "", 0.1)
    assert not _run(ok, skip).ok()
    assert _run(ok, skip).ok([r"chromium"])
    assert _run(ok, skip).unexpected([r"chromium"]) == []
    failed = GuestTest("t.py::test_c", "failed", "assert False", 0.1)
    assert _run(ok, failed, returncode=1).unexpected() == [failed]
    assert not _run().ok()  # nothing collected is not a pass
    assert _run(ok).summary() == "v5.19 on the debian kernel: 1 passed"
