"""detach-open[partscan]: detach-open on a partitioned image, the shape 18048c1af783 reported.

Who does what: the row's userspace attaches an image with an MSDOS partition table (two
partitions with ext2 in each; the table written by the real ``sfdisk``, the filesystems by the
lab's image maker, real ``mkfs.ext2`` on a real kernel) with partition scanning (util-linux:
``losetup -P``; loopdev: ``attach(partscan=True)``) and detaches it (``losetup -d``:
LOOP_CLR_FD; loopdev: the library's detach). Meanwhile a prober opens the first partition and
reads it with ``O_DIRECT`` (detach-open's :func:`probe`), and a scanner opens the whole
device and the second partition in turn and reads them through the page cache, as blkid does.
The openers start first and keep going until the detach returned and the device is unbound:
a scanner in a loop does not stop when ``losetup -d`` returns, and ``losetup -d`` returns
before a teardown it deferred to the last close.

What a user must see once the detach returned: no read that failed with EIO after its open
succeeded, the device unbound, and its partitions gone (``/sys/block/loopN/loopNp1`` and
``/dev/loopNp1``). The last is 18048c1af783's symptom: a teardown drops the partitions with
``bdev_disk_changed``, which refuses (EBUSY, not reported) while a partition is open, and
leaves them behind, with their old size, on an unbound device. Where the teardown runs
under ``disk->open_mutex`` (in the last close) no partition is open then; where it runs
outside it (5.17-rc1's worker, task_work, LOOP_CLR_FD's ioctl before 6.11) an opener can be
in a partition at that moment. A read failure says what the device looked like right after
it: bound or not, the partition still shown or already deleted (an open that looked the
partition up before the teardown deleted it and got ``open_mutex`` after it opens the deleted
partition of an unbound device in 6.1's block layer, and its reads fail).

The model has no partition tables, so it reports the scenario unsupported; so does a kernel
without a partition-table parser (this machine's 6.18 has none), found out in ``prepare``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from loopdev import abi, sysfs
from loopdev.control import attach
from loopdev.kernel import Kernel
from loopdev.lab.scenarios.base import Env, ScenarioFailure, Unsupported
from loopdev.lab.scenarios.common import (
    detach_backed_by,
    exists,
    loop_bound,
    remove,
    run_children,
    wait_until,
)
from loopdev.lab.scenarios.detach_open import (
    detach_over,
    detacher,
    gone_after,
    open_and_read,
    probe,
)

IMAGE = "partscan.img"
IMAGE_MIB = 16
SECTOR = 512
#: the partitions (start, size in sectors) as sfdisk writes them: p1 from 1 MiB, 6 MiB; p2
#: from 7 MiB, 8 MiB; ext2 in each
PARTITIONS = ((2048, 12288), (14336, 16384))
LAYOUT = "label: dos\n" + "".join(f"start={a}, size={n}, type=83\n" for a, n in PARTITIONS)
#: how long a userspace may take to show its partitions, and the kernel to drop them after a
#: detach returned (devtmpfs adds and removes the nodes synchronously; this is slack)
APPEAR_TIMEOUT = 2.0
GONE_TIMEOUT = 1.0
#: blkid opens a device this way (libblkid: blkid_probe_set_device's caller)
BLKID_OPEN = abi.O_RDONLY | abi.O_CLOEXEC | abi.O_NONBLOCK


def _run(env: Env, argv: list[str], stdin: bytes | None = None) -> None:
    try:
        r = env.kernel.run(argv, input=stdin, timeout=60.0)
    except FileNotFoundError as e:
        package = " (Debian package fdisk)" if argv[0] == "sfdisk" else ""
        raise Unsupported(f"{argv[0]} is not installed{package}") from e
    if r.returncode == 127:
        raise Unsupported(f"{argv[0]} is not installed")
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {(r.stderr or r.stdout).strip()}")


def make_partitioned_image(env: Env, path: str) -> None:
    """A sparse image with an MSDOS partition table (the real sfdisk) and ext2 in both
    partitions (the lab's image maker, real mkfs on a real kernel, copied in at the
    partitions' offsets)."""
    k = env.kernel
    fd = k.open(path, abi.O_RDWR | abi.O_CREAT | abi.O_TRUNC, 0o600)
    try:
        k.pwrite(fd, b"\0", (IMAGE_MIB << 20) - 1)
        for i, (start, size) in enumerate(PARTITIONS, 1):
            part = env.make_image("ext2", env.path(f"part{i}.img"), size_mib=size // 2048)
            try:
                _copy_into(k, part, fd, start * SECTOR, size * SECTOR)
            finally:
                remove(env, part)
    finally:
        k.close(fd)
    _run(env, ["sfdisk", "-q", "--no-reread", "--no-tell-kernel", path], LAYOUT.encode())


def _copy_into(k: Kernel, src: str, dst_fd: int, offset: int, limit: int) -> None:
    """Copy ``src`` (at most ``limit`` bytes) into ``dst_fd`` at ``offset``, leaving holes
    where ``src`` is all zeros."""
    fd = k.open(src, abi.O_RDONLY)
    try:
        pos = 0
        while pos < limit:
            chunk = k.pread(fd, min(1 << 20, limit - pos), pos)
            if not chunk:
                return
            if chunk.count(0) != len(chunk):
                k.pwrite(dst_fd, chunk, offset + pos)
            pos += len(chunk)
    finally:
        k.close(fd)


def partitions(k: Kernel, name: str) -> list[str]:
    """loopN's partitions as sysfs shows them (``loopNp1``, ...)."""
    return sysfs.partitions(k, int(name.removeprefix("loop")))


def _present(env: Env, name: str) -> list[str]:
    """loopN's partitions that still show, in sysfs or as /dev nodes."""
    nodes = (f"{name}p{i}" for i in range(1, len(PARTITIONS) + 1))
    shown = set(partitions(env.kernel, name)) | {p for p in nodes if exists(env, f"/dev/{p}")}
    return sorted(shown)


def wait_partitions(env: Env, name: str, timeout: float) -> bool:
    """True once loopN's partitions both have their sysfs directory and /dev node."""
    k = env.kernel
    want = [f"{name}p{i}" for i in range(1, len(PARTITIONS) + 1)]
    return wait_until(
        env,
        lambda: partitions(k, name) == want and all(_is_node(k, f"/dev/{p}") for p in want),
        timeout,
        0.002,
    )


def _is_node(k: Kernel, path: str) -> bool:
    try:
        return k.stat(path).is_blk
    except OSError:
        return False


def wait_gone(env: Env, name: str, timeout: float) -> list[str]:
    """loopN's partitions still shown after ``timeout`` seconds ([] once all are gone)."""
    left: list[str] = []

    def gone() -> bool:
        left[:] = _present(env, name)
        return not left

    wait_until(env, gone, timeout, 0.005)
    return left


def blkid_read(env: Env, node: str) -> None:
    """One probe of blkid's (the scanner's, in :func:`~detach_open.probe`'s loop): open
    ``node`` as libblkid does and read its first block through the page cache; a failure
    says what the device looked like right after it."""
    _with_state(env, node, lambda: open_and_read(env, node, verify=False, flags=BLKID_OPEN))


def _with_state(env: Env, node: str, fn: Callable[[], None]) -> None:
    """``fn``; a failure it reports says what the device looked like right after it."""
    try:
        fn()
    except ScenarioFailure as f:
        raise ScenarioFailure(f.step, f.kind, f"{f.message} ({_state(env, node)})") from f


def _state(env: Env, node: str) -> str:
    """What the device looks like right after a failed read: bound or not, the partition
    still there or already deleted."""
    part = node.rsplit("/", 1)[-1]
    disk = re.sub(r"^(loop\d+)p\d+$", r"\1", part)
    bits = ["bound" if loop_bound(env, f"/dev/{disk}") else "unbound"]
    if part != disk:
        bits.append(f"{part} {'still shown' if part in _present(env, disk) else 'deleted'}")
    return ", ".join(bits)


def check_partition_scan(env: Env, image: str) -> None:
    """Unsupported unless this kernel finds the image's partitions on a partscan device."""
    k = env.kernel
    dev = attach(image, partscan=True, wait_partitions=False, read_only=True, kernel=k)
    try:
        name = f"loop{dev.number}"
        wait_until(env, lambda: bool(partitions(k, name)), APPEAR_TIMEOUT / 4, 0.01)
        found = partitions(k, name)
    finally:
        dev.detach()
    if not found:
        raise Unsupported(
            "this kernel finds no partitions on a loop device with partition scanning "
            "(it has no MSDOS partition-table parser, CONFIG_MSDOS_PARTITION)"
        )


@dataclass
class DetachOpenPartscan:
    """Detach a partition-scanned loop device while a prober and a scanner open its
    partitions and the whole device."""

    udev: bool = False
    model_only: bool = False
    name: str = "detach-open[partscan]"
    title: str = "a detach racing with opens of its partitions"
    source: str = "18048c1af783's report (stale partitions after losetup -d against blkid)"

    def row_label(self, userspace: str) -> str:
        """The matrix row says who detaches and who opens."""
        return f"{userspace} attaches -P, detaches; prober (p1) + scanner (disk, p2) open"

    def prepare(self, env: Env) -> None:
        if env.is_model:
            raise Unsupported("the model has no partition tables (its block layer scans none)")
        image = env.path(IMAGE)
        make_partitioned_image(env, image)
        check_partition_scan(env, image)

    def trial(self, env: Env) -> None:
        dev = env.userspace.attach(env.path(IMAGE), step="attach", partscan=True)
        name = dev.rsplit("/", 1)[-1]
        if not wait_partitions(env, name, APPEAR_TIMEOUT):
            raise ScenarioFailure(
                "attach", "no partitions",
                f"{dev}: partitions {', '.join(_present(env, name)) or 'none'} after "
                f"{APPEAR_TIMEOUT:g} s, not {name}p1 and {name}p2",
            )  # fmt: skip
        detached = env.path(".detached")
        remove(env, detached)
        done = detach_over(env, dev, detached)
        children = {
            "prober": lambda: _with_state(
                env, f"{dev}p1", lambda: probe(env, f"{dev}p1", until=done)
            ),
            "scanner": lambda: probe(
                env, [dev, f"{dev}p2"], until=done, read=lambda node: blkid_read(env, node)
            ),
            "detacher": detacher(env, dev, detached),
        }
        try:
            failures = run_children(env, children)
        finally:
            remove(env, detached)
        gone_after(env, dev, "detach returned")
        stale = wait_gone(env, name, GONE_TIMEOUT)
        if stale:
            also = f"; before that {failures[0].key}: {failures[0].message}" if failures else ""
            raise ScenarioFailure(
                "after detach", "stale partitions",
                f"{dev} is unbound but {', '.join(stale)} still show {GONE_TIMEOUT:g} s "
                f"later{also}",
            )  # fmt: skip
        for failure in failures:
            raise failure

    def cleanup(self, env: Env) -> None:
        image = env.path(IMAGE)
        detach_backed_by(env, image)
        remove(env, image)
