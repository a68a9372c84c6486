"""mount_image, umount and mounted(): loop mounts that stay correct under async teardown.

mount_image reuses a device already bound to the same image only by opening it first and
re-checking it on that fd (T10), keeps the device fd open across mount(2) and closes it after;
new devices are AUTOCLEAR, as mount(8) makes them. squashfs and erofs images are attached
read-only. umount returns only once the loop device it used is really detached, so
``umount inner; umount outer`` is safe; EBUSY with no process holding the mount (io_uring
after kill -9, delayed fput) is waited out, bounded and jittered.
"""

from __future__ import annotations

import errno

from loopdev import abi, sysfs
from loopdev._port import fspath, resolve
from loopdev.control import attach_image, wait_partition_nodes
from loopdev.errors import (
    BusyError,
    Holder,
    LoopdevError,
    MountError,
    NotMountedError,
    NotPermittedError,
    TeardownTimeoutError,
    why,
)
from loopdev.fsdetect import READ_ONLY_FILESYSTEMS, block_filesystems, detect
from loopdev.mountinfo import MountEntry, mount_at, mounts, mounts_of_device
from loopdev.record import Record
from loopdev.settle import Backoff, is_detached, path_holders
from loopdev.teardown import wait_until_detached

TYPE_CHECKING = False
if TYPE_CHECKING:
    import os
    from types import TracebackType

    from loopdev.device import LoopDevice
    from loopdev.kernel import Kernel

DEFAULT_UMOUNT_TIMEOUT = 5.0

_FLAG_OPTIONS = {
    "ro": abi.MS_RDONLY,
    "rw": 0,
    "nosuid": abi.MS_NOSUID,
    "nodev": abi.MS_NODEV,
    "noexec": abi.MS_NOEXEC,
    "sync": abi.MS_SYNCHRONOUS,
    "noatime": abi.MS_NOATIME,
    "nodiratime": abi.MS_NODIRATIME,
    "relatime": abi.MS_RELATIME,
    "defaults": 0,
}
#: read the image's first bytes without touching its atime (which would make the backing
#: file's inode dirty just before LOOP_CONFIGURE syncs it)
_O_NOATIME = 0o1000000


class Mount(Record):
    """A filesystem image mounted through a loop device (as mount_image made it).

    ``image`` and ``target`` are paths as text (``target`` canonical), ``device`` the
    block device mounted (``/dev/loopN``, or ``/dev/loopNpM`` with a partition),
    ``read_only`` whether the mount is read-only, ``reused`` whether the loop device was
    already attached to the image. :meth:`umount` (or leaving a ``with`` block) unmounts
    and waits for the loop device to go.
    """

    _fields = (
        "image",
        "target",
        "device",
        "fstype",
        "read_only",
        "loop_number",
        "diskseq",
        "reused",
        "partition",
    )

    #: the image file as given, as text
    image: str
    #: the mount point (canonical path)
    target: str
    #: the block device mounted: /dev/loopN or, with a partition, /dev/loopNpM
    device: str
    #: the filesystem type mounted
    fstype: str
    #: the mount is read-only (asked for, a read-only filesystem, or a read-only image)
    read_only: bool
    #: N of the loop device, and the diskseq of its binding
    loop_number: int
    diskseq: int | None
    #: the loop device was already attached to the image (mount_image's reuse)
    reused: bool
    #: the partition number mounted, None for the whole image
    partition: int | None
    #: the kernel it was mounted in (None: the running one)
    kernel: Kernel | None
    #: how long :meth:`umount` (and the end of a ``with`` block) waits
    umount_timeout: float

    def __init__(
        self,
        image: str,
        target: str,
        device: str,
        fstype: str,
        read_only: bool,
        loop_number: int,
        diskseq: int | None,
        reused: bool,
        *,
        partition: int | None = None,
        kernel: Kernel | None = None,
        umount_timeout: float = DEFAULT_UMOUNT_TIMEOUT,
    ) -> None:
        self.__dict__.update(
            image=image,
            target=target,
            device=device,
            fstype=fstype,
            read_only=read_only,
            loop_number=loop_number,
            diskseq=diskseq,
            reused=reused,
            partition=partition,
            kernel=kernel,
            umount_timeout=umount_timeout,
        )

    def umount(self, *, timeout: float | None = None) -> None:
        """Unmount it; returns once its loop device is detached (see :func:`umount`)."""
        umount(
            self.target,
            timeout=self.umount_timeout if timeout is None else timeout,
            kernel=self.kernel,
        )

    def __enter__(self) -> Mount:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.umount()


