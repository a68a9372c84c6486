"""sendfile(2) through splice (fs/read_write.c ``do_sendfile``, fs/splice.c, v5.16).

``do_sendfile`` takes freeze protection on the *output* file (``file_start_write``: the
output filesystem's ``sb_writers`` for reading) and keeps it across ``do_splice_direct``, which
reads the *input* through its ``->splice_read`` (``generic_file_splice_read`` →
``call_read_iter``: for a kernfs file, ``of->mutex``) and writes what it got to the output.
So a sendfile from a sysfs file to a regular file orders ``sb_writers`` before ``&of->mutex``.
"""

from __future__ import annotations

import errno

from loopdev import abi
from loopdev.sim.sched import kfunc
from loopdev.sim.task import current
from loopdev.sim.vfs import (
    FMODE_READ,
    FMODE_WRITE,
    File,
    err,
    fdget,
    file_end_write,
    file_start_write,
)

#: what one round of the internal pipe carries (``pipe->max_usage`` pages)
PIPE_DEF_BUFFERS_BYTES = 16 * 4096
MAX_RW_COUNT = 0x7FFFF000


@kfunc
def do_splice_to(in_file: File, pos: int, size: int) -> bytes:
    """``in->f_op->splice_read`` (``generic_file_splice_read`` → ``call_read_iter``)."""
    return in_file.f_op.read(in_file, size, pos)


@kfunc
def do_splice_from(out_file: File, data: bytes, pos: int) -> int:
    """``out->f_op->splice_write`` (``iter_file_splice_write`` → ``vfs_iter_write``)."""
    return out_file.f_op.write(out_file, data, pos)


@kfunc
def splice_direct_to_actor(in_file: File, pos: int, out_file: File, out_pos: int, count: int) -> int:
    """Move up to `count` bytes through the internal pipe, one pipe-full at a time."""
    done = 0
    while done < count:
        chunk = do_splice_to(in_file, pos + done, min(count - done, PIPE_DEF_BUFFERS_BYTES))
        if not chunk:
            break
        written = do_splice_from(out_file, chunk, out_pos + done)
        done += written
        if written < len(chunk):
            break
    return done


@kfunc
def do_splice_direct(in_file: File, pos: int, out_file: File, out_pos: int, count: int) -> int:
    if out_file.f_flags & abi.O_APPEND:
        raise err(errno.EINVAL, "sendfile to an O_APPEND file")
    return splice_direct_to_actor(in_file, pos, out_file, out_pos, count)


@kfunc
def do_sendfile(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
    """sendfile(out_fd, in_fd, offset, count): returns the bytes copied; ``offset`` None uses
    and advances the input file's position."""
    task = current()
    in_file = fdget(task, in_fd)
    if not in_file.f_mode & FMODE_READ:
        raise err(errno.EBADF, f"fd {in_fd} is not open for reading")
    pos = in_file.f_pos if offset is None else offset
    if pos < 0:
        raise err(errno.EINVAL)
    out_file = fdget(task, out_fd)
    if not out_file.f_mode & FMODE_WRITE:
        raise err(errno.EBADF, f"fd {out_fd} is not open for writing")
    if in_file.f_inode.is_dir() or out_file.f_inode.is_dir():
        raise err(errno.EINVAL)
    count = min(count, MAX_RW_COUNT)
    out_pos = out_file.f_pos
    started = file_start_write(out_file)
    try:
        n = do_splice_direct(in_file, pos, out_file, out_pos, count)
    finally:
        file_end_write(out_file, started)
    if n > 0:
        if offset is None:
            in_file.f_pos = pos + n
        out_file.f_pos = out_pos + n
    return n


__all__ = ["do_sendfile", "do_splice_direct", "splice_direct_to_actor"]
