"""Carrying out a losetup-style :class:`~loopdev.cli.lsargs.Plan` with the library."""

from __future__ import annotations

import contextlib
import errno
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import TextIO

from loopdev import abi, sysfs
from loopdev._port import resolve, why
from loopdev.cli import listing
from loopdev.cli.lsargs import Plan
from loopdev.control import ReadOnlyFallbackWarning, attach, open_control
from loopdev.device import LoopDevice, detach, open_loop_device
from loopdev.errors import (
    BusyError,
    LoopdevError,
    NotAttachedError,
    NotPermittedError,
)
from loopdev.kernel import Kernel
from loopdev.query import detach_all, list_devices, remove
from loopdev.status import LoopStatus, read_status


def row(k: Kernel, st: LoopStatus) -> listing.Row:
    """The listing row of one bound device."""
    return listing.Row(
        name=st.path,
        rdev=sysfs.rdev(k, st.number),
        backing_file=st.backing_file or None,
        backing_dev=st.backing_dev,
        backing_ino=st.backing_ino,
        offset=st.offset,
        sizelimit=st.sizelimit,
        flags=st.flags,
        sector_size=st.block_size,
        ref=st.ref or None,
        diskseq=st.diskseq,
    )


def _sysfs_int(k: Kernel, number: int, name: str) -> int:
    raw = sysfs.attr(k, number, name)
    return int(raw) if raw and raw.isdigit() else 0


def sysfs_status(k: Kernel, number: int) -> LoopStatus | None:
    """What sysfs alone tells about a bound loopN (for users who may not open the device,
    as losetup shows them): no backing dev/ino, no loop-ref."""
    backing = sysfs.backing_file(k, number)
    if backing is None:
        return None
    bits = (
        ("loop/autoclear", abi.LO_FLAGS_AUTOCLEAR),
        ("loop/partscan", abi.LO_FLAGS_PARTSCAN),
        ("loop/dio", abi.LO_FLAGS_DIRECT_IO),
        ("ro", abi.LO_FLAGS_READ_ONLY),
    )
    return LoopStatus(
        number=number,
        backing_dev=0,
        backing_ino=0,
        offset=_sysfs_int(k, number, "loop/offset"),
        sizelimit=_sysfs_int(k, number, "loop/sizelimit"),
        flags=sum(bit for name, bit in bits if sysfs.attr(k, number, name) == "1"),
        ref="",
        backing_file=backing,
        diskseq=sysfs.diskseq(k, number),
        block_size=_sysfs_int(k, number, "queue/logical_block_size") or None,
    )


def visible_devices(k: Kernel) -> list[LoopStatus]:
    """Every bound device: verified on an open fd (the library), plus, for callers who
    cannot open loop devices (not root), what sysfs shows of the others."""
    found = list_devices(kernel=k)
    if k.geteuid() == 0:
        return found
    seen = {s.number for s in found}
    for n in sysfs.loop_numbers(k):
        if n not in seen and sysfs.is_bound(k, n):
            st = sysfs_status(k, n)
            if st is not None:
                found.append(st)
    return found


def _associated(k: Kernel, statuses: Sequence[LoopStatus], plan: Plan) -> list[LoopStatus]:
    """losetup -j FILE [-o OFFSET]: devices backed by FILE (by inode; by name if FILE is
    gone), at OFFSET if one was given."""
    assert plan.file is not None
    try:
        fst = k.stat(plan.file)
        ident: tuple[int, int] | None = (fst.dev, fst.ino)
    except OSError:
        ident = None
    names = {plan.file, k.realpath(plan.file)}
    out = []
    for s in statuses:
        if ident is not None and s.backing_ino:
            same = (s.backing_dev, s.backing_ino) == ident
        else:  # FILE is gone, or only sysfs could be read: by name, like losetup
            same = s.backing_file in names
        if same and (not plan.offset_given or s.offset == plan.offset):
            out.append(s)
    return out


def _overlap(k: Kernel, plan: Plan) -> tuple[LoopStatus, bool] | None:
    """A bound device whose byte range of the same backing file overlaps the one asked for,
    and whether it is an exact match (same offset and sizelimit): losetup -L."""
    assert plan.file is not None
    try:
        fst = k.stat(plan.file)
    except OSError:
        return None  # attach reports the missing image
    end = plan.offset + plan.sizelimit if plan.sizelimit else None
    for s in list_devices(kernel=k):
        if (s.backing_dev, s.backing_ino) != (fst.dev, fst.ino):
            continue
        if (s.offset, s.sizelimit) == (plan.offset, plan.sizelimit):
            return s, True
        s_end = s.offset + s.sizelimit if s.sizelimit else None
        if (end is None or s.offset < end) and (s_end is None or plan.offset < s_end):
            return s, False
    return None


