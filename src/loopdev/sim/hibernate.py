"""/sys/power/resume (kernel/power/hibernate.c and kernel/power/swap.c, v5.16).

Writing a device to ``/sys/power/resume`` (``resume_store``, under the kernfs open file's
``of->mutex``) sets the resume device and runs ``software_resume``: under
``system_transition_mutex`` it calls ``swsusp_check``, which opens the device by number
(``blkdev_get_by_dev(FMODE_READ | FMODE_EXCL)``: ``disk->open_mutex``, the driver's ``->open``),
reads the swap header looking for the hibernation signature and, finding none, puts the device
again (``blkdev_put``: possibly the last close). The write succeeds either way.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from loopdev import abi
from loopdev.sim.kernfs import KernfsOpenFile, kernfs_create_file
from loopdev.sim.sched import emit, kfunc
from loopdev.sim.sync import Mutex
from loopdev.sim.vfs import FMODE_EXCL, FMODE_READ, err, mkdir_p

if TYPE_CHECKING:
    from loopdev.sim.block import BlockDevice
    from loopdev.sim.machine import Machine

PAGE_SIZE = 4096
HIBERNATE_SIG = b"S1SUSPEND"


class Hibernate:
    """The hibernation state of one machine: the resume device and the transition mutex."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.swsusp_resume_device = 0
        self.swsusp_resume_block = 0
        self.noresume = False
        # software_resume takes it with mutex_lock_nested(.., SINGLE_DEPTH_NESTING); the model
        # has no lockdep subclasses, so both acquisitions share the class.
        self.system_transition_mutex = Mutex("system_transition_mutex")
        self.hib_resume_bdev_holder = object()
        mkdir_p(machine.sys_root, "power")
        power = machine.sys_root.lookup("power")
        assert power is not None
        kernfs_create_file(power, "resume", self.resume_show, self.resume_store)

    # -- the attribute --------------------------------------------------------------------

    def resume_show(self, of: KernfsOpenFile) -> bytes:
        dev = self.swsusp_resume_device
        return f"{abi.major(dev)}:{abi.minor(dev)}\n".encode()

    @kfunc
    def resume_store(self, of: KernfsOpenFile, buf: bytes) -> int:
        n = len(buf)
        name = buf.decode("ascii", "replace")
        if name.endswith("\n"):
            name = name[:-1]
        res = self.name_to_dev_t(name)
        if not res:
            raise err(errno.EINVAL, f"resume: no device {name!r}")
        self.lock_system_sleep()
        self.swsusp_resume_device = res
        self.unlock_system_sleep()
        emit("state", "resume", f"Configured resume from disk to {res}")
        self.noresume = False
        self.software_resume()
        return n

    # -- kernel/power ---------------------------------------------------------------------

    def lock_system_sleep(self) -> None:
        self.system_transition_mutex.lock()

    def unlock_system_sleep(self) -> None:
        self.system_transition_mutex.unlock()

    @kfunc
    def name_to_dev_t(self, name: str) -> int:
        """``MAJ:MIN``, a hex ``dev_t``, or ``/dev/<disk>`` looked up among the disks."""
        block = self.machine.block
        if name.startswith("/dev/"):
            want = name[5:]
            for dev, disk in block.disks.items():
                if disk.disk_name == want:
                    return dev
            return 0
        maj, sep, mnr = name.partition(":")
        try:
            if sep:
                return abi.makedev(int(maj), int(mnr))
            return abi.makedev(int(name, 16) >> 8, int(name, 16) & 0xFF)
        except ValueError:
            return 0

    @kfunc
    def software_resume(self) -> int:
        if self.noresume:
            return 0
        self.system_transition_mutex.lock()  # mutex_lock_nested(.., SINGLE_DEPTH_NESTING)
        try:
            return self.swsusp_check()
        except OSError as e:
            emit("state", "resume", f"Image not found (code {-(e.errno or errno.EIO)})")
            return -(e.errno or errno.EIO)
        finally:
            self.system_transition_mutex.unlock()

    @kfunc
    def swsusp_check(self) -> int:
        """Open the resume device, read its swap header, put it back when no image is there."""
        block = self.machine.block
        mode = FMODE_READ | FMODE_EXCL
        holder = self.hib_resume_bdev_holder
        bdev = block.blkdev_get_by_dev(self.swsusp_resume_device, mode, holder)
        try:
            header = self.hib_submit_io(bdev)
            if header[PAGE_SIZE - 10 : PAGE_SIZE - 10 + len(HIBERNATE_SIG)] != HIBERNATE_SIG:
                raise err(errno.EINVAL, "no hibernation image")
        finally:
            block.blkdev_put(bdev, mode, holder)
        return 0

    @kfunc
    def hib_submit_io(self, bdev: BlockDevice) -> bytes:
        """Read the swap header page (``submit_bio_wait``)."""
        block = self.machine.block
        return block.bdev_read(bdev, self.swsusp_resume_block * PAGE_SIZE, PAGE_SIZE)


def hibernate_init(machine: Machine) -> Hibernate:
    """Create /sys/power/resume on a booted machine."""
    return Hibernate(machine)


__all__ = ["HIBERNATE_SIG", "Hibernate", "hibernate_init"]
