"""The loop driver as of v5.16 (drivers/block/loop.c before 6050fa4c): the baseline every
variant subclasses.

Locks: ``loop_ctl_mutex`` (the idr of devices), ``loop_validate_mutex`` (stacked-loop
validation), ``lo->lo_mutex`` per device, ``lo->lo_lock`` (spinlock guarding the backing file
for sysfs) and ``lo->lo_work_lock``; ``->open``/``->release`` run under ``disk->open_mutex``.
States ``Lo_unbound`` → ``Lo_bound`` → ``Lo_rundown`` → ``Lo_unbound``; ``Lo_deleting`` while
LOOP_CTL_REMOVE removes the device. ``loop_queue_rq`` fails I/O with EIO whenever
``lo_state != Lo_bound``; other I/O is done by ``lo->workqueue`` on the backing file.

In v5.16 the last close of an autoclear device tears it down synchronously in ``lo_release``,
under ``open_mutex``, and ``__loop_clr_fd`` holds ``lo_mutex`` across the queue freeze and
``destroy_workqueue`` (which waits for in-flight I/O): lockdep sees
``open_mutex → lo_mutex → q_usage_counter(io) / (wq_completion)loopN``.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from loopdev import abi
from loopdev.sim.block import (
    GD_SUPPRESS_PART_SCAN,
    REQ_OP_WRITE,
    BlockDevice,
    BlockDeviceOperations,
    Gendisk,
    Request,
)
from loopdev.sim.params import LOOP_SERVICE_TIME
from loopdev.sim.sched import emit, kfunc, param, point, sleep
from loopdev.sim.sync import Atomic, Mutex, SpinLock, WaitQueue
from loopdev.sim.task import current
from loopdev.sim.vfs import (
    FMODE_EXCL,
    FMODE_WRITE,
    LOOP_CTRL_DEV,
    File,
    FileOperations,
    Inode,
    attr,
    err,
    fget,
    file_end_write,
    file_start_write,
    fput,
    mkdir_p,
    mknod,
    mntget,
    mntput,
    remove,
)
from loopdev.sim.workqueue import Work, Workqueue, alloc_workqueue, destroy_workqueue, queue_work

if TYPE_CHECKING:
    from loopdev.sim.machine import Machine

Lo_unbound, Lo_bound, Lo_rundown, Lo_deleting = 0, 1, 2, 3
STATE_NAMES = ("Lo_unbound", "Lo_bound", "Lo_rundown", "Lo_deleting")
LOOP_MAJOR = abi.LOOP_MAJOR
PAGE_SIZE = 4096
LLONG_MAX = (1 << 63) - 1


class LoopDevice:
    """``struct loop_device``."""

    def __init__(self, number: int) -> None:
        self.lo_number = number
        self._lo_state = Lo_unbound
        self._name = f"loop{number}"
        self._state_obj = f"loop{number}:lo_state"  # the object of its scheduling points
        self.lo_flags = 0
        self.lo_offset = 0
        self.lo_sizelimit = 0
        self.lo_file_name = ""
        self.lo_backing_file: File | None = None
        self.lo_device: BlockDevice | None = None
        self.lo_refcnt = Atomic(0, f"loop{number}:lo_refcnt")
        self.lo_mutex = Mutex(f"loop{number}:lo_mutex", "&lo->lo_mutex")
        self.lo_lock = SpinLock(f"loop{number}:lo_lock", "&lo->lo_lock")
        self.lo_work_lock = SpinLock(f"loop{number}:lo_work_lock", "&lo->lo_work_lock")
        self.lo_disk: Gendisk
        self.workqueue: Workqueue | None = None
        self.rootcg_cmd_list: list[Request] = []
        self.rootcg_work: Work
        self.rundown_work: Work | None = None
        self.idr_visible = False
        self.use_dio = False
        self.lo_blocksize = 512
        self.sysfs_loop_dir: Inode | None = None
        self.rundown_claimed = False  # post-release-2026: one post_release tears down

    @property
    def lo_state(self) -> int:
        """A read of ``lo->lo_state`` (racy where the kernel reads it racily)."""
        point("read", self._state_obj)
        return self._lo_state

    @lo_state.setter
    def lo_state(self, value: int) -> None:
        point("write", self._state_obj)
        self._lo_state = value
        emit("state", self._name, STATE_NAMES[value])

    def __repr__(self) -> str:
        return f"<loop{self.lo_number} {STATE_NAMES[self._lo_state]}>"


class LoopControlOps(FileOperations):
    """/dev/loop-control (misc device 10:237)."""

    def __init__(self, driver: LoopDriver) -> None:
        self.driver = driver

    def ioctl(self, file: File, cmd: int, arg: int | bytearray) -> int:
        return self.driver.loop_control_ioctl(cmd, arg)


class _Holder:
    """A named exclusive-claim holder (the kernel passes a function pointer)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