def _open_handle(k: Kernel, device: str) -> LoopDevice:
    """A handle on an existing, bound loop device given by path."""
    fd, number, _rdev = open_loop_device(k, device)
    try:
        status = read_status(k, fd, number)
    except OSError as e:
        k.close(fd)
        if e.errno == errno.ENXIO:
            raise NotAttachedError(
                f"{device} is not attached", hint="list devices: loopdev -a"
            ) from None
        raise LoopdevError(f"{device}: cannot read its status: {why(e)}") from None
    return LoopDevice(k, fd, status)


@contextlib.contextmanager
def _borrowed(k: Kernel, device: str) -> Iterator[LoopDevice]:
    """:func:`_open_handle` for the duration of a with block; the device stays attached."""
    handle = _open_handle(k, device)
    try:
        yield handle
    finally:
        handle.relinquish()


def _device_number(k: Kernel, device: str) -> int:
    """--remove accepts /dev/loopN, loopN or N."""
    text = device.removeprefix("/dev/").removeprefix("loop")
    if text.isdigit():
        return int(text)
    fd, number, _ = open_loop_device(k, device)
    k.close(fd)
    return number


def _warn_size(k: Kernel, plan: Plan, err: TextIO) -> None:
    """losetup's warning for images that are not a whole number of 512-byte sectors."""
    assert plan.file is not None
    size = plan.sizelimit
    if not size:
        try:
            st = k.stat(plan.file)
        except OSError:
            return
        if st.is_blk:
            return
        size = st.size - plan.offset
    if size < 512:
        err.write(
            f"loopdev: {plan.file}: Warning: file is smaller than 512 bytes; the loop device "
            "may be useless or invisible for system tools.\n"
        )
    elif size % 512:
        err.write(
            f"loopdev: {plan.file}: Warning: file does not fit into a 512-byte sector; "
            "the end of the file will be ignored.\n"
        )


