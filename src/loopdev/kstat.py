""":class:`Stat`: the fields of ``struct stat`` the port returns (re-exported by
:mod:`loopdev.kernel`).

A plain class rather than a dataclass: every command stats something, and importing
``dataclasses`` costs more than the rest of ``loopdev -a`` together.
"""

from __future__ import annotations

from loopdev import abi

_FIELDS = ("mode", "ino", "dev", "rdev", "size", "nlink", "uid", "mount_root")


class Stat:
    """The fields of ``struct stat`` the library uses (immutable, compared by value)."""

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

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: Stat is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: Stat is immutable")

    def _key(self) -> tuple[object, ...]:
        d = self.__dict__
        return tuple(d[f] for f in _FIELDS)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Stat)
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        d = self.__dict__
        return "Stat(" + ", ".join(f"{f}={d[f]!r}" for f in _FIELDS) + ")"

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
