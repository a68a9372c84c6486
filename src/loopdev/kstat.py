""":class:`Stat`: the fields of ``struct stat`` the port returns (re-exported by
:mod:`loopdev.kernel`).

A :class:`~loopdev.record.Record`, not a dataclass: every command stats something.
"""

from __future__ import annotations

from loopdev import abi
from loopdev.record import Record

_FIELDS = ("mode", "ino", "dev", "rdev", "size", "nlink", "uid", "mount_root")


class Stat(Record):
    """The fields of ``struct stat`` the library uses (immutable, compared by value)."""

    _fields = _FIELDS

    mode: int
    ino: int
    dev: int
    rdev: int
    size: int
    nlink: int
    uid: int
    #: statx's STATX_ATTR_MOUNT_ROOT: the path is the root of a mount. None when the port
    #: cannot tell (no statx, fstat, the model): callers fall back to the mount table.
    mount_root: bool | None

    def __init__(
        self,
        mode: int,
        ino: int,
        dev: int,
        rdev: int = 0,
        size: int = 0,
        nlink: int = 1,
        uid: int = 0,
        mount_root: bool | None = None,
    ) -> None:
        self.__dict__.update(
            mode=mode,
            ino=ino,
            dev=dev,
            rdev=rdev,
            size=size,
            nlink=nlink,
            uid=uid,
            mount_root=mount_root,
        )

    @property
    def kind(self) -> int:
        return self.mode & abi.S_IFMT

    @property
    def is_reg(self) -> bool:
        return self.kind == abi.S_IFREG

    @property
    def is_dir(self) -> bool:
        return self.kind == abi.S_IFDIR

    @property
    def is_blk(self) -> bool:
        return self.kind == abi.S_IFBLK

    @property
    def is_chr(self) -> bool:
        return self.kind == abi.S_IFCHR

    @property
    def is_fifo(self) -> bool:
        return self.kind == abi.S_IFIFO
