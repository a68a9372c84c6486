"""A modelled systemd-udevd (v252) as a port program: the asynchronous opener of block devices.

It only talks to a :class:`~loopdev.kernel.Kernel`, so it runs as a user task inside the model
(``kernel.spawn``) — and would run on the real kernel too. What it does per ``add``/``change``
uevent of a block device follows systemd 252:

1. ``worker_lock_whole_disk``: ``sd_device_open(dev, O_RDONLY|O_CLOEXEC|O_NONBLOCK|O_NOCTTY)``
   — look the node up and check its ``st_rdev`` is the event's ``MAJOR:MINOR`` (udev does it
   with an ``O_PATH`` open; this model uses ``stat``, which equally does not open the device),
   open it, and if the event carries ``DISKSEQ`` compare it with ``BLKGETDISKSEQ`` on the fd:
   a mismatch is a stale event (``-ENXIO``, fd closed). ENXIO/ENOENT/ENODEV
   (``ERRNO_IS_DEVICE_ABSENT``) mean "device gone, ignoring": the event is processed without the
   lock. Then ``flock(LOCK_SH|LOCK_NB)``; EAGAIN (someone holds ``LOCK_EX``, systemd's
   block-device locking) requeues the event and retries after
   :data:`EVENT_RETRY_INTERVAL` (up to :data:`EVENT_RETRY_TIMEOUT`).
2. The rules run (a random amount of CPU time, see :class:`UdevConfig`). 60-persistent-storage.rules skips loop
   devices without ``loop/backing_file``; otherwise ``IMPORT{builtin}="blkid"`` opens the
   device again (``sd_device_open``, same DISKSEQ check), reads the superblock area, closes.
3. The worker finishes (more random time) and closes the lock fd — this close may be the loop
   device's last.

Events are processed one at a time (a single worker). Stop it with :meth:`Udevd.stop` (it exits
after the current event, within :attr:`UdevConfig.poll` seconds) or by killing its task.
"""

from __future__ import annotations

import errno
from collections import deque
from dataclasses import dataclass, field

from loopdev import abi
from loopdev.kernel import Kernel, Process, Uevent
from loopdev.lab import images
from loopdev.lab.userspace.program import spend_cpu
from loopdev.sim.params import UDEV_HOLD_TIME, UDEV_PROBE_DELAY
from loopdev.sim.sched import param

#: systemd 252 src/udev/udevd.c: retry a locked device's event every 200 ms, for up to 3 min.
EVENT_RETRY_INTERVAL = 0.2
EVENT_RETRY_TIMEOUT = 180.0
#: ERRNO_IS_DEVICE_ABSENT.
DEVICE_ABSENT = frozenset({errno.ENODEV, errno.ENXIO, errno.ENOENT})
LOCK_OPEN_FLAGS = abi.O_RDONLY | abi.O_CLOEXEC | abi.O_NONBLOCK | abi.O_NOCTTY
BLKID_OPEN_FLAGS = abi.O_RDONLY | abi.O_CLOEXEC | abi.O_NONBLOCK


@dataclass(frozen=True)
class UdevConfig:
    """How long the modelled worker takes, in seconds of the virtual clock.

    Rule processing and the blkid probe are userspace CPU time: the worker spends it as
    virtual time (see :func:`~loopdev.lab.userspace.program.spend_cpu`), each duration drawn
    as ``max * kernel.random()`` from the choice stream. The longest durations are the timing
    parameters ``udev.probe_delay`` (rules before the probe, default 2 ms) and
    ``udev.hold_time`` (after the probe until the lock fd is closed, default 3 ms) unless
    given here. They overlap the 1-3 ms a util-linux program needs to start, so the worker's
    last close can land before, inside or after a mount(8)'s loop-device scan: both orders
    happen, as with the real udevd (whose last close comes milliseconds after an attach).
    """

    rules_max: float | None = None  # from taking the lock to the blkid builtin
    hold_max: float | None = None  # from the probe to the worker closing the lock fd
    poll: float = 0.05  # uevent_read timeout: how quickly stop() is noticed
    blkid: bool = True  # run the blkid builtin (IMPORT{builtin}="blkid")


@dataclass
class UdevStats:
    """What the daemon did (for tests and traces)."""

    events: int = 0
    processed: int = 0
    stale: int = 0  # DISKSEQ mismatch or device gone at open
    locked: int = 0  # requeued because of LOCK_EX
    probed: dict[str, str | None] = field(default_factory=dict)  # devname -> fstype (last)


@dataclass
class _Queued:
    event: Uevent
    first: float
    due: float


class StaleDevice(OSError):
    """``sd_device_open`` refused: the node is not the event's device (any more)."""