class MountOptions:
    """mount(8)-style ``-o`` options, split: MS_* ``flags``, the filesystem's ``data``, and
    the loop options ``loop[=/dev/loopN]``, ``offset=N`` and ``sizelimit=N``."""

    __slots__ = ("data", "flags", "loop_device", "offset", "sizelimit")

    def __init__(self, options: str) -> None:
        from loopdev.sizes import size_option

        self.flags = 0
        self.loop_device: str | None = None
        self.offset = 0
        self.sizelimit = 0
        data = []
        for opt in filter(None, (o.strip() for o in options.split(","))):
            key, eq, value = opt.partition("=")
            if opt in _FLAG_OPTIONS:
                self.flags |= _FLAG_OPTIONS[opt]
            elif opt == "loop":
                continue
            elif eq and key == "loop":
                self.loop_device = value
            elif eq and key == "offset":
                self.offset = size_option(value, "offset=")
            elif eq and key == "sizelimit":
                self.sizelimit = size_option(value, "sizelimit=")
            else:
                data.append(opt)
        self.data = ",".join(data)


def parse_options(options: str) -> tuple[int, str]:
    """mount(8)-style ``-o`` options → (MS_* flags, data string for the filesystem); the
    loop options (loop, loop=, offset=, sizelimit=) are taken out."""
    opts = MountOptions(options)
    return opts.flags, opts.data


def _check_target(k: Kernel, target: str) -> str:
    """The canonical path of the directory ``target``; MountError unless it is a directory
    that is not a mount point yet."""
    try:
        st = k.stat(target)
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise MountError(
                f"mount point {target} does not exist",
                hint=f"create it: mkdir -p {target}",
                errno=e.errno,
                filename=target,
            ) from None
        raise MountError(
            f"mount point {target}: {why(e)}", errno=e.errno, filename=target
        ) from None
    if not st.is_dir:
        raise MountError(
            f"mount point {target} is not a directory",
            hint="mount on a directory",
            errno=errno.ENOTDIR,
            filename=target,
        )
    canonical = k.realpath(target)
    if st.mount_root is False:
        return canonical  # statx says so: no need to read the mount table
    existing = mount_at(k, canonical)
    if existing is not None:
        raise MountError(
            f"{target} is already a mount point ({existing.source}, {existing.fstype})",
            hint=f"umount {target} first, or choose another directory",
            filename=target,
        )
    if st.mount_root:
        raise MountError(
            f"{target} is already a mount point",
            hint=f"umount {target} first, or choose another directory",
            filename=target,
        )
    return canonical


#: errno of a failed mount(2) → (message, hint); {image}, {target}, {fstype}, {why} filled in
_MOUNT_ERRORS: dict[int, tuple[str, str]] = {
    errno.ENODEV: (
        "cannot mount {image}: unknown filesystem type {fstype!r}",
        "check the type name (see /proc/filesystems)",
    ),
    errno.EBUSY: ("cannot mount {image} on {target}: {why}", "is it in use?"),
    errno.EIO: (
        "cannot mount {image}: I/O error reading its superblock",
        "the image may be damaged, or its loop device was torn down under the mount",
    ),
}


def _mount_error(image: str, target: str, fstype: str, e: OSError, explicit: bool) -> LoopdevError:
    if e.errno in (errno.EPERM, errno.EACCES):
        return NotPermittedError(
            f"mounting {image} on {target}: {why(e)}",
            hint="run as root",
            errno=e.errno,
            filename=image,
        )
    message, hint = _MOUNT_ERRORS.get(e.errno or 0, ("cannot mount {image} as {fstype}: {why}", ""))
    if e.errno not in _MOUNT_ERRORS and explicit:
        message = (
            "cannot mount {image} as {fstype}: wrong filesystem type or bad superblock ({why})"
        )
        hint = "check the filesystem type, or omit it to detect it"
    return MountError(
        message.format(image=image, target=target, fstype=fstype, why=why(e)),
        hint=hint or None,
        errno=e.errno,
        filename=image,
    )


