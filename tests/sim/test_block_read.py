"""Reading a loop device whose LOOP_CLR_FD teardown is under way (the v5.19 design, as in
real 6.1): a direct read waits for the frozen queue and then fails with EIO; a read through
the page cache fails its readahead the same way, is retried once, and by then
``invalidate_disk`` has set the capacity to 0, so the retry zero-fills and the read returns
EOF (mm/filemap.c ``filemap_read_folio``, fs/buffer.c ``block_read_full_folio``)."""

from __future__ import annotations

from typing import Any

import pytest
from simkit import attach, make_image, run_model

from loopdev import abi
from loopdev.sim.kernel import SimKernel


def read_during_teardown(flags: int) -> Any:
    def main(k: SimKernel, notes: dict[str, Any]) -> None:
        make_image(k, "/tmp/a.img")
        n, fd = attach(k, "/tmp/a.img")
        dev = f"/dev/loop{n}"
        clr = k.spawn(lambda: k.ioctl(fd, abi.LOOP_CLR_FD), "losetup-d")  # the only opener
        k.sleep(0.001)  # the teardown is freezing the queue (one RCU grace period)
        rfd = k.open(dev, abi.O_RDONLY | flags)  # v5.19 has no lo_open: this succeeds
        try:
            notes["read"] = len(k.pread(rfd, 4096, 0))
        except OSError as e:
            notes["read"] = e.errno
        clr.wait()
        k.close(rfd)
        k.close(fd)

    return run_model("v5.19", main)


@pytest.mark.parametrize(("flags", "want"), [(abi.O_DIRECT, 5), (0, 0)])  # EIO, EOF
def test_direct_read_fails_a_buffered_one_reads_eof(flags: int, want: int) -> None:
    run = read_during_teardown(flags)
    assert run.ok, run.outcome.describe()
    assert run.notes["read"] == want
