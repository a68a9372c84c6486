""":class:`Record`: the base of the library's small immutable value types (Stat, LoopStatus).

Plain classes over ``__dict__`` rather than frozen dataclasses: importing ``dataclasses``
costs more than a whole ``loopdev -a``, and building a frozen dataclass instance costs a
``object.__setattr__`` per field.
"""

from __future__ import annotations


class Record:
    """Immutable, compared and hashed by the fields named in ``_fields``; subclasses set
    their fields with one ``self.__dict__.update(...)`` in ``__init__``."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to {name!r}: {type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete {name!r}: {type(self).__name__} is immutable")

    def _key(self) -> tuple[object, ...]:
        d = self.__dict__
        return tuple(d[f] for f in self._fields)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Record)
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        d = self.__dict__
        fields = ", ".join(f"{f}={d[f]!r}" for f in self._fields)
        return f"{type(self).__name__}({fields})"