class Losetup:
    """Runs plans; output goes to ``out`` and notices/warnings to ``err``."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.k = resolve(None)
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def run(self, plan: Plan) -> int:
        handler = getattr(self, "do_" + plan.action.value.replace("-", "_"))
        result: int = handler(plan)
        return result

    # -- setup ---------------------------------------------------------------------------
    def do_create(self, plan: Plan) -> int:
        assert plan.file is not None
        device = plan.devices[0] if plan.devices else None
        if plan.nooverlap:
            reused = self._reuse_overlap(plan, device)
            if reused is not None:
                if plan.show:
                    self.out.write(reused + "\n")
                return 0
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ReadOnlyFallbackWarning)
            dev = attach(
                plan.file,
                offset=plan.offset,
                sizelimit=plan.sizelimit,
                read_only=plan.read_only,
                partscan=plan.partscan,
                direct_io=plan.direct_io,
                block_size=plan.block_size,
                loop_ref=plan.loop_ref,
                device=device,
                kernel=self.k,
            )
        path = dev.path
        dev.relinquish()  # stays attached, like losetup's
        for w in caught:
            if issubclass(w.category, ReadOnlyFallbackWarning):
                self.err.write(f"loopdev: {w.message}; {path} is read-only\n")
        if plan.show:
            self.out.write(path + "\n")
        elif plan.verbose:
            self.err.write(f"loopdev: {plan.file} attached to {path}\n")
        _warn_size(self.k, plan, self.err)
        return 0

    def _reuse_overlap(self, plan: Plan, device: str | None) -> str | None:
        """-L: refuse a partial overlap; with -f reuse an exact match (clearing its
        autoclear, as losetup does). Returns the reused device's path."""
        assert plan.file is not None
        found = _overlap(self.k, plan)
        if found is None:
            return None
        st, exact = found
        if not exact or device is not None:
            raise BusyError(
                f"{plan.file}: overlapping loop device exists: {st.path} "
                f"(offset {st.offset}, sizelimit {st.sizelimit})",
                hint="drop -L, or use an offset/sizelimit that does not overlap",
            )
        if st.read_only and not plan.read_only:
            raise BusyError(
                f"{plan.file}: overlapping read-only loop device exists: {st.path}",
                hint="add -r to reuse it read-only",
            )
        handle = _open_handle(self.k, st.path)
        try:
            if handle.autoclear:
                info = abi.LoopInfo64(
                    lo_offset=st.offset,
                    lo_sizelimit=st.sizelimit,
                    lo_flags=st.flags & ~abi.LO_FLAGS_AUTOCLEAR,
                    lo_file_name=st.ref,
                )
                try:
                    self.k.ioctl(handle.fileno(), abi.LOOP_SET_STATUS64, info.pack())
                except OSError as e:
                    raise LoopdevError(
                        f"{plan.file}: failed to re-use {st.path}: {why(e)}"
                    ) from None
        finally:
            handle.relinquish()
        return st.path

    def do_find_free(self, plan: Plan) -> int:
        ctl = open_control(self.k)
        try:
            number = self.k.ioctl(ctl, abi.LOOP_CTL_GET_FREE)
        except OSError as e:
            raise LoopdevError(f"cannot find an unused loop device: {why(e)}") from None
        finally:
            self.k.close(ctl)
        self.out.write(f"/dev/loop{number}\n")
        return 0

    # -- teardown ------------------------------------------------------------------------
    def do_delete(self, plan: Plan) -> int:
        code = 0
        for d in plan.devices:
            try:
                detach(d, wait=plan.wait, timeout=plan.timeout, kernel=self.k)
            except LoopdevError as e:
                self.err.write(f"loopdev: {e}\n")
                code = code or e.exit_code
                continue
            if plan.verbose:
                self.err.write(f"loopdev: detached {d}\n")
        return code

    def do_delete_all(self, plan: Plan) -> int:
        detached = detach_all(
            loop_ref=plan.loop_ref, wait=plan.wait, timeout=plan.timeout, kernel=self.k
        )
        if plan.verbose:
            for path in detached:
                self.err.write(f"loopdev: detached {path}\n")
        return 0

    def do_remove(self, plan: Plan) -> int:
        code = 0
        for d in plan.devices:
            try:
                remove(_device_number(self.k, d), kernel=self.k)
            except LoopdevError as e:
                self.err.write(f"loopdev: {e}\n")
                code = code or e.exit_code
        return code

    # -- changes to a bound device -------------------------------------------------------
    def do_set_capacity(self, plan: Plan) -> int:
        with _borrowed(self.k, plan.devices[0]) as handle:
            size = handle.set_capacity()
        if plan.verbose:
            self.err.write(f"loopdev: {handle.path}: capacity is now {size} bytes\n")
        return 0

    def do_set_direct_io(self, plan: Plan) -> int:
        with _borrowed(self.k, plan.devices[0]) as handle:
            handle.set_direct_io(plan.direct_io)
        return 0

    def do_set_blocksize(self, plan: Plan) -> int:
        assert plan.block_size is not None
        with _borrowed(self.k, plan.devices[0]) as handle:
            handle.set_block_size(plan.block_size)
        return 0

    # -- listings ------------------------------------------------------------------------
    def do_show(self, plan: Plan) -> int:
        statuses = self._in_losetup_order(visible_devices(self.k))
        if plan.file is not None:
            statuses = _associated(self.k, statuses, plan)
        if plan.loop_ref is not None:
            statuses = [s for s in statuses if s.ref == plan.loop_ref]
        self._print([row(self.k, s) for s in statuses], plan)
        return 0

    def _in_losetup_order(self, statuses: list[LoopStatus]) -> list[LoopStatus]:
        """losetup lists devices in /sys/block's directory order; so do we, so that the
        output of `alias losetup=loopdev` does not change."""
        try:
            names = self.k.listdir(sysfs.SYS_BLOCK)
        except OSError:
            return statuses
        order = {name: i for i, name in enumerate(names)}
        return sorted(statuses, key=lambda s: order.get(f"loop{s.number}", len(order)))

    def do_show_one(self, plan: Plan) -> int:
        try:
            handle = _open_handle(self.k, plan.devices[0])
        except NotPermittedError:
            st = self._sysfs_one(plan.devices[0])
            if st is None:
                raise
            rows = [row(self.k, st)]
        else:
            try:
                rows = [row(self.k, handle.status)]
            finally:
                handle.relinquish()
        self._print(rows, plan)
        return 0

    def _sysfs_one(self, device: str) -> LoopStatus | None:
        """sysfs's view of a loop device we may not open (not root)."""
        try:
            st = self.k.stat(device)
        except OSError:
            return None
        name = sysfs.block_name(self.k, st.rdev) if st.is_blk else None
        if not name or not name.startswith("loop") or not name[4:].isdigit():
            return None
        return sysfs_status(self.k, int(name[4:]))

    def _print(self, rows: list[listing.Row], plan: Plan) -> None:
        if plan.json:
            self.out.write(listing.json_table(rows, plan.columns))
        elif plan.list:
            self.out.write(listing.table(rows, plan.columns, headings=plan.headings, raw=plan.raw))
        else:
            self.out.write("".join(listing.short_line(r) for r in rows))
