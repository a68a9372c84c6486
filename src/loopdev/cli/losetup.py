"""Carrying out a losetup-style :class:`~loopdev.cli.lsargs.Plan` with the library's public API.

Library modules are imported by the action that needs them: a listing loads neither the
attach code nor the mount code.
"""

from __future__ import annotations

import sys

from loopdev.cli import default_ref, listing
from loopdev.cli.notices import Notices, report
from loopdev.errors import BusyError, LoopdevError, NotALoopDeviceError, NotPermittedError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import TextIO, TypeVar

    from loopdev.cli.lsargs import Plan
    from loopdev.device import LoopDevice
    from loopdev.errors import Holder
    from loopdev.status import LoopStatus

    T = TypeVar("T")


def row(st: LoopStatus) -> listing.Row:
    """The listing row of one bound device."""
    return listing.Row(
        name=st.path,
        rdev=st.rdev,
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


def _associated(statuses: Sequence[LoopStatus], plan: Plan) -> list[LoopStatus]:
    """losetup -j FILE [-o OFFSET]: devices backed by FILE (by inode; by name if FILE is
    gone or only sysfs could be read), at OFFSET if one was given."""
    import os

    assert plan.file is not None
    try:
        fst = os.stat(plan.file)
        ident: tuple[int, int] | None = (fst.st_dev, fst.st_ino)
    except OSError:
        ident = None
    names = {plan.file, os.path.realpath(plan.file)}
    out = []
    for s in statuses:
        if ident is not None and s.backing_ino:
            same = (s.backing_dev, s.backing_ino) == ident
        else:
            same = s.backing_file in names
        if same and (not plan.offset_given or s.offset == plan.offset):
            out.append(s)
    return out


def _overlap(plan: Plan) -> tuple[LoopStatus, bool] | None:
    """A bound device whose byte range of the same backing file overlaps the one asked for,
    and whether it is an exact match (same offset and sizelimit): losetup -L."""
    from loopdev.errors import ImageError
    from loopdev.query import find

    assert plan.file is not None
    try:
        same_file = find(plan.file)
    except ImageError:
        return None  # attach reports the missing image
    end = plan.offset + plan.sizelimit if plan.sizelimit else None
    for s in same_file:
        if (s.offset, s.sizelimit) == (plan.offset, plan.sizelimit):
            return s, True
        s_end = s.offset + s.sizelimit if s.sizelimit else None
        if (end is None or s.offset < end) and (s_end is None or plan.offset < s_end):
            return s, False
    return None


def _open(device: str) -> LoopDevice:
    from loopdev.device import LoopDevice

    return LoopDevice.open(device)


def _change(device: str, change: Callable[[LoopDevice], T]) -> T:
    """``change`` applied to a handle on the bound ``device``, which stays attached."""
    handle = _open(device)
    try:
        return change(handle)
    finally:
        handle.relinquish()


def _device_number(device: str) -> int:
    """--remove accepts /dev/loopN, loopN or N."""
    text = device.removeprefix("/dev/").removeprefix("loop")
    if text.isdigit():
        return int(text)
    handle = _open(device)
    handle.relinquish()
    return handle.number


def _holders_line(path: str) -> str:
    from loopdev.settle import device_holders

    return deferred_reason(device_holders(path), path)


def deferred_reason(holders: list[Holder], path: str) -> str:
    """One line saying what ``path``'s teardown waits for (from its holders)."""
    for h in holders:
        if h.kind == "mount" and h.target:
            return f"{path}: detach deferred until {h.target} is unmounted"
    for h in holders:
        if h.kind == "holder":
            return f"{h.description}: detach deferred until that is released"
    procs = [h for h in holders if h.kind == "process"]
    if procs:
        more = f" (and {len(procs) - 1} more)" if len(procs) > 1 else ""
        who = procs[0].description.split(" has ", 1)[0]  # "pid 4242 (fio)"
        return f"{path}: detach deferred until {who}{more} closes it"
    return f"{path}: detach deferred until the kernel releases it"


class Losetup:
    """Runs plans; output goes to ``out``, notices and warnings to ``err``."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def run(self, plan: Plan) -> int:
        handler = getattr(self, "do_" + plan.action.replace("-", "_"))
        result: int = handler(plan)
        return result

    # -- setup ---------------------------------------------------------------------------
    def do_create(self, plan: Plan) -> int:
        from loopdev.control import attach

        assert plan.file is not None
        device = plan.devices[0] if plan.devices else None
        if plan.nooverlap:
            reused = self._reuse_overlap(plan, device)
            if reused is not None:
                self._report_setup(plan, reused, reused=True)
                return 0
        with Notices(self.err):
            dev = attach(
                plan.file,
                offset=plan.offset,
                sizelimit=plan.sizelimit,
                read_only=plan.read_only,
                partscan=plan.partscan,
                direct_io=plan.direct_io,
                block_size=plan.block_size,
                loop_ref=plan.loop_ref if plan.loop_ref is not None else default_ref("attach"),
                device=device,
            )
            dev.relinquish()  # stays attached, like losetup's
        self._report_setup(plan, dev, reused=False)
        return 0

    def _report_setup(self, plan: Plan, dev: LoopDevice, *, reused: bool) -> None:
        if plan.json:
            self.out.write(listing.setup_json(dev, reused=reused))
        elif plan.show:
            self.out.write(dev.path + "\n")
        elif plan.verbose:
            how = "reused" if reused else "attached to"
            self.err.write(f"loopdev: {plan.file} {how} {dev.path}\n")

    def _reuse_overlap(self, plan: Plan, device: str | None) -> LoopDevice | None:
        """-L: refuse a partial overlap; with -f reuse an exact match (clearing its
        autoclear, as losetup does)."""
        from loopdev.reuse import open_existing

        assert plan.file is not None
        found = _overlap(plan)
        if found is None:
            return None
        st, exact = found
        if not exact or device is not None:
            raise BusyError(
                f"{plan.file}: overlapping loop device exists: {st.path} "
                f"(offset {st.offset}, sizelimit {st.sizelimit})",
                hint="drop -L, or use an offset/sizelimit that does not overlap",
                filename=plan.file,
                device=st.path,
            )
        if st.read_only and not plan.read_only:
            raise BusyError(
                f"{plan.file}: overlapping read-only loop device exists: {st.path}",
                hint="add -r to reuse it read-only",
                filename=plan.file,
                device=st.path,
            )
        handle = open_existing(plan.file, offset=plan.offset, sizelimit=plan.sizelimit)
        if handle is None:
            return None  # it went away meanwhile: attach a new one
        handle.relinquish()
        return handle

    def do_find_free(self, plan: Plan) -> int:
        from loopdev.loopctl import find_free

        self.out.write(find_free() + "\n")
        return 0

    # -- teardown ------------------------------------------------------------------------
    def _detach(self, path: str, plan: Plan) -> None:
        """Detach one device: wait for it unless it is held (then say who holds it and that
        the teardown is deferred, as losetup leaves it); --wait always waits, --no-wait
        never does."""
        from loopdev.device import detach

        gone = detach(
            path,
            wait=plan.wait is not False,
            lazy=plan.wait is None,
            timeout=plan.timeout,
        )
        if not gone and plan.wait is None:
            self.err.write(f"loopdev: {_holders_line(path)}\n")
        elif plan.verbose:
            self.err.write(f"loopdev: detached {path}\n")

    def do_delete(self, plan: Plan) -> int:
        code = 0
        for d in plan.devices:
            try:
                self._detach(d, plan)
            except LoopdevError as e:
                report(self.err, e)
                code = code or e.exit_code
        return code

    def do_delete_all(self, plan: Plan) -> int:
        from loopdev.query import list_devices

        code = 0
        for s in list_devices():
            if plan.loop_ref is not None and s.ref != plan.loop_ref:
                continue
            if plan.ref_prefix is not None and not s.ref.startswith(plan.ref_prefix):
                continue
            try:
                self._detach(s.path, plan)
            except LoopdevError as e:
                if e.exit_code == 12:  # NotAttachedError: detached by someone else meanwhile
                    continue
                report(self.err, e)
                code = code or e.exit_code
        return code

    def do_remove(self, plan: Plan) -> int:
        from loopdev.loopctl import remove

        code = 0
        for d in plan.devices:
            try:
                remove(_device_number(d))
            except LoopdevError as e:
                report(self.err, e)
                code = code or e.exit_code
        return code

    # -- changes to a bound device -------------------------------------------------------
    def do_set_capacity(self, plan: Plan) -> int:
        size = _change(plan.devices[0], lambda h: h.set_capacity())
        if plan.verbose:
            self.err.write(f"loopdev: {plan.devices[0]}: capacity is now {size} bytes\n")
        return 0

    def do_set_direct_io(self, plan: Plan) -> int:
        _change(plan.devices[0], lambda h: h.set_direct_io(plan.direct_io))
        return 0

    def do_set_blocksize(self, plan: Plan) -> int:
        size = plan.block_size
        assert size is not None
        _change(plan.devices[0], lambda h: h.set_block_size(size))
        return 0

    # -- listings ------------------------------------------------------------------------
    def do_show(self, plan: Plan) -> int:
        from loopdev.query import list_devices

        statuses = _in_losetup_order(list_devices(sysfs_fallback=True))
        if plan.file is not None:
            statuses = _associated(statuses, plan)
        if plan.loop_ref is not None:
            statuses = [s for s in statuses if s.ref == plan.loop_ref]
        if plan.ref_prefix is not None:
            statuses = [s for s in statuses if s.ref.startswith(plan.ref_prefix)]
        self._print([row(s) for s in statuses], plan)
        return 0

    def do_show_one(self, plan: Plan) -> int:
        device = plan.devices[0]
        try:
            handle = _open(device)
        except NotPermittedError:
            st = _sysfs_one(device)
            if st is None:
                raise
            rows = [row(st)]
        except NotALoopDeviceError as e:
            raise _maybe_forgot_f(e, device) from None
        else:
            try:
                rows = [row(handle.status)]
            finally:
                handle.relinquish()
        self._print(rows, plan)
        return 0

    def _print(self, rows: list[listing.Row], plan: Plan) -> None:
        if plan.json:
            self.out.write(listing.json_table(rows, plan.columns))
        elif plan.list:
            self.out.write(listing.table(rows, plan.columns, headings=plan.headings, raw=plan.raw))
        else:
            self.out.write("".join(listing.short_line(r) for r in rows))

    # -- help texts ----------------------------------------------------------------------
    def do_help(self, plan: Plan) -> int:
        from loopdev.cli import helptext

        self.out.write(helptext.main_help())
        return 0

    def do_version(self, plan: Plan) -> int:
        from loopdev.cli import version

        self.out.write(version())
        return 0

    def do_man(self, plan: Plan) -> int:
        from loopdev.cli import manpage

        self.out.write(manpage.render())
        return 0

    def do_completion(self, plan: Plan) -> int:
        from loopdev.cli import completion

        assert plan.shell is not None
        self.out.write(completion.script(plan.shell))
        return 0


def _in_losetup_order(statuses: list[LoopStatus]) -> list[LoopStatus]:
    """losetup lists devices in /sys/block's directory order; so do we, so that the output
    of `alias losetup=loopdev` does not change."""
    import os

    try:
        order = {name: i for i, name in enumerate(os.listdir("/sys/block"))}
    except OSError:
        return statuses
    return sorted(statuses, key=lambda s: order.get(f"loop{s.number}", len(order)))


def _sysfs_one(device: str) -> LoopStatus | None:
    """What sysfs tells about a loop device we may not open (not root)."""
    import os

    from loopdev.query import list_devices

    try:
        rdev = os.stat(device).st_rdev
    except OSError:
        return None
    return next((s for s in list_devices(sysfs_fallback=True) if s.rdev == rdev), None)


def _maybe_forgot_f(e: NotALoopDeviceError, device: str) -> LoopdevError:
    """``loopdev IMG``: IMG is a file, not a device; the user most likely wanted to attach it."""
    import os

    if os.path.isfile(device):
        e.hint = f"to attach {device} to a free loop device, add -f: loopdev -f {device}"
        e.cli_hint = e.hint
    return e
