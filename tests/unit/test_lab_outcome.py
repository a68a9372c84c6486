"""Cell aggregation: counts, failure rate, time to first failure, examples, userspace messages."""

from __future__ import annotations

from loopdev.kernel import RunResult
from loopdev.lab.backends import error_kind
from loopdev.lab.outcome import PASS, CellKey, CellResult, Outcome, RunRecord

BUSY = Outcome("fail", "umount outer: EBUSY", "umount: /x/outer: target is busy.")


def test_failure_rate_and_time_to_first_failure() -> None:
    c = CellResult(CellKey("s", "u", "v"))
    for i, o in enumerate([PASS, PASS, BUSY, PASS, BUSY, Outcome("deadlock", "a -> b")]):
        c.add(RunRecord(i, o, token=f"t{i}", seconds=0.5))
    assert c.runs == 6 and c.failures == 3 and c.failure_rate == 0.5
    assert c.time_to_first_failure == 3
    assert c.first_failure_seconds == 1.5
    assert c.failure_gaps() == [3, 2, 1]
    assert c.counts == {"pass": 3, "fail: umount outer: EBUSY": 2, "deadlock: a -> b": 1}
    ex = c.examples["fail: umount outer: EBUSY"]
    assert ex.seed == 2 and ex.token == "t2"  # the first one, not a later one


def test_unsupported_and_errors_are_not_verdicts() -> None:
    c = CellResult(CellKey("s", "u", "v"))
    c.add(RunRecord(0, Outcome("unsupported", message="no fio")))
    assert c.checked == 0 and c.failure_rate is None and c.is_unsupported
    assert c.unsupported == "no fio"


def test_util_linux_messages_classify_to_errnos() -> None:
    def r(msg: str, rc: int = 32) -> RunResult:
        return RunResult(rc, "", msg)

    assert error_kind(r("umount: /mnt: target is busy.")) == "EBUSY"
    assert error_kind(r("mount: /mnt: can't read superblock on /dev/loop0.")) == "EIO"
    assert error_kind(r("mount: /mnt: wrong fs type, bad option, bad superblock on /dev/loop1")) == "EINVAL"
    assert error_kind(r("losetup: /x.img: failed to set up loop device: Device or resource busy", 1)) == "EBUSY"
    assert error_kind(r("mount: /x: mount failed: No such device.")) == "ENODEV"
    # libmount before 2.38 reports a loop scan that lost its sysfs attributes as -EPERM
    assert error_kind(r("mount: /x: operation permitted for root only.", 1)) == "EPERM"
    assert error_kind(r("mount: /x: mount failed: No such device or address.")) == "ENXIO"
    assert error_kind(r("something new", 5)) == "exit 5"


def test_a_variant_has_a_model_and_a_real_cell_told_apart_by_the_backend() -> None:
    model = CellKey("nested-umount", "loopdev", "v5.17-rc1")
    real = model.on("vm")
    assert model.backend == "model" and real.backend == "vm" and real.column == model.column
    assert model != real and len({model, real}) == 2
    assert str(model) == "nested-umount / loopdev / v5.17-rc1"
    assert str(real) == "nested-umount / loopdev / v5.17-rc1 [vm]"
    d = CellResult(real).to_json()
    assert d["backend"] == "vm" and d["column"] == "v5.17-rc1"