def _sniff(k: Kernel, image: str, offset: int, sizelimit: int) -> str | None:
    """The filesystem in the image at ``offset`` (read from the file, before attaching, so
    that a read-only filesystem gets a read-only device); None if unknown or unreadable
    (attach reports what is wrong with the image)."""
    try:
        fd = k.open(image, abi.O_RDONLY | _O_NOATIME)
    except OSError as e:
        if e.errno != errno.EPERM:  # O_NOATIME needs ownership (or CAP_FOWNER)
            return None
        try:
            fd = k.open(image, abi.O_RDONLY)
        except OSError:
            return None
    try:
        return detect(k, fd, offset, sizelimit or None)
    finally:
        k.close(fd)


def mount_image(
    image: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    fstype: str | None = None,
    read_only: bool = False,
    options: str = "",
    reuse: bool = True,
    offset: int = 0,
    sizelimit: int = 0,
    partition: int | None = None,
    loop_device: str | os.PathLike[str] | None = None,
    loop_ref: str | None = None,
    kernel: Kernel | None = None,
) -> Mount:
    """Mount the filesystem image ``image`` on the directory ``target`` via a loop device.

    ``options`` are mount(8)'s ``-o``: MS_* flags, filesystem options, and the loop options
    ``loop=/dev/loopN`` (use that device, as ``loop_device`` does), ``offset=`` and
    ``sizelimit=``. The filesystem type is detected unless ``fstype`` is given; squashfs and
    erofs are attached and mounted read-only. ``partition`` N mounts the image's N-th
    partition (the kernel must parse its partition table). A device already bound to the
    same image (same offset, size limit and read-only mode) is reused safely unless
    ``reuse`` is False or a device or partition is asked for; a new one is AUTOCLEAR.

    Nothing is left attached or mounted when it fails.
    """
    k = resolve(kernel)
    image_text = fspath(image)
    target_text = fspath(target)
    canonical = _check_target(k, target_text)
    opts = MountOptions(options)
    offset = offset or opts.offset
    sizelimit = sizelimit or opts.sizelimit
    named = fspath(loop_device) if loop_device is not None else opts.loop_device
    read_only = read_only or bool(opts.flags & abi.MS_RDONLY)
    if partition is not None and partition < 1:
        from loopdev.errors import InvalidArgumentError

        raise InvalidArgumentError(
            f"partition {partition}: partitions are numbered from 1", filename=image_text
        )
    dev: LoopDevice | None = None
    # The filesystem, read from the image file before anything is attached: a read-only
    # filesystem gets (or reuses) a read-only device, as snapd expects.
    found = _sniff(k, image_text, offset, sizelimit) if not fstype and partition is None else None
    read_only_device = read_only or (fstype or found) in READ_ONLY_FILESYSTEMS
    if reuse and named is None and partition is None:
        from loopdev.reuse import open_existing

        dev = open_existing(
            image_text,
            offset=offset,
            sizelimit=sizelimit,
            read_only=read_only_device,
            clear_autoclear=False,
            kernel=k,
        )
    if dev is None:
        # A new AUTOCLEAR device, as mount(8) makes them. No write baseline: the handle is
        # only detached if the mount fails, and then an fsync is fine.
        dev, _ = attach_image(
            k,
            image_text,
            offset=offset,
            sizelimit=sizelimit,
            read_only=read_only_device,
            flags=abi.LO_FLAGS_AUTOCLEAR | (abi.LO_FLAGS_PARTSCAN if partition else 0),
            loop_ref=loop_ref,
            device=named,
            write_baseline=False,
        )
    mounted_ok = False
    try:
        source = dev.path
        if partition is not None:
            source = _partition_node(k, dev, partition, image_text)
            if not fstype:
                found = _detect_node(k, source)
        flags = opts.flags
        if dev.read_only or (fstype or found) in READ_ONLY_FILESYSTEMS:
            flags |= abi.MS_RDONLY
        if fstype:
            candidates, explicit = [fstype], True
        else:
            candidates = [found] if found else block_filesystems(k)
            explicit = found is not None
        last: LoopdevError | None = None
        for t in candidates:
            try:
                k.mount(source, canonical, t, flags, opts.data)
            except OSError as e:
                last = _mount_error(image_text, target_text, t, e, explicit)
                if explicit or e.errno not in (errno.EINVAL, errno.ENODEV, errno.EIO):
                    raise last from None
                continue
            mounted_ok = True
            return Mount(
                image_text,
                canonical,
                source,
                t,
                bool(flags & abi.MS_RDONLY),
                dev.number,
                dev.diskseq,
                dev.reused,
                partition=partition,
                kernel=kernel,
            )
        raise MountError(
            f"cannot mount {image_text}: unknown filesystem (no known superblock found, and "
            f"none of {', '.join(candidates) or 'the kernel filesystems'} accepted it)",
            hint="is it a filesystem image? give its type (fstype=) if the kernel supports it",
            cli_hint="is it a filesystem image? give its type with -t if the kernel supports it",
            filename=image_text,
        )
    finally:
        if mounted_ok or dev.reused:
            dev.relinquish()  # the mount (or the other user) holds the device now
        else:
            dev.detach(wait=True)  # ours and unused: leave nothing behind


