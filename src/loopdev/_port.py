"""What every public function does with its arguments first: the kernel (the one passed in,
else the running Linux kernel) and paths (``str`` or ``os.PathLike[str]``, as text)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import os

    from loopdev.kernel import Kernel

_default: Kernel | None = None


def resolve(kernel: Kernel | None) -> Kernel:
    global _default
    if kernel is not None:
        return kernel
    if _default is None:
        from loopdev.linux import default_kernel

        _default = default_kernel()
    return _default


def fspath(path: str | os.PathLike[str]) -> str:
    """``path`` as text: a ``str`` as it is, a ``pathlib.Path`` (any ``os.PathLike[str]``)
    through ``__fspath__``; TypeError for anything else (bytes paths are not supported)."""
    if isinstance(path, str):
        return path
    fs = getattr(path, "__fspath__", None)
    if fs is not None:
        text = fs()
        if isinstance(text, str):
            return text
    raise TypeError(f"expected a str or os.PathLike[str] path, not {type(path).__name__}")