class Udevd:
    """systemd-udevd's event loop and one worker, on a Kernel port."""

    def __init__(self, kernel: Kernel, config: UdevConfig | None = None) -> None:
        self.k = kernel
        self.config = config or UdevConfig()
        self.stats = UdevStats()
        self.process: Process | None = None
        self._stop = False
        self._queue: deque[_Queued] = deque()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Process:
        """Spawn the daemon as its own task/process."""
        self.process = self.k.spawn(self.main, "systemd-udevd")
        return self.process

    def stop(self) -> None:
        """Ask the daemon to exit after the event it is processing."""
        self._stop = True

    def main(self) -> int:
        """The event loop: read uevents, process queued events when due, until stopped."""
        sock = self.k.uevent_open()
        try:
            while not self._stop:
                timeout = self.config.poll
                if self._queue:
                    timeout = max(0.0, min(timeout, self._queue[0].due - self.k.monotonic()))
                ev = self.k.uevent_read(sock, timeout)
                if ev is not None:
                    self.stats.events += 1
                    if self._relevant(ev):
                        now = self.k.monotonic()
                        self._queue.append(_Queued(ev, now, now))
                self._run_due()
        finally:
            self.k.close(sock)
        return 0

    @staticmethod
    def _relevant(ev: Uevent) -> bool:
        return ev.subsystem == "block" and ev.action in ("add", "change") and bool(ev.devname)

    def _run_due(self) -> None:
        now = self.k.monotonic()
        for _ in range(len(self._queue)):
            q = self._queue.popleft()
            if q.due > now or self._stop:
                self._queue.append(q)
                continue
            if self.worker_process_device(q.event):
                self.stats.processed += 1
            elif now - q.first < EVENT_RETRY_TIMEOUT:
                self.stats.locked += 1
                q.due = now + EVENT_RETRY_INTERVAL
                self._queue.append(q)

    # -- the worker ------------------------------------------------------------------------

    def _busy(self, seconds_max: float) -> None:
        """Spend a random share of ``seconds_max`` computing."""
        spend_cpu(self.k, seconds_max * self.k.random())

    @staticmethod
    def devnode(ev: Uevent) -> str:
        name = ev.devname
        return name if name.startswith("/") else f"/dev/{name}"

    def sd_device_open(self, ev: Uevent, flags: int) -> int:
        """``sd_device_open``: the node must be the event's device and, if the event has a
        DISKSEQ, the opened disk must still carry it. Raises OSError (StaleDevice: ENXIO)."""
        node = self.devnode(ev)
        st = self.k.stat(node)
        major, minor = ev.env.get("MAJOR"), ev.env.get("MINOR")
        if (major is not None and minor is not None) and (
            not st.is_blk or st.rdev != abi.makedev(int(major), int(minor))
        ):
            raise StaleDevice(errno.ENXIO, "not the event's device", node)
        fd = self.k.open(node, flags)
        seq = ev.diskseq
        if not seq:
            return fd
        try:
            buf = abi.u64_buffer()
            self.k.ioctl(fd, abi.BLKGETDISKSEQ, buf)
            if abi.read_u64(buf) != seq:
                raise StaleDevice(errno.ENXIO, "stale event (diskseq changed)", node)
        except BaseException:
            self.k.close(fd)
            raise
        return fd

    def worker_lock_whole_disk(self, ev: Uevent) -> int | None:
        """The shared lock fd, or None when the device is gone (processed unlocked).
        Raises BlockingIOError when someone holds LOCK_EX."""
        try:
            fd = self.sd_device_open(ev, LOCK_OPEN_FLAGS)
        except OSError as e:
            if e.errno in DEVICE_ABSENT:
                self.stats.stale += 1
                return None
            raise
        try:
            self.k.flock(fd, abi.LOCK_SH | abi.LOCK_NB)
        except BaseException:
            self.k.close(fd)
            raise
        return fd

    def worker_process_device(self, ev: Uevent) -> bool:
        """Process one event; False means "requeue" (the device is locked exclusively)."""
        try:
            lock_fd = self.worker_lock_whole_disk(ev)
        except OSError as e:
            # EAGAIN: requeue; anything else: "Failed to process device, ignoring"
            return e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK)
        try:
            cfg = self.config
            self._busy(param(UDEV_PROBE_DELAY) if cfg.rules_max is None else cfg.rules_max)
            if cfg.blkid and self._persistent_storage_applies(ev):
                self.builtin_blkid(ev)
            self._busy(param(UDEV_HOLD_TIME) if cfg.hold_max is None else cfg.hold_max)
        finally:
            if lock_fd is not None:
                self.k.close(lock_fd)
        return True

    def _persistent_storage_applies(self, ev: Uevent) -> bool:
        """60-persistent-storage.rules: loop devices without a backing file are skipped."""
        name = self.devnode(ev).rsplit("/", 1)[-1]
        if not name.startswith("loop"):
            return True
        try:
            self.k.stat(f"/sys/block/{name}/loop/backing_file")
            return True
        except OSError:
            return False

    def builtin_blkid(self, ev: Uevent) -> str | None:
        """``IMPORT{builtin}="blkid"``: open (checked), read the superblock area, close."""
        node = self.devnode(ev)
        try:
            fd = self.sd_device_open(ev, BLKID_OPEN_FLAGS)
        except OSError:
            return None
        fstype: str | None = None
        try:
            head = self.k.pread(fd, images.PROBE_SIZE, 0)
            fstype = images.identify(head)
        except OSError:
            fstype = None
        finally:
            self.k.close(fd)
        self.stats.probed[node] = fstype
        return fstype


def start_udevd(kernel: Kernel, config: UdevConfig | None = None) -> Udevd:
    """Create and spawn a modelled udevd on ``kernel``."""
    d = Udevd(kernel, config)
    d.start()
    return d
