"""Warnings the library gives: as Python warnings (for programs to filter or turn into
errors) and on the ``loopdev`` logger, which has a NullHandler and so prints nothing unless
the application configures logging. The CLI turns them into one ``loopdev:`` line each.
"""

from __future__ import annotations


class LoopdevWarning(UserWarning):
    """Base class of the library's warnings."""


class ReadOnlyFallbackWarning(LoopdevWarning):
    """A read-write attach fell back to read-only because the image is write-protected."""


class DirectIOWarning(LoopdevWarning):
    """Direct I/O was asked for but the backing file does not support it."""


class SizeWarning(LoopdevWarning):
    """The device covers less than asked: the image is smaller than 512 bytes or does not
    end on a 512-byte sector (losetup's warnings), or a size limit reaches past its end."""


def warn(message: str, category: type[LoopdevWarning], stacklevel: int = 2) -> None:
    """Issue ``message`` as a ``category`` warning and log it on the ``loopdev`` logger.

    ``warnings`` and ``logging`` are imported here, on the first warning: most commands never
    warn, and importing logging would cost more than they do.
    """
    import warnings

    warnings.warn(message, category, stacklevel=stacklevel + 1)
    logger().warning(message)


def logger() -> logging.Logger:
    """The library's logger (``logging.getLogger("loopdev")``), with its NullHandler."""
    import logging

    log = logging.getLogger("loopdev")
    if not any(isinstance(h, logging.NullHandler) for h in log.handlers):
        log.addHandler(logging.NullHandler())
    return log


TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
