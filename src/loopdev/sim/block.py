"""The block layer: gendisks, block devices, opening under ``disk->open_mutex``, exclusive
claims, request queues with freezing, bio submission to the driver's ``queue_rq``,
``add_disk``/``del_gendisk``, capacity, diskseq and uevents.

Follows block/bdev.c, block/genhd.c and block/blk-mq.c: ``blkdev_get_by_dev`` prepares an
exclusive claim, takes ``open_mutex``, calls ``fops->open`` and counts the opener, finishes the
claim, drops ``open_mutex`` (then ``->post_open`` where the variant has it); ``blkdev_put``
ends the claim, drops the opener count *before* ``fops->release`` (so ``disk_openers()`` inside
``->release`` counts the others), all under ``open_mutex`` (then ``->post_release``).
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from loopdev import abi
from loopdev.sim.rcu import synchronize_rcu
from loopdev.sim.sched import kfunc, point
from loopdev.sim.sync import (
    Completion,
    LockdepMap,
    Mutex,
    SpinLock,
    WaitQueue,
    lock_map_release,
    rwsem_acquire,
    rwsem_acquire_read,
    wait_event,
    wake_up_all,
)
from loopdev.sim.vfs import (
    FMODE_EXCL,
    File,
    FileOperations,
    Inode,
    attr,
    err,
    mkdir_p,
    mknod,
    remove,
    symlink,
)

if TYPE_CHECKING:
    from loopdev.sim.machine import Machine

REQ_OP_READ = 0
REQ_OP_WRITE = 1
BLK_STS_OK = 0

#: f1be1788a32e "block: model freeze & enter queue as lock for supporting lockdep" (Ming Lei,
#: merged for v6.13): from this release on lockdep sees a queue freeze as a lock
FREEZE_LOCKDEP_SINCE = (6, 13)

GD_DEAD = "GD_DEAD"
GD_NEED_PART_SCAN = "GD_NEED_PART_SCAN"
GD_SUPPRESS_PART_SCAN = "GD_SUPPRESS_PART_SCAN"


class BlockDeviceOperations:
    """``struct block_device_operations``; ``post_open``/``post_release`` exist only in the
    variants that add them (Tetsuo's NAKed block-layer patch and the 2026 proposal)."""

    def post_open(self, disk: Gendisk) -> None:
        """Called after ``open_mutex`` is dropped (only some variants do anything)."""
        return None

    def post_release(self, disk: Gendisk) -> None:
        """Called after ``open_mutex`` is dropped (only some variants do anything)."""
        return None

    def open(self, disk: Gendisk, mode: int) -> None:
        return None

    def release(self, disk: Gendisk) -> None:
        return None

    def ioctl(self, bdev: BlockDevice, mode: int, cmd: int, arg: int | bytearray) -> int:
        raise err(errno.ENOTTY)

    def media_key(self, disk: Gendisk) -> object:
        """What identifies the medium behind the disk (for the model filesystems' store)."""
        return disk

    def free_disk(self, disk: Gendisk) -> None:
        return None


class Request:
    """A block request (one bio): byte position and length; read data lands in ``data``."""

    __slots__ = ("bdev", "data", "done", "op", "pos", "q", "size", "status")

    def __init__(self, bdev: BlockDevice, op: int, pos: int, size: int, data: bytes = b"") -> None:
        self.bdev = bdev
        self.op = op
        self.pos = pos
        self.size = size
        self.data = data
        self.status = BLK_STS_OK
        self.q = bdev.bd_disk.queue
        self.done = Completion("bio_wait")


def freeze_lockdep_in(release: str) -> bool:
    """Whether the block layer of kernel ``release`` (``uname -r``) annotates queue freezes
    for lockdep (:data:`FREEZE_LOCKDEP_SINCE`)."""
    major, _, rest = release.partition(".")
    minor = rest.split(".", 1)[0].split("-", 1)[0]
    return (int(major), int(minor)) >= FREEZE_LOCKDEP_SINCE


class RequestQueue:
    """``struct request_queue`` with the freeze machinery and its lockdep map (used only
    where the modelled block layer has f1be1788a32e)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.q_usage_counter = 0
        self.mq_freeze_depth = 0
        self.dying = False
        self.mq_freeze_wq = WaitQueue(f"{name}:mq_freeze_wq")
        self.io_lockdep_map = LockdepMap(f"{name}:q_usage_counter(io)", "&q->q_usage_counter(io)")
        self.queue_rq: Callable[[Request], None] | None = None
        self.logical_block_size = 512
        self.write_cache = False


class BlockDevice:
    """``struct block_device`` (the whole disk; partitions are not modelled)."""

    def __init__(self, disk: Gendisk, dev: int) -> None:
        self.bd_dev = dev
        self.bd_disk = disk
        self.bd_openers = 0
        self.bd_holder: object = None
        self.bd_holders = 0
        self.bd_claiming: object = None
        self.bd_read_only = False

    def __repr__(self) -> str:
        return f"<bdev {self.bd_disk.disk_name}>"


class Gendisk:
    """``struct gendisk``."""

    def __init__(self, name: str, major: int, minor: int, fops: BlockDeviceOperations) -> None:
        self.disk_name = name
        self.major = major
        self.first_minor = minor
        self.fops = fops
        self.private_data: Any = None
        self.queue = RequestQueue(name)
        self.part0 = BlockDevice(self, abi.makedev(major, minor))
        self.open_mutex = Mutex(f"{name}:open_mutex", "&disk->open_mutex")
        self.capacity = 0  # sectors
        self.diskseq = 0
        self.state: set[str] = set()
        self.uevent_suppress = False
        self.sysfs_dir: Inode | None = None
        self.live = False

    @property
    def devpath(self) -> str:
        return f"/devices/virtual/block/{self.disk_name}"

    def media_key(self) -> object:
        return self.fops.media_key(self)

    def __repr__(self) -> str:
        return f"<gendisk {self.disk_name}>"


def _put_int(arg: int | bytearray, value: int, fmt: str) -> None:
    if not isinstance(arg, bytearray):
        raise err(errno.EFAULT)
    size = struct.calcsize(fmt)
    if len(arg) < size:
        raise err(errno.EFAULT)
    struct.pack_into(fmt, arg, 0, value)


def _get_int(arg: int | bytearray) -> int:
    if isinstance(arg, bytearray):
        if len(arg) < 4:
            raise err(errno.EFAULT)
        return int(struct.unpack_from("=i", arg)[0])
    return int(arg)


class BlkdevFileOps(FileOperations):
    """``def_blk_fops``: block device nodes opened as files."""

    def __init__(self, block: BlockLayer) -> None:
        self.block = block

    def open(self, inode: Inode, file: File) -> None:
        mode = file.f_mode | (FMODE_EXCL if file.f_flags & abi.O_EXCL else 0)
        holder = file if mode & FMODE_EXCL else None
        bdev = self.block.blkdev_get_by_dev(inode.rdev, mode, holder)
        file.private_data = (bdev, mode, holder)

    def release(self, inode: Inode, file: File) -> None:
        bdev, mode, holder = file.private_data
        self.block.blkdev_release(bdev, mode, holder)

    def read(self, file: File, size: int, pos: int) -> bytes:
        """``blkdev_read_iter``: ``O_DIRECT`` reads go to the device, others through the
        block device's page cache (``filemap_read``)."""
        bdev: BlockDevice = file.private_data[0]
        if file.f_flags & abi.O_DIRECT:
            return self.block.bdev_read(bdev, pos, size)
        return self.block.filemap_read(bdev, pos, size)

    def write(self, file: File, data: bytes, pos: int) -> int:
        bdev: BlockDevice = file.private_data[0]
        return self.block.bdev_write(bdev, pos, data)

    def ioctl(self, file: File, cmd: int, arg: int | bytearray) -> int:
        bdev, mode, _holder = file.private_data
        return self.block.blkdev_ioctl(bdev, mode, cmd, arg)

    def fsync(self, file: File) -> None:
        return None


class BlockLayer:
    """The block layer of one machine."""

    def __init__(self, machine: Machine, *, freeze_lockdep: bool = False) -> None:
        self.machine = machine
        #: lockdep sees a queue freeze as a lock (the block layer of v6.13 and later)
        self.freeze_lockdep = freeze_lockdep
        self.disks: dict[int, Gendisk] = {}
        self.bdev_lock = SpinLock("bdev_lock")
        self.bd_claim_wq = WaitQueue("bdev_claim")
        self._diskseq = 0
        self.def_blk_fops = BlkdevFileOps(self)
        self._sysdirs: tuple[Inode, Inode, Inode, Inode] | None = None

    # -- disks ----------------------------------------------------------------------------

    def inc_diskseq(self, disk: Gendisk) -> None:
        self._diskseq += 1
        disk.diskseq = self._diskseq

    def alloc_disk(self, name: str, major: int, minor: int, fops: BlockDeviceOperations) -> Gendisk:
        disk = Gendisk(name, major, minor, fops)
        self.inc_diskseq(disk)
        return disk

    @kfunc
    def add_disk(self, disk: Gendisk) -> None:
        """Register the disk: sysfs directory, /dev node (devtmpfs), ``add`` uevent."""
        m = self.machine
        dev = disk.part0.bd_dev
        self.disks[dev] = disk
        disk.live = True
        virtual, block, class_block, dev_block = self._sysfs_dirs()
        d = mkdir_p(virtual, disk.disk_name)
        disk.sysfs_dir = d
        majmin = f"{disk.major}:{disk.first_minor}"
        attr(d, "dev", lambda: f"{majmin}\n".encode())
        attr(d, "size", lambda: f"{disk.capacity}\n".encode())
        attr(d, "ro", lambda: f"{int(self.bdev_read_only(disk.part0))}\n".encode())
        attr(d, "removable", lambda: b"0\n")
        attr(d, "diskseq", lambda: f"{disk.diskseq}\n".encode())
        attr(d, "uevent", lambda: self._uevent_text(disk).encode())
        mkdir_p(d, "holders")
        mkdir_p(d, "slaves")
        q = mkdir_p(d, "queue")
        attr(q, "logical_block_size", lambda: f"{disk.queue.logical_block_size}\n".encode())
        rel = f"../devices/virtual/block/{disk.disk_name}"
        symlink(block, disk.disk_name, rel)
        symlink(class_block, disk.disk_name, "../" + rel)
        symlink(dev_block, majmin, "../" + rel)
        node = mknod(m.dev_root, disk.disk_name, abi.S_IFBLK | 0o660, dev)
        node.nlink = 1
        self.kobject_uevent(disk, "add")

    def _sysfs_dirs(self) -> tuple[Inode, Inode, Inode, Inode]:
        """/sys/devices/virtual/block, /sys/block, /sys/class/block, /sys/dev/block."""
        dirs = self._sysdirs
        if dirs is None:
            root = self.machine.sys_root
            dirs = self._sysdirs = (
                mkdir_p(root, "devices/virtual/block"),
                mkdir_p(root, "block"),
                mkdir_p(root, "class/block"),
                mkdir_p(root, "dev/block"),
            )
        return dirs

    def _uevent_text(self, disk: Gendisk) -> str:
        return (
            f"MAJOR={disk.major}\nMINOR={disk.first_minor}\nDEVNAME={disk.disk_name}\n"
            f"DEVTYPE=disk\nDISKSEQ={disk.diskseq}\n"
        )

    @kfunc
    def del_gendisk(self, disk: Gendisk) -> None:
        """Unregister: mark dead under open_mutex, remove nodes, ``remove`` uevent, free."""
        m = self.machine
        disk.open_mutex.lock()
        disk.state.add(GD_DEAD)
        disk.live = False
        disk.queue.dying = True
        disk.open_mutex.unlock()
        wake_up_all(disk.queue.mq_freeze_wq)
        self.kobject_uevent(disk, "remove")
        remove(m.dev_root, disk.disk_name)
        majmin = f"{disk.major}:{disk.first_minor}"
        for parent, name in (("block", disk.disk_name), ("class/block", disk.disk_name),
                             ("dev/block", majmin), ("devices/virtual/block", disk.disk_name)):  # fmt: skip
            remove(mkdir_p(m.sys_root, parent), name)
        self.disks.pop(disk.part0.bd_dev, None)
        disk.fops.free_disk(disk)

    def kobject_uevent(
        self, disk: Gendisk, action: str, extra: dict[str, str] | None = None
    ) -> None:
        if disk.uevent_suppress:
            return
        env = {
            "SUBSYSTEM": "block",
            "MAJOR": str(disk.major),
            "MINOR": str(disk.first_minor),
            "DEVNAME": disk.disk_name,
            "DEVTYPE": "disk",
            "DISKSEQ": str(disk.diskseq),
        }
        if extra:
            env.update(extra)
        self.machine.uevents.kobject_uevent_env(action, disk.devpath, env)

    def set_capacity(self, disk: Gendisk, sectors: int) -> None:
        disk.capacity = sectors

    @kfunc
    def set_capacity_and_notify(self, disk: Gendisk, sectors: int) -> bool:
        """Set the size; a change between two non-zero sizes sends ``RESIZE=1``."""
        old = disk.capacity
        self.set_capacity(disk, sectors)
        if old == sectors or not old or not sectors:
            return False
        self.kobject_uevent(disk, "change", {"RESIZE": "1"})
        return True

    @kfunc
    def disk_force_media_change(self, disk: Gendisk) -> None:
        """Media-change uevent (with the current diskseq), then a new diskseq."""
        self.kobject_uevent(disk, "change", {"DISK_MEDIA_CHANGE": "1"})
        self.inc_diskseq(disk)
        disk.state.add(GD_NEED_PART_SCAN)

    def set_disk_ro(self, disk: Gendisk, ro: bool) -> None:
        disk.part0.bd_read_only = ro

    @staticmethod
    def bdev_read_only(bdev: BlockDevice) -> bool:
        return bdev.bd_read_only

    @staticmethod
    def disk_openers(disk: Gendisk) -> int:
        """``disk_openers()``: a racy read of the whole device's opener count."""
        point("atomic_read", f"{disk.disk_name}:bd_openers")
        return disk.part0.bd_openers

    # -- claims ---------------------------------------------------------------------------

    @staticmethod
    def _may_claim(bdev: BlockDevice, holder: object) -> bool:
        return bdev.bd_holder is None or bdev.bd_holder is holder

    @kfunc
    def bd_prepare_to_claim(self, bdev: BlockDevice, holder: object) -> None:
        while True:
            self.bdev_lock.lock()
            if not self._may_claim(bdev, holder):
                self.bdev_lock.unlock()
                raise err(errno.EBUSY, f"{bdev.bd_disk.disk_name} is claimed")
            if bdev.bd_claiming is not None and bdev.bd_claiming is not holder:
                self.bdev_lock.unlock()
                wait_event(self.bd_claim_wq, lambda: bdev.bd_claiming is None)
                continue
            bdev.bd_claiming = holder
            self.bdev_lock.unlock()
            return

    @kfunc
    def bd_finish_claiming(self, bdev: BlockDevice, holder: object) -> None:
        self.bdev_lock.lock()
        bdev.bd_holders += 1
        bdev.bd_holder = holder
        bdev.bd_claiming = None
        self.bdev_lock.unlock()
        wake_up_all(self.bd_claim_wq)

    @kfunc
    def bd_abort_claiming(self, bdev: BlockDevice, holder: object) -> None:
        self.bdev_lock.lock()
        if bdev.bd_claiming is holder:
            bdev.bd_claiming = None
        self.bdev_lock.unlock()
        wake_up_all(self.bd_claim_wq)

    @kfunc
    def bd_end_claim(self, bdev: BlockDevice, holder: object) -> None:
        self.bdev_lock.lock()
        bdev.bd_holders -= 1
        if bdev.bd_holders <= 0:
            bdev.bd_holders = 0
            bdev.bd_holder = None
        self.bdev_lock.unlock()

    # -- open / release -------------------------------------------------------------------

    @kfunc
    def blkdev_get_by_dev(self, dev: int, mode: int, holder: object) -> BlockDevice:
        disk = self.disks.get(dev)
        if disk is None:
            raise err(errno.ENXIO, f"no block device {abi.major(dev)}:{abi.minor(dev)}")
        bdev = disk.part0
        if holder is not None:
            self.bd_prepare_to_claim(bdev, holder)
        try:
            disk.open_mutex.lock()
            try:
                if not disk.live:
                    raise err(errno.ENXIO, disk.disk_name)
                self.blkdev_get_whole(bdev, mode)
                if holder is not None:
                    self.bd_finish_claiming(bdev, holder)
            finally:
                disk.open_mutex.unlock()
        except BaseException:
            if holder is not None:
                self.bd_abort_claiming(bdev, holder)
            raise
        disk.fops.post_open(disk)
        return bdev

    @kfunc
    def blkdev_get_whole(self, bdev: BlockDevice, mode: int) -> None:
        disk = bdev.bd_disk
        disk.fops.open(disk, mode)
        point("atomic_inc", f"{disk.disk_name}:bd_openers")
        bdev.bd_openers += 1

    @kfunc
    def blkdev_put(self, bdev: BlockDevice, mode: int, holder: object = None) -> None:
        disk = bdev.bd_disk
        disk.open_mutex.lock()
        if holder is not None and mode & FMODE_EXCL:
            self.bd_end_claim(bdev, holder)
        self.blkdev_put_whole(bdev)
        disk.open_mutex.unlock()
        disk.fops.post_release(disk)

    @kfunc
    def blkdev_release(self, bdev: BlockDevice, mode: int, holder: object) -> None:
        """``blkdev_release``: the last close of a block device file."""
        self.blkdev_put(bdev, mode, holder)

    @kfunc
    def blkdev_put_whole(self, bdev: BlockDevice) -> None:
        disk = bdev.bd_disk
        point("atomic_dec", f"{disk.disk_name}:bd_openers")
        bdev.bd_openers -= 1
        disk.fops.release(disk)

    # -- I/O -------------------------------------------------------------------------------

    @kfunc
    def bio_queue_enter(self, q: RequestQueue) -> None:
        """Enter the queue: wait while it is frozen; EIO once the disk is dead. From v6.13
        (f1be1788a32e) lockdep sees the entry as a read of the freeze's map."""
        if self.freeze_lockdep:
            rwsem_acquire_read(q.io_lockdep_map)
            lock_map_release(q.io_lockdep_map)
        while True:
            point("percpu_ref_tryget_live", f"{q.name}:q_usage_counter")
            if q.dying:
                raise err(errno.EIO, f"{q.name}: queue is dying")
            if q.mq_freeze_depth == 0:
                q.q_usage_counter += 1
                return
            wait_event(q.mq_freeze_wq, lambda: q.mq_freeze_depth == 0 or q.dying)

    def blk_queue_exit(self, q: RequestQueue) -> None:
        q.q_usage_counter -= 1
        if q.q_usage_counter == 0 and q.mq_freeze_depth and q.mq_freeze_wq.waiters:
            wake_up_all(q.mq_freeze_wq)

    @kfunc
    def blk_mq_end_request(self, req: Request, status: int) -> None:
        """Complete a request: drop its queue reference and wake the submitter."""
        req.status = status
        self.blk_queue_exit(req.q)
        req.done.complete()

    @kfunc
    def submit_bio_wait(self, req: Request) -> None:
        q = req.q
        self.bio_queue_enter(q)
        queue_rq = q.queue_rq
        if queue_rq is None:
            self.blk_mq_end_request(req, errno.EIO)
        else:
            queue_rq(req)
        req.done.wait_for_completion()

    @kfunc
    def blk_mq_freeze_queue(self, q: RequestQueue) -> None:
        """Stop new I/O from entering and wait until the in-flight I/O has ended."""
        point("blk_freeze_queue_start", q.name)
        q.mq_freeze_depth += 1
        if q.mq_freeze_depth == 1 and self.freeze_lockdep:
            # f1be1788a32e blk_freeze_acquire_lock: a write trylock of the map, held until
            # the unfreeze
            rwsem_acquire(q.io_lockdep_map, trylock=True)
        if q.mq_freeze_depth == 1:
            # percpu_ref_kill(&q->q_usage_counter): the counter leaves percpu mode only after
            # an RCU grace period, and only then can it be seen reaching zero
            synchronize_rcu()
        wait_event(q.mq_freeze_wq, lambda: q.q_usage_counter == 0)

    @kfunc
    def blk_mq_unfreeze_queue(self, q: RequestQueue) -> None:
        point("blk_mq_unfreeze_queue", q.name)
        q.mq_freeze_depth -= 1
        if q.mq_freeze_depth == 0 and self.freeze_lockdep:
            lock_map_release(q.io_lockdep_map)
        if q.mq_freeze_depth == 0:
            wake_up_all(q.mq_freeze_wq)

    def capacity_bytes(self, bdev: BlockDevice) -> int:
        return bdev.bd_disk.capacity << 9

    @kfunc
    def bdev_read(self, bdev: BlockDevice, pos: int, size: int) -> bytes:
        """Read through the queue (short at the end of the device, as the page cache reads)."""
        cap = self.capacity_bytes(bdev)
        if pos >= cap or size <= 0:
            return b""
        size = min(size, cap - pos)
        req = Request(bdev, REQ_OP_READ, pos, size)
        self.submit_bio_wait(req)
        if req.status:
            raise err(req.status, f"I/O error, dev {bdev.bd_disk.disk_name}, sector {pos >> 9}")
        return bytes(req.data)

    @kfunc
    def filemap_read(self, bdev: BlockDevice, pos: int, size: int) -> bytes:
        """mm/filemap.c ``filemap_read`` of a block device (v6.1): nothing at or past
        ``i_size``; a page missing from the cache is read ahead (``blkdev_readahead``:
        blocks past ``i_size`` are zero-filled, not read); a page the readahead could not
        make uptodate is read once more, synchronously (``filemap_update_page`` →
        ``filemap_read_folio`` → ``block_read_full_folio``, which again zero-fills past
        ``i_size``), and only that second failure is EIO; finally ``i_size`` is checked
        again, so a page zero-filled because the disk shrank to nothing reads as EOF.

        A device torn down under the reader (``invalidate_disk`` sets the capacity, and so
        ``i_size``, to 0) therefore gives EOF, not EIO, unless both reads happen before the
        capacity drops. The model keeps no pages between reads (each read is a miss): the
        real cache is dropped at ``invalidate_disk`` and at the last close anyway."""
        if pos >= self.capacity_bytes(bdev) or size <= 0:
            return b""
        data = self.read_pages(bdev, pos, size)  # page_cache_sync_readahead
        if data is None:
            data = self.block_read_full_folio(bdev, pos, size)
            if data is None:
                raise err(errno.EIO, f"I/O error, dev {bdev.bd_disk.disk_name}, sector {pos >> 9}")
        isize = self.capacity_bytes(bdev)
        if pos >= isize:
            return b""
        return data[: min(size, isize - pos)]

    @kfunc
    def read_pages(self, bdev: BlockDevice, pos: int, size: int) -> bytes | None:
        """Readahead of the pages: zeroes past ``i_size`` (``do_mpage_readpage``), a bio
        for the rest; None when the bio failed (the folio stays !uptodate)."""
        return self._read_upto_isize(bdev, pos, size)

    @kfunc
    def block_read_full_folio(self, bdev: BlockDevice, pos: int, size: int) -> bytes | None:
        """fs/buffer.c ``block_read_full_folio``: blocks at or past ``i_size`` (as it is now)
        are zero-filled and uptodate without I/O, the others read; None on an I/O error."""
        return self._read_upto_isize(bdev, pos, size)

    def _read_upto_isize(self, bdev: BlockDevice, pos: int, size: int) -> bytes | None:
        cap = self.capacity_bytes(bdev)
        if pos >= cap:
            return bytes(size)
        n = min(size, cap - pos)
        req = Request(bdev, REQ_OP_READ, pos, n)
        self.submit_bio_wait(req)
        if req.status:
            return None
        return bytes(req.data) + bytes(size - n)

    @kfunc
    def bdev_write(self, bdev: BlockDevice, pos: int, data: bytes) -> int:
        if self.bdev_read_only(bdev):
            raise err(errno.EPERM, bdev.bd_disk.disk_name)
        cap = self.capacity_bytes(bdev)
        if pos >= cap:
            raise err(errno.ENOSPC, bdev.bd_disk.disk_name)
        data = bytes(data[: cap - pos])
        req = Request(bdev, REQ_OP_WRITE, pos, len(data), data)
        self.submit_bio_wait(req)
        if req.status:
            raise err(req.status, f"I/O error, dev {bdev.bd_disk.disk_name}, sector {pos >> 9}")
        return len(data)

    # -- ioctls ----------------------------------------------------------------------------

    @kfunc
    def blkdev_ioctl(self, bdev: BlockDevice, mode: int, cmd: int, arg: int | bytearray) -> int:
        disk = bdev.bd_disk
        if cmd == abi.BLKGETSIZE64:
            _put_int(arg, disk.capacity << 9, "=Q")
        elif cmd == abi.BLKGETSIZE:
            _put_int(arg, disk.capacity, "=Q")
        elif cmd == abi.BLKGETDISKSEQ:
            _put_int(arg, disk.diskseq, "=Q")
        elif cmd == abi.BLKSSZGET:
            _put_int(arg, disk.queue.logical_block_size, "=i")
        elif cmd == abi.BLKROGET:
            _put_int(arg, int(self.bdev_read_only(bdev)), "=i")
        elif cmd == abi.BLKROSET:
            self.set_disk_ro(disk, bool(_get_int(arg)))
        elif cmd == abi.BLKFLSBUF:
            pass  # sync_blockdev + invalidate_bdev: nothing cached in the model
        elif cmd == abi.BLKRRPART:
            if GD_SUPPRESS_PART_SCAN in disk.state or not disk.live:
                raise err(errno.EINVAL)
            disk.open_mutex.lock()
            try:
                if bdev.bd_openers > 1:
                    raise err(errno.EBUSY)
                disk.state.discard(GD_NEED_PART_SCAN)
            finally:
                disk.open_mutex.unlock()
        elif cmd == abi.BLKPG:
            raise err(errno.EINVAL, "partitions are not modelled")
        else:
            return disk.fops.ioctl(bdev, mode, cmd, arg)
        return 0


__all__ = [
    "FREEZE_LOCKDEP_SINCE", "GD_DEAD", "GD_NEED_PART_SCAN", "GD_SUPPRESS_PART_SCAN",
    "REQ_OP_READ", "REQ_OP_WRITE", "BlkdevFileOps", "BlockDevice", "BlockDeviceOperations",
    "BlockLayer", "Gendisk", "Request", "RequestQueue", "freeze_lockdep_in",
]  # fmt: skip