def _partition_node(k: Kernel, dev: LoopDevice, partition: int, image: str) -> str:
    """/dev/loopNpM for partition M of the freshly attached ``dev`` (waiting for its node);
    MountError naming the partitions there are if it has none such."""
    nodes = wait_partition_nodes(k, dev.number)
    want = f"{dev.path}p{partition}"
    if want in nodes:
        return want
    if not nodes:
        raise MountError(
            f"cannot mount partition {partition} of {image}: the kernel found no partition "
            f"table on it",
            hint="is it a partitioned disk image? (the kernel needs its partition parser, "
            "e.g. CONFIG_MSDOS_PARTITION)",
            filename=image,
        )
    have = ", ".join(n.rsplit("p", 1)[-1] for n in nodes)
    raise MountError(
        f"cannot mount partition {partition} of {image}: it has partitions {have}",
        hint="give one of those partition numbers",
        filename=image,
    )


def _detect_node(k: Kernel, node: str) -> str | None:
    try:
        fd = k.open(node, abi.O_RDONLY)
    except OSError:
        return None
    try:
        return detect(k, fd)
    finally:
        k.close(fd)


# --- umount ---------------------------------------------------------------------------------


def umount(
    target: str | os.PathLike[str],
    *,
    timeout: float = DEFAULT_UMOUNT_TIMEOUT,
    lazy: bool = False,
    recursive: bool = False,
    rmdir: bool = False,
    kernel: Kernel | None = None,
) -> None:
    """Unmount ``target``, as umount(8) takes it: a mount point, a mounted block device
    (``/dev/loopN``) or an image file mounted through a loop device (the last such mount).
    If it was an AUTOCLEAR loop mount, return only once that loop device is detached.

    EBUSY while a process uses the mount → BusyError naming it (pid and command) at once.
    EBUSY with no process holding it → transient kernel references, waited out with growing
    jitter for at most ``timeout`` (then TeardownTimeoutError). ``recursive`` unmounts the
    mounts below it first; ``lazy`` detaches it from the tree at once (MNT_DETACH) and
    leaves the rest to the kernel (no wait for the loop device); ``rmdir`` removes the
    directory afterwards.
    """
    k = resolve(kernel)
    text = fspath(target)
    point, dev = _mount_point_of(k, text)
    if recursive:
        point = k.realpath(point)  # the mount table has canonical paths
        below = [m for m in mounts(k) if m.target != point and _under(m.target, point)]
        for m in reversed(below):  # the last mounted first: children before parents
            _umount_one(k, m.target, m.dev, timeout, lazy)
    _umount_one(k, point, dev, timeout, lazy)
    if rmdir:
        try:
            k.rmdir(point)
        except OSError as e:
            raise LoopdevError(
                f"{point} was unmounted, but removing the directory failed: {why(e)}",
                errno=e.errno,
                filename=point,
            ) from None


def _under(path: str, base: str) -> bool:
    return path.startswith(base.rstrip("/") + "/")


def _not_mounted(text: str, message: str, code: int = errno.EINVAL) -> NotMountedError:
    return NotMountedError(message, hint="nothing to unmount", errno=code, filename=text)


def _mount_point_of(k: Kernel, text: str) -> tuple[str, int]:
    """(mount point, st_dev of the mounted filesystem) for a umount target."""
    try:
        st = k.stat(text)
    except OSError as e:
        raise _not_mounted(text, f"{text}: {why(e)}", e.errno or errno.EINVAL) from None
    if st.is_dir:
        if st.mount_root is False:
            raise _not_mounted(text, f"{text} is not a mount point")
        # st_dev of the mount's root is the MAJ:MIN the mount table shows
        return text, st.dev
    if st.is_blk:
        found = mounts_of_device(k, st.rdev)
        if not found:
            raise _not_mounted(text, f"{text} is not mounted")
        return found[-1].target, found[-1].dev
    if st.is_reg:
        found = _mounts_of_image(k, st.dev, st.ino)
        if not found:
            raise _not_mounted(text, f"{text} is not mounted (no loop device of it is)")
        return found[-1].target, found[-1].dev
    raise _not_mounted(text, f"{text} is not a mount point, a block device or an image file")


