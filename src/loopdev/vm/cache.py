"""Where the virtual-machine tooling keeps what it downloads and builds (kernel packages, the
unpacked kernel source, built ``loop.ko`` modules, a lockdep kernel): the user's cache
directory, so it is fetched or built once per machine."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """``$LOOPDEV_CACHE`` or ``$XDG_CACHE_HOME/loopdev`` or ``~/.cache/loopdev``, joined with
    ``parts`` and created."""
    root = os.environ.get("LOOPDEV_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "loopdev")
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