def _int_arg(arg: int | bytearray) -> int:
    if isinstance(arg, bytearray):
        raise err(errno.EINVAL)
    return int(arg)


class LoopDriver(BlockDeviceOperations):
    """v5.16 (before 6050fa4c): the baseline loop driver.

    Each variant (a subclass in its own module, registered in :mod:`loopdev.sim.loop`) names
    itself with three class attributes."""

    #: the name ``SimKernel.boot`` and the lab know the variant by
    variant: ClassVar[str]
    #: its short column header in the lab's reports
    label: ClassVar[str]
    #: the upstream change it models: commit id(s) and subject, or the patch posting
    upstream: ClassVar[str]

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.block = machine.block
        self.loop_ctl_mutex = Mutex("loop_ctl_mutex")
        self.loop_validate_mutex = Mutex("loop_validate_mutex")
        self.loop_index_idr: dict[int, LoopDevice] = {}
        self.part_shift = 0
        self.loop_rundown_wq = WaitQueue("loop_rundown_wq")
        #: the temporary exclusive holder ``loop_configure`` claims with
        self.configure_holder = _Holder("loop_configure")
        machine.vfs.chrdevs[LOOP_CTRL_DEV] = LoopControlOps(self)
        node = mknod(machine.dev_root, "loop-control", abi.S_IFCHR | 0o660, LOOP_CTRL_DEV)
        node.nlink = 1

    # -- block_device_operations -----------------------------------------------------------

    def open(self, disk: Gendisk, mode: int) -> None:
        self.lo_open(disk.private_data, mode)

    def release(self, disk: Gendisk) -> None:
        self.lo_release(disk)

    def ioctl(self, bdev: BlockDevice, mode: int, cmd: int, arg: int | bytearray) -> int:
        return self.lo_ioctl(bdev, mode, cmd, arg)

    def free_disk(self, disk: Gendisk) -> None:
        self.lo_free_disk(disk)

    def media_key(self, disk: Gendisk) -> object:
        lo: LoopDevice = disk.private_data
        f = lo.lo_backing_file
        if f is None:
            return disk
        return (f.f_inode.i_sb.s_dev, f.f_inode.ino, lo.lo_offset)

    # -- helpers ---------------------------------------------------------------------------

    def disk_openers(self, disk: Gendisk) -> int:
        return self.block.disk_openers(disk)

    def loop_global_lock_killable(self, lo: LoopDevice, global_: bool) -> None:
        if global_:
            self.loop_validate_mutex.lock()
        lo.lo_mutex.lock()

    def loop_global_unlock(self, lo: LoopDevice, global_: bool) -> None:
        lo.lo_mutex.unlock()
        if global_:
            self.loop_validate_mutex.unlock()

    @staticmethod
    def is_loop_device(file: File) -> bool:
        inode = file.f_inode
        return inode.is_blk() and abi.major(inode.rdev) == LOOP_MAJOR

    def backing_size(self, file: File) -> int:
        """``i_size_read(file->f_mapping->host)``."""
        inode = file.f_inode
        if inode.is_blk():
            disk = self.block.disks.get(inode.rdev)
            return disk.capacity << 9 if disk is not None else 0
        return len(inode.data) if inode.data is not None else 0

    def get_size(self, offset: int, sizelimit: int, file: File) -> int:
        loopsize = self.backing_size(file)
        if offset > 0:
            loopsize -= offset
        if loopsize < 0:
            return 0
        if sizelimit > 0 and sizelimit < loopsize:
            loopsize = sizelimit
        return loopsize >> 9

    def get_loop_size(self, lo: LoopDevice, file: File) -> int:
        return self.get_size(lo.lo_offset, lo.lo_sizelimit, file)

    @kfunc
    def loop_set_size(self, lo: LoopDevice, size: int) -> None:
        if not self.block.set_capacity_and_notify(lo.lo_disk, size):
            self.block.kobject_uevent(lo.lo_disk, "change")

    # -- sysfs -----------------------------------------------------------------------------

    def loop_sysfs_init(self, lo: LoopDevice) -> None:
        d = lo.lo_disk.sysfs_dir
        assert d is not None
        ld = mkdir_p(d, "loop")
        lo.sysfs_loop_dir = ld

        def backing_file() -> bytes:
            f = lo.lo_backing_file
            return (f.f_path + "\n").encode() if f is not None else b""

        attr(ld, "backing_file", backing_file)
        attr(ld, "offset", lambda: f"{lo.lo_offset}\n".encode())
        attr(ld, "sizelimit", lambda: f"{lo.lo_sizelimit}\n".encode())
        attr(
            ld, "autoclear", lambda: f"{int(bool(lo.lo_flags & abi.LO_FLAGS_AUTOCLEAR))}\n".encode()
        )
        attr(ld, "partscan", lambda: f"{int(bool(lo.lo_flags & abi.LO_FLAGS_PARTSCAN))}\n".encode())
        attr(ld, "dio", lambda: f"{int(bool(lo.lo_flags & abi.LO_FLAGS_DIRECT_IO))}\n".encode())

    def loop_sysfs_exit(self, lo: LoopDevice) -> None:
        d = lo.lo_disk.sysfs_dir
        if d is not None:
            remove(d, "loop")
        lo.sysfs_loop_dir = None

    # -- I/O ----------------------------------------------------------------------------------

    @kfunc
    def loop_queue_rq(self, lo: LoopDevice, req: Request) -> None:
        if lo.lo_state != Lo_bound:
            self.block.blk_mq_end_request(req, errno.EIO)
            return
        self.loop_queue_work(lo, req)

    @kfunc
    def loop_queue_work(self, lo: LoopDevice, req: Request) -> None:
        lo.lo_work_lock.lock()
        lo.rootcg_cmd_list.append(req)
        wq = lo.workqueue
        if wq is not None:
            queue_work(wq, lo.rootcg_work)
        lo.lo_work_lock.unlock()

    @kfunc
    def loop_rootcg_workfn(self, lo: LoopDevice) -> None:
        self.loop_process_work(lo, lo.rootcg_cmd_list)

    @kfunc
    def loop_process_work(self, lo: LoopDevice, cmd_list: list[Request]) -> None:
        while True:
            lo.lo_work_lock.lock()
            if not cmd_list:
                lo.lo_work_lock.unlock()
                return
            req = cmd_list.pop(0)
            lo.lo_work_lock.unlock()
            self.loop_handle_cmd(lo, req)

    @kfunc
    def loop_handle_cmd(self, lo: LoopDevice, req: Request) -> None:
        status = 0
        try:
            if req.op == REQ_OP_WRITE and lo.lo_flags & abi.LO_FLAGS_READ_ONLY:
                status = errno.EIO
            else:
                self.do_req_filebacked(lo, req)
        except OSError as e:
            status = e.errno or errno.EIO
        self.block.blk_mq_end_request(req, status)

    @kfunc
    def do_req_filebacked(self, lo: LoopDevice, req: Request) -> None:
        """The I/O on the backing file: it takes the worker the timing parameter
        ``loop.service_time`` (fitted to 4 KiB requests through a real loop device)."""
        sleep(param(LOOP_SERVICE_TIME))
        file = lo.lo_backing_file
        if file is None:
            raise err(errno.EIO)
        pos = req.pos + lo.lo_offset
        if req.op == REQ_OP_WRITE:
            self.lo_write_simple(file, req.data, pos)
        else:
            data = file.f_op.read(file, req.size, pos)
            if len(data) < req.size:  # beyond EOF of the backing file: zeroes
                data = data + bytes(req.size - len(data))
            req.data = data

    @kfunc
    def lo_write_simple(self, file: File, data: bytes, pos: int) -> None:
        started = file_start_write(file)
        try:
            file.f_op.write(file, data, pos)
        finally:
            file_end_write(file, started)

    # -- open / release ------------------------------------------------------------------

    @kfunc
    def lo_open(self, lo: LoopDevice, mode: int) -> None:
        lo.lo_mutex.lock()
        try:
            if lo.lo_state == Lo_deleting:
                raise err(errno.ENXIO, f"loop{lo.lo_number} is being deleted")
            lo.lo_refcnt.inc()
        finally:
            lo.lo_mutex.unlock()

    @kfunc
    def lo_release(self, disk: Gendisk) -> None:
        lo: LoopDevice = disk.private_data
        lo.lo_mutex.lock()
        if lo.lo_refcnt.dec_return():
            lo.lo_mutex.unlock()
            return
        if lo.lo_flags & abi.LO_FLAGS_AUTOCLEAR:
            if lo.lo_state != Lo_bound:
                lo.lo_mutex.unlock()
                return
            lo.lo_state = Lo_rundown
            lo.lo_mutex.unlock()
            # In autoclear mode, stop the loop thread and remove configuration after last close.
            self.release_rundown(lo)
            return
        if lo.lo_state == Lo_bound:
            # Otherwise keep thread (if running) and config, but flush possible ongoing bios.
            self.block.blk_mq_freeze_queue(lo.lo_disk.queue)
            self.block.blk_mq_unfreeze_queue(lo.lo_disk.queue)
        lo.lo_mutex.unlock()

    def release_rundown(self, lo: LoopDevice) -> None:
        """What ``lo_release`` does once it has set ``Lo_rundown`` (v5.16: synchronous)."""
        self.loop_clr_fd_impl(lo, True)

    # -- teardown ----------------------------------------------------------------------------

    @kfunc("__loop_clr_fd")
    def loop_clr_fd_impl(self, lo: LoopDevice, release: bool) -> int:
        """``__loop_clr_fd(lo, release)``: v5.16 holds ``lo_mutex`` across the queue freeze and
        ``destroy_workqueue``."""
        # Flush loop_configure() and loop_change_fd().
        self.loop_validate_mutex.lock()
        self.loop_validate_mutex.unlock()
        lo.lo_mutex.lock()
        if lo.lo_state != Lo_rundown:
            lo.lo_mutex.unlock()
            emit("fail", "WARNING: __loop_clr_fd", "lo_state != Lo_rundown")
            return -errno.ENXIO
        filp = lo.lo_backing_file
        if filp is None:
            lo.lo_mutex.unlock()
            return -errno.EINVAL
        q = lo.lo_disk.queue
        self.block.blk_mq_freeze_queue(q)
        if lo.workqueue is not None:
            destroy_workqueue(lo.workqueue)
            lo.workqueue = None
        self.clear_backing(lo)
        self.block.blk_mq_unfreeze_queue(q)
        partscan = bool(lo.lo_flags & abi.LO_FLAGS_PARTSCAN)
        self.block.disk_force_media_change(lo.lo_disk)
        lo.lo_mutex.unlock()
        if partscan:
            self.loop_reread_partitions_locked(lo, need_open_mutex=not release)
        lo.lo_mutex.lock()
        self.reset_flags(lo)
        lo.lo_state = Lo_unbound
        lo.lo_mutex.unlock()
        # Need not hold lo_mutex to fput backing file.
        fput(filp)
        return 0

    def clear_backing(self, lo: LoopDevice) -> File | None:
        """The common middle of ``__loop_clr_fd``: unbind the file, reset the limits, sysfs,
        the KOBJ_CHANGE uevent."""
        lo.lo_lock.lock()
        filp = lo.lo_backing_file
        lo.lo_backing_file = None
        lo.lo_lock.unlock()
        lo.lo_device = None
        lo.lo_offset = 0
        lo.lo_sizelimit = 0
        lo.lo_file_name = ""
        lo.lo_disk.queue.logical_block_size = 512
        lo.lo_blocksize = 512
        self.block.set_capacity(lo.lo_disk, 0)  # invalidate_disk
        self.loop_sysfs_exit(lo)
        self.block.kobject_uevent(lo.lo_disk, "change")
        return filp

    def reset_flags(self, lo: LoopDevice) -> None:
        lo.lo_flags = 0
        if not self.part_shift:
            lo.lo_disk.state.add(GD_SUPPRESS_PART_SCAN)

    @kfunc("bdev_disk_changed")
    def loop_reread_partitions_locked(self, lo: LoopDevice, need_open_mutex: bool) -> None:
        """Partition rescan (``bdev_disk_changed``) under ``open_mutex``; partitions are not
        modelled, only the locking."""
        disk = lo.lo_disk
        if need_open_mutex:
            disk.open_mutex.lock()
        disk.state.discard("GD_NEED_PART_SCAN")
        if need_open_mutex:
            disk.open_mutex.unlock()

    @kfunc
    def loop_clr_fd(self, lo: LoopDevice) -> int:
        lo.lo_mutex.lock()
        if lo.lo_state != Lo_bound:
            lo.lo_mutex.unlock()
            raise err(errno.ENXIO, f"loop{lo.lo_number} is not bound")
        # If we've explicitly asked to tear down the loop device, and it has an elevated
        # reference count, set it for auto-teardown when the last reference goes away.
        if lo.lo_refcnt.read() > 1:
            lo.lo_flags |= abi.LO_FLAGS_AUTOCLEAR
            lo.lo_mutex.unlock()
            return 0
        lo.lo_state = Lo_rundown
        lo.lo_mutex.unlock()
        ret = self.loop_clr_fd_impl(lo, False)
        if ret < 0:
            raise err(-ret)
        return 0

    # -- configure ---------------------------------------------------------------------------

    @kfunc
    def loop_validate_file(self, file: File, bdev: BlockDevice) -> None:
        f = file
        while self.is_loop_device(f):
            if f.f_inode.rdev == bdev.bd_dev:
                raise err(errno.EBADF, "loop device backed by itself")
            disk = self.block.disks.get(f.f_inode.rdev)
            if disk is None:
                raise err(errno.EINVAL)
            lower: LoopDevice = disk.private_data
            if lower.lo_state != Lo_bound:
                raise err(errno.EINVAL)
            nxt = lower.lo_backing_file
            if nxt is None:
                raise err(errno.EINVAL)
            f = nxt
        inode = file.f_inode
        if not inode.is_reg() and not inode.is_blk():
            raise err(errno.EINVAL, "backing file is neither a regular file nor a block device")

    def loop_set_status_from_info(self, lo: LoopDevice, info: abi.LoopInfo64) -> None:
        if info.lo_encrypt_key_size > abi.LO_KEY_SIZE or info.lo_encrypt_type:
            raise err(errno.EINVAL, "encryption is not supported")
        if info.lo_offset > LLONG_MAX or info.lo_sizelimit > LLONG_MAX:
            raise err(errno.EOVERFLOW)
        lo.lo_offset = info.lo_offset
        lo.lo_sizelimit = info.lo_sizelimit
        lo.lo_file_name = info.lo_file_name[: abi.LO_NAME_SIZE - 1]
        lo.lo_flags = info.lo_flags

    @staticmethod
    def loop_validate_block_size(bsize: int) -> None:
        if bsize < 512 or bsize > PAGE_SIZE or bsize & (bsize - 1):
            raise err(errno.EINVAL, f"bad block size {bsize}")

    def loop_alloc_workqueue(self, lo: LoopDevice) -> None:
        """v5.16: a workqueue per binding, created by ``loop_configure``."""
        lo.workqueue = alloc_workqueue(f"loop{lo.lo_number}", max_active=1)

    @kfunc
    def loop_configure(
        self, lo: LoopDevice, mode: int, bdev: BlockDevice, config: abi.LoopConfig
    ) -> int:
        task = current()
        file = fget(task, config.fd)
        is_loop = self.is_loop_device(file)
        claimed = False
        try:
            # If we don't hold exclusive handle for the device, upgrade to it here to avoid
            # changing device under exclusive owner.
            if not mode & FMODE_EXCL:
                self.block.bd_prepare_to_claim(bdev, self.configure_holder)
                claimed = True
            self.loop_global_lock_killable(lo, is_loop)
            try:
                if lo.lo_state != Lo_unbound:
                    raise err(errno.EBUSY, f"loop{lo.lo_number} is bound")
                self.loop_validate_file(file, bdev)
                if config.info.lo_flags & ~abi.LOOP_CONFIGURE_SETTABLE_FLAGS:
                    raise err(errno.EINVAL, "flags not settable by LOOP_CONFIGURE")
                if config.block_size:
                    self.loop_validate_block_size(config.block_size)
                self.loop_set_status_from_info(lo, config.info)
                if (
                    not file.f_mode & FMODE_WRITE
                    or not mode & FMODE_WRITE
                    or (file.f_mnt is not None and file.f_mnt.mnt_sb.rdonly)
                ):
                    lo.lo_flags |= abi.LO_FLAGS_READ_ONLY
                self.loop_alloc_workqueue(lo)
                disk = lo.lo_disk
                # suppress uevents while reconfiguring the device
                disk.uevent_suppress = True
                self.block.disk_force_media_change(disk)
                self.block.set_disk_ro(disk, bool(lo.lo_flags & abi.LO_FLAGS_READ_ONLY))
                lo.lo_device = bdev
                lo.lo_lock.lock()
                lo.lo_backing_file = file
                lo.lo_lock.unlock()
                bsize = config.block_size or 512
                disk.queue.logical_block_size = bsize
                lo.lo_blocksize = bsize
                if lo.lo_flags & abi.LO_FLAGS_DIRECT_IO:
                    lo.use_dio = True
                self.loop_sysfs_init(lo)
                self.loop_set_size(lo, self.get_loop_size(lo, file))
                lo.lo_state = Lo_bound
                if self.part_shift:
                    lo.lo_flags |= abi.LO_FLAGS_PARTSCAN
                partscan = bool(lo.lo_flags & abi.LO_FLAGS_PARTSCAN)
                if partscan:
                    disk.state.discard(GD_SUPPRESS_PART_SCAN)
                # enable and uncork uevent now that we are done
                disk.uevent_suppress = False
                self.block.kobject_uevent(disk, "change")
            finally:
                self.loop_global_unlock(lo, is_loop)
        except BaseException:
            if claimed:
                self.block.bd_abort_claiming(bdev, self.configure_holder)
            fput(file)
            raise
        if partscan:
            self.loop_reread_partitions_locked(lo, need_open_mutex=True)
        if claimed:
            self.block.bd_abort_claiming(bdev, self.configure_holder)
        return 0

    @kfunc
    def loop_change_fd(self, lo: LoopDevice, bdev: BlockDevice, fd: int) -> int:
        file = fget(current(), fd)
        is_loop = self.is_loop_device(file)
        try:
            self.loop_global_lock_killable(lo, is_loop)
            try:
                if lo.lo_state != Lo_bound:
                    raise err(errno.ENXIO)
                if not lo.lo_flags & abi.LO_FLAGS_READ_ONLY:
                    raise err(errno.EINVAL, "LOOP_CHANGE_FD needs a read-only device")
                self.loop_validate_file(file, bdev)
                old = lo.lo_backing_file
                assert old is not None
                if self.get_loop_size(lo, file) != self.get_loop_size(lo, old):
                    raise err(errno.EINVAL, "new backing file has a different size")
                q = lo.lo_disk.queue
                self.block.blk_mq_freeze_queue(q)
                lo.lo_lock.lock()
                lo.lo_backing_file = file
                lo.lo_lock.unlock()
                self.block.blk_mq_unfreeze_queue(q)
            finally:
                self.loop_global_unlock(lo, is_loop)
        except BaseException:
            fput(file)
            raise
        fput(old)
        return 0

    # -- status ------------------------------------------------------------------------------

    @kfunc
    def loop_set_status(self, lo: LoopDevice, info: abi.LoopInfo64) -> int:
        partscan = False
        lo.lo_mutex.lock()
        try:
            if lo.lo_state != Lo_bound:
                raise err(errno.ENXIO)
            size_changed = lo.lo_offset != info.lo_offset or lo.lo_sizelimit != info.lo_sizelimit
            q = lo.lo_disk.queue
            self.block.blk_mq_freeze_queue(q)
            try:
                prev = lo.lo_flags
                self.loop_set_status_from_info(lo, info)
                lo.lo_flags &= abi.LOOP_SET_STATUS_SETTABLE_FLAGS
                lo.lo_flags |= prev & ~abi.LOOP_SET_STATUS_SETTABLE_FLAGS
                lo.lo_flags |= prev & ~abi.LOOP_SET_STATUS_CLEARABLE_FLAGS
                if size_changed:
                    f = lo.lo_backing_file
                    assert f is not None
                    self.loop_set_size(lo, self.get_size(lo.lo_offset, lo.lo_sizelimit, f))
            finally:
                self.block.blk_mq_unfreeze_queue(q)
            if lo.lo_flags & abi.LO_FLAGS_PARTSCAN and not prev & abi.LO_FLAGS_PARTSCAN:
                lo.lo_disk.state.discard(GD_SUPPRESS_PART_SCAN)
                partscan = True
        finally:
            lo.lo_mutex.unlock()
        if partscan:
            self.loop_reread_partitions_locked(lo, need_open_mutex=True)
        return 0

    @kfunc
    def loop_get_status(self, lo: LoopDevice) -> abi.LoopInfo64:
        lo.lo_mutex.lock()
        if lo.lo_state != Lo_bound:
            lo.lo_mutex.unlock()
            raise err(errno.ENXIO, f"loop{lo.lo_number} is not bound")
        info = abi.LoopInfo64(
            lo_number=lo.lo_number,
            lo_offset=lo.lo_offset,
            lo_sizelimit=lo.lo_sizelimit,
            lo_flags=lo.lo_flags,
            lo_file_name=lo.lo_file_name,
        )
        # Drop lo_mutex while we call into the filesystem.
        f = lo.lo_backing_file
        assert f is not None
        mnt = f.f_mnt
        if mnt is not None:
            mntget(mnt)  # path_get
        inode = f.f_inode
        lo.lo_mutex.unlock()
        info.lo_device = inode.i_sb.s_dev
        info.lo_inode = inode.ino
        info.lo_rdevice = inode.rdev
        if mnt is not None:
            mntput(mnt)  # path_put
        return info

    @kfunc
    def loop_set_capacity(self, lo: LoopDevice) -> int:
        if lo.lo_state != Lo_bound:
            raise err(errno.ENXIO)
        f = lo.lo_backing_file
        assert f is not None
        self.loop_set_size(lo, self.get_loop_size(lo, f))
        return 0

    @kfunc
    def loop_set_dio(self, lo: LoopDevice, arg: int) -> int:
        lo.lo_mutex.lock()
        try:
            if lo.lo_state != Lo_bound:
                raise err(errno.ENXIO)
            if arg:
                lo.lo_flags |= abi.LO_FLAGS_DIRECT_IO
            else:
                lo.lo_flags &= ~abi.LO_FLAGS_DIRECT_IO
            lo.use_dio = bool(arg)
        finally:
            lo.lo_mutex.unlock()
        return 0

    @kfunc
    def loop_set_block_size(self, lo: LoopDevice, arg: int) -> int:
        lo.lo_mutex.lock()
        try:
            if lo.lo_state != Lo_bound:
                raise err(errno.ENXIO)
            self.loop_validate_block_size(arg)
            q = lo.lo_disk.queue
            self.block.blk_mq_freeze_queue(q)
            q.logical_block_size = arg
            lo.lo_blocksize = arg
            self.block.blk_mq_unfreeze_queue(q)
        finally:
            lo.lo_mutex.unlock()
        return 0

    # -- ioctl -------------------------------------------------------------------------------

    @kfunc
    def lo_ioctl(self, bdev: BlockDevice, mode: int, cmd: int, arg: int | bytearray) -> int:
        lo: LoopDevice = bdev.bd_disk.private_data
        if cmd == abi.LOOP_SET_FD:
            return self.loop_configure(lo, mode, bdev, abi.LoopConfig(fd=_int_arg(arg)))
        if cmd == abi.LOOP_CONFIGURE:
            if not isinstance(arg, bytearray) or len(arg) < abi.LoopConfig.SIZE:
                raise err(errno.EFAULT)
            return self.loop_configure(lo, mode, bdev, abi.LoopConfig.unpack(arg))
        if cmd == abi.LOOP_CHANGE_FD:
            return self.loop_change_fd(lo, bdev, _int_arg(arg))
        if cmd == abi.LOOP_CLR_FD:
            return self.loop_clr_fd(lo)
        if cmd == abi.LOOP_SET_STATUS64:
            if not isinstance(arg, bytearray) or len(arg) < abi.LoopInfo64.SIZE:
                raise err(errno.EFAULT)
            return self.loop_set_status(lo, abi.LoopInfo64.unpack(arg))
        if cmd == abi.LOOP_GET_STATUS64:
            if not isinstance(arg, bytearray) or len(arg) < abi.LoopInfo64.SIZE:
                raise err(errno.EFAULT)
            info = self.loop_get_status(lo)
            arg[: abi.LoopInfo64.SIZE] = info.pack()
            return 0
        if cmd == abi.LOOP_SET_CAPACITY:
            return self.loop_set_capacity(lo)
        if cmd == abi.LOOP_SET_DIRECT_IO:
            return self.loop_set_dio(lo, _int_arg(arg))
        if cmd == abi.LOOP_SET_BLOCK_SIZE:
            return self.loop_set_block_size(lo, _int_arg(arg))
        raise err(errno.EINVAL, f"unknown loop ioctl {cmd:#x}")

    # -- devices: add / remove / loop-control ------------------------------------------------

    def loop_init(self, max_loop: int) -> None:
        """Module init (single-threaded, before any task runs): ``loop_add`` 0..max_loop-1."""
        for i in range(max_loop):
            lo = LoopDevice(i)
            self.loop_index_idr[i] = lo
            self.loop_alloc_disk(lo)
            lo.idr_visible = True

    @kfunc
    def loop_add(self, i: int) -> int:
        self.loop_ctl_mutex.lock()
        try:
            if i >= 0:
                if i in self.loop_index_idr:
                    raise err(errno.EEXIST, f"loop{i} exists")
            else:
                i = 0
                while i in self.loop_index_idr:
                    i += 1
            lo = LoopDevice(i)
            self.loop_index_idr[i] = lo
        finally:
            self.loop_ctl_mutex.unlock()
        self.loop_alloc_disk(lo)
        self.loop_ctl_mutex.lock()
        lo.idr_visible = True
        self.loop_ctl_mutex.unlock()
        return i

    def loop_alloc_disk(self, lo: LoopDevice) -> None:
        """The part of ``loop_add`` after the idr slot: tag set, disk, ``add_disk``."""
        i = lo.lo_number
        lo.rootcg_work = Work(
            self._rootcg_workfn(lo), f"loop{i}:rootcg_work", lock_class="&lo->rootcg_work"
        )
        disk = self.block.alloc_disk(f"loop{i}", LOOP_MAJOR, i << self.part_shift, self)
        disk.private_data = lo
        disk.state.add(GD_SUPPRESS_PART_SCAN)
        disk.queue.queue_rq = self._queue_rq(lo)
        lo.lo_disk = disk
        self.loop_add_workqueue(lo)
        self.block.add_disk(disk)

    def loop_add_workqueue(self, lo: LoopDevice) -> None:
        """Where later versions allocate ``lo->workqueue`` at add time (none in v5.16)."""
        return None

    def _rootcg_workfn(self, lo: LoopDevice) -> Callable[[], None]:
        def loop_rootcg_workfn() -> None:
            self.loop_rootcg_workfn(lo)

        return loop_rootcg_workfn

    def _queue_rq(self, lo: LoopDevice) -> Callable[[Request], None]:
        def queue_rq(req: Request) -> None:
            self.loop_queue_rq(lo, req)

        return queue_rq

    def loop_busy_for_remove(self, lo: LoopDevice) -> bool:
        """v5.16: a device with ``lo_refcnt > 0`` cannot be removed."""
        return lo.lo_refcnt.read() > 0

    @kfunc
    def loop_control_remove(self, idx: int) -> int:
        if idx < 0:
            raise err(errno.EINVAL)
        self.loop_ctl_mutex.lock()
        try:
            lo = self.loop_index_idr.get(idx)
            if lo is None or not lo.idr_visible:
                raise err(errno.ENODEV, f"no loop{idx}")
            lo.lo_mutex.lock()
            if lo.lo_state != Lo_unbound or self.loop_busy_for_remove(lo):
                lo.lo_mutex.unlock()
                raise err(errno.EBUSY, f"loop{idx} is busy")
            # Mark this loop device no longer open()-able.
            lo.lo_state = Lo_deleting
            lo.lo_mutex.unlock()
            lo.idr_visible = False
        finally:
            self.loop_ctl_mutex.unlock()
        self.loop_remove(lo)
        return 0

    @kfunc
    def loop_remove(self, lo: LoopDevice) -> None:
        self.block.del_gendisk(lo.lo_disk)
        self.loop_ctl_mutex.lock()
        self.loop_index_idr.pop(lo.lo_number, None)
        self.loop_ctl_mutex.unlock()

    @kfunc
    def lo_free_disk(self, disk: Gendisk) -> None:
        """v5.16 has no ``->free_disk``; the workqueue is per binding."""
        return None

    @kfunc
    def loop_control_get_free(self) -> int:
        self.loop_ctl_mutex.lock()
        found = -1
        for i in sorted(self.loop_index_idr):
            lo = self.loop_index_idr[i]
            if lo.idr_visible and lo.lo_state == Lo_unbound:
                found = i
                break
        self.loop_ctl_mutex.unlock()
        return found if found >= 0 else self.loop_add(-1)

    @kfunc
    def loop_control_ioctl(self, cmd: int, arg: int | bytearray) -> int:
        if cmd == abi.LOOP_CTL_ADD:
            return self.loop_add(_int_arg(arg))
        if cmd == abi.LOOP_CTL_REMOVE:
            return self.loop_control_remove(_int_arg(arg))
        if cmd == abi.LOOP_CTL_GET_FREE:
            return self.loop_control_get_free()
        raise err(errno.ENOSYS)


__all__ = [
    "STATE_NAMES",
    "Lo_bound",
    "Lo_deleting",
    "Lo_rundown",
    "Lo_unbound",
    "LoopControlOps",
    "LoopDevice",
    "LoopDriver",
]  # fmt: skip