def _mounts_of_image(k: Kernel, st_dev: int, st_ino: int) -> list[MountEntry]:
    """Mounts of loop devices (or their partitions) bound to the file (st_dev, st_ino)."""
    from loopdev.query import list_devices

    numbers = {
        s.number
        for s in list_devices(kernel=k)
        if (s.backing_dev, s.backing_ino) == (st_dev, st_ino)
    }
    if not numbers:
        return []
    return [m for m in mounts(k) if sysfs.loop_of(k, m.dev) in numbers]


def _umount_one(k: Kernel, target: str, dev: int, timeout: float, lazy: bool) -> None:
    """Unmount the mount point ``target`` (its filesystem on ``dev``), then wait for its
    AUTOCLEAR loop device to go (not when ``lazy``)."""
    # The loop device's diskseq is read before the umount: it tells our binding from a new
    # one made right after the teardown.
    number = (
        sysfs.loop_of(k, dev) if abi.major(dev) in (abi.LOOP_MAJOR, abi.BLOCK_EXT_MAJOR) else None
    )
    seq = sysfs.diskseq(k, number) if number is not None else None
    if lazy:
        try:
            k.umount2(target, abi.MNT_DETACH)
        except OSError as e:
            raise _umount_error(target, e) from None
        return
    backoff: Backoff | None = None  # made on the first EBUSY only
    while True:
        try:
            k.umount2(target, 0)
            break
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise _umount_error(target, e) from None
        holders = path_holders(k.realpath(target), kernel=k)
        if holders:
            raise BusyError(
                f"cannot unmount {target}: it is in use",
                holders=holders,
                hint="close those files or stop those processes (or leave the directory), then retry",
                filename=target,
            )
        if backoff is None:
            backoff = Backoff(k, timeout=timeout, base=0.001, cap=0.05)
        if not backoff.wait():
            raise TeardownTimeoutError(
                f"cannot unmount {target}: still busy after {backoff.describe()} although no "
                "process uses it",
                holders=[
                    Holder(
                        "kernel",
                        "kernel references still pending (io_uring requests of a killed "
                        "process, delayed fput)",
                    )
                ],
                hint="retry later",
                filename=target,
            )
    if number is None or is_detached(k, number, seq):
        return  # not a loop mount, or (6.11+, no other opener) torn down inside umount2
    if sysfs.attr(k, number, "loop/autoclear") != "1" or _still_mounted(k, number):
        return  # not ours to wait for: not autoclear, or still mounted elsewhere
    left = backoff.remaining() if backoff is not None else None
    wait_until_detached(k, number, seq, max(timeout if left is None else left, 0.5))


def _still_mounted(k: Kernel, number: int) -> bool:
    """Whether loopN or one of its partitions is still mounted somewhere."""
    return any(
        sysfs.loop_of(k, m.dev) == number
        for m in mounts(k)
        if abi.major(m.dev) in (abi.LOOP_MAJOR, abi.BLOCK_EXT_MAJOR)
    )


def _umount_error(target: str, e: OSError) -> LoopdevError:
    if e.errno == errno.EINVAL:
        return _not_mounted(target, f"{target} is not a mount point")
    if e.errno in (errno.EPERM, errno.EACCES):
        return NotPermittedError(
            f"cannot unmount {target}: {why(e)}", hint="run as root", errno=e.errno, filename=target
        )
    return LoopdevError(f"cannot unmount {target}: {why(e)}", errno=e.errno, filename=target)


def mounted(
    image: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    fstype: str | None = None,
    read_only: bool = False,
    options: str = "",
    reuse: bool = True,
    partition: int | None = None,
    timeout: float = DEFAULT_UMOUNT_TIMEOUT,
    kernel: Kernel | None = None,
) -> Mount:
    """``with mounted(image, dir) as m:`` mounts (as :func:`mount_image`, at once) and
    unmounts when the block ends, also when it raises, waiting up to ``timeout`` for the
    loop device to go (as :func:`umount`). The same as ``with mount_image(image, dir):``
    with the umount timeout given."""
    m = mount_image(
        image,
        target,
        fstype=fstype,
        read_only=read_only,
        options=options,
        reuse=reuse,
        partition=partition,
        kernel=kernel,
    )
    m.__dict__["umount_timeout"] = timeout
    return m
