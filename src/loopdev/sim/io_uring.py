"""io_uring (io_uring/io_uring.c, io_uring/rw.c, io_uring/io-wq.c of the current kernel):
rings are files, requests hold file references, completions run as task_work, io-wq workers
serve blocking requests, and task exit cancels.

Submission (``io_uring_enter`` → ``io_submit_sqes``): each SQE becomes a request that takes a
reference on the ring context and on its file (``io_file_get_normal`` → ``fget``), then is
issued non-blocking. A read that can complete at once completes inline. A buffered read of a
file on a block filesystem that misses the page cache starts readahead (a bio to the device)
and arms an async page wait (``IOCB_WAITQ``); when the page is unlocked,
``io_async_buf_func`` queues the retry as task_work of the submitter. An ``O_DIRECT`` read
submits its bio and completes from the bio's ``end_io`` as task_work. Everything else that
would block (``-EAGAIN``: kernfs files, block device nodes, ``IOSQE_ASYNC``) is punted to the
task's io-wq, whose worker threads issue it blocking. Requests complete by posting a CQE and
being freed (``io_put_file`` → ``fput``) from task_work of the submitting task
(``tctx_task_work``); when that task cannot run task_work any more, or is exiting, the work goes
to the ring's ``fallback_work`` on a kworker, whose ``fput`` is therefore a *delayed* fput.

Exit (``do_exit`` → ``io_uring_files_cancel`` → ``io_uring_cancel_generic(false)``): io-wq is
told to exit, only *tracked* requests (``REQ_F_INFLIGHT``: those on io_uring files) are waited
for, ``io_uring_clean_tctx`` waits for the io-wq workers; untracked reads in flight keep their
file references. ``exit_files`` then drops the ring file; its ``->release``
(``io_uring_release`` → ``io_ring_ctx_wait_and_kill``) queues ``io_ring_exit_work`` on
``system_unbound_wq``, which cancels what is left, runs the completions parked on the
fallback work, and waits (in 50 ms rounds) for the requests to go; their ``fput``\\ s run in
kernel threads, through ``delayed_fput`` (one more jiffy). So ``umount`` right after the
killed process was reaped can see the mount still in use.

Variant ``exit-cancel-wait`` (:class:`IoUringExitCancelWait`) is Jens Axboe's 2023 series
against that: the exiting task cancels and waits for *all* its requests and for the file
references they held before it goes on to be reaped.

Per run state only: :func:`io_uring_of` gives the run's :class:`IoUring`;
:func:`use_io_uring_variant` selects the variant before the run starts.
"""

from __future__ import annotations

import errno
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from loopdev import abi
from loopdev.sim import sched as _sched
from loopdev.sim.block import REQ_OP_READ, BlockDevice, Request
from loopdev.sim.sched import Scheduler, emit, kfunc, point
from loopdev.sim.sync import Completion, Mutex, SpinLock, WaitQueue, wait_event, wake_up
from loopdev.sim.task import (
    TWA_SIGNAL,
    Task,
    add_exit_hook,
    current,
    kthread_run,
    task_work_add,
    task_work_run,
)
from loopdev.sim.vfs import (
    FMODE_READ,
    File,
    FileOperations,
    Inode,
    SuperBlock,
    err,
    fd_install,
    fdget,
    fget,
    fput,
)
from loopdev.sim.workqueue import (
    DelayedWork,
    Work,
    flush_delayed_work,
    queue_work,
    system_unbound_wq,
    system_wq,
)

if TYPE_CHECKING:
    from loopdev.sim.machine import Machine

# -- ABI (include/uapi/linux/io_uring.h) -----------------------------------------------------------

IORING_OP_NOP = 0
IORING_OP_READ = 22
IORING_ENTER_GETEVENTS = 1 << 0
IOSQE_ASYNC = 1 << 4

# request flags
REQ_F_FORCE_ASYNC = 1 << 0
REQ_F_INFLIGHT = 1 << 1
REQ_F_ISREG = 1 << 2

PAGE_SIZE = 4096
#: ``io_ring_exit_work`` retries cancelation every HZ/20
EXIT_WORK_INTERVAL = 0.05
#: io-wq workers per task (``RLIMIT_NPROC`` in the kernel; small in the model)
IO_WQ_MAX_WORKERS = 4

QUEUED = None  # -EIOCBQUEUED: the request completes later
EAGAIN_RES = -errno.EAGAIN


@dataclass
class Sqe:
    """A submission queue entry as userspace fills it in the mapped SQ ring."""

    opcode: int
    fd: int
    off: int = 0
    len: int = 0
    user_data: int = 0
    flags: int = 0


@dataclass(frozen=True)
class Cqe:
    """A completion queue entry: ``res`` is the byte count or ``-errno``."""

    user_data: int
    res: int
    flags: int = 0


class IoRings:
    """The mapped SQ and CQ rings (shared memory: userspace reads and writes them directly)."""

    def __init__(self, entries: int) -> None:
        self.sq_entries = entries
        self.cq_entries = 2 * entries
        self.sq: deque[Sqe] = deque()
        self.cq: deque[Cqe] = deque()


class IoKiocb:
    """``struct io_kiocb``: one request."""

    __slots__ = (
        "cancel", "ctx", "fd", "file", "flags", "len", "opcode", "pos", "result", "task",
        "tctx", "tw_func", "user_data",
    )  # fmt: skip

    def __init__(self, ctx: IoRingCtx, tctx: IoUringTask, sqe: Sqe) -> None:
        self.ctx = ctx
        self.tctx = tctx
        self.task = tctx.task
        self.opcode = sqe.opcode
        self.fd = sqe.fd
        self.pos = sqe.off
        self.len = sqe.len
        self.user_data = sqe.user_data
        self.flags = REQ_F_FORCE_ASYNC if sqe.flags & IOSQE_ASYNC else 0
        self.file: File | None = None
        self.result = 0
        self.cancel = False  # IO_WQ_WORK_CANCEL
        self.tw_func: Callable[[IoKiocb], None] | None = None

    def __repr__(self) -> str:
        return f"<req {self.user_data} op={self.opcode}>"


class IoRingCtx:
    """``struct io_ring_ctx``."""

    def __init__(self, n: int, entries: int) -> None:
        self.id = n
        self.rings = IoRings(entries)
        self.uring_lock = Mutex(f"ring{n}:uring_lock", lock_class="&ctx->uring_lock")
        self.completion_lock = SpinLock(f"ring{n}:completion_lock", "&ctx->completion_lock")
        self.cq_wait = WaitQueue(f"ring{n}:cq_wait")
        self.refs = 1  # percpu_ref: the base reference, dropped by percpu_ref_kill
        self.refs_dying = False
        self.ref_comp = Completion(f"ring{n}:ref_comp")
        self.tctx_list: list[IoUringTask] = []
        self.fallback_list: list[IoKiocb] = []
        self.fallback_work: DelayedWork
        self.exit_work: Work
        self.freed = False

    def __repr__(self) -> str:
        return f"<io_ring_ctx {self.id}>"


class IoWq:
    """``struct io_wq`` of one task: its worker threads and pending work."""

    def __init__(self, tctx: IoUringTask) -> None:
        self.tctx = tctx
        self.name = f"io-wq:{tctx.task.pid}"
        self.work_list: list[IoKiocb] = []
        self.workers: list[Task] = []
        self.running: dict[Task, IoKiocb] = {}
        self.idle = 0
        self.more_work = WaitQueue(f"{self.name}:work")
        self.exiting = False  # IO_WQ_BIT_EXIT
        self.worker_refs = 1
        self.worker_done = Completion(f"{self.name}:worker_done")
        self.put = False  # io_wq_put_and_exit ran


class IoUringTask:
    """``struct io_uring_task`` (``current->io_uring``)."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.io_wq = IoWq(self)
        self.ctxs: list[IoRingCtx] = []
        self.inflight = 0
        self.inflight_tracked = 0
        self.in_cancel = 0
        self.wait = WaitQueue(f"tctx:{task.pid}:wait")
        self.task_list: list[IoKiocb] = []

    def tctx_inflight(self, tracked: bool) -> int:
        point("atomic_read", f"tctx:{self.task.pid}:inflight")
        return self.inflight_tracked if tracked else self.inflight


def _inflight(tctx: IoUringTask, cancel_all: bool) -> int:
    return tctx.inflight if cancel_all else tctx.inflight_tracked


class IoUringFops(FileOperations):
    """``io_uring_fops``: the ring file."""

    def __init__(self, iou: IoUring) -> None:
        self.iou = iou

    def release(self, inode: Inode, file: File) -> None:
        ctx: IoRingCtx | None = file.private_data
        file.private_data = None
        if ctx is not None:
            self.iou.io_uring_release(ctx)

    def read(self, file: File, size: int, pos: int) -> bytes:
        raise err(errno.EINVAL, "io_uring ring")


class BioEndIo(Completion):
    """``bio->bi_end_io`` for an asynchronous bio (``submit_bio_wait`` is the same with a
    completion): ``blk_mq_end_request`` calls it in whatever context ends the request."""

    def __init__(self, name: str, fn: Callable[[], None]) -> None:
        super().__init__(name)
        self.fn = fn

    def complete(self) -> None:
        self.fn()


class Page:
    """A page-cache page of a file (contents stay in the inode; the page tracks I/O)."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.locked = True
        self.uptodate = False
        self.error = 0
        self.wq = WaitQueue(f"page:{index}")
        self.async_waiters: list[Callable[[], None]] = []


# -- the per-run io_uring ------------------------------------------------------------------------


class IoUring:
    """io_uring as in the current kernel (the ``current`` variant)."""

    variant = "current"

    def __init__(self, sched: Scheduler) -> None:
        self.sched = sched
        self.fops = IoUringFops(self)
        self.tctxs: dict[Task, IoUringTask] = {}
        self.page_cache: dict[tuple[SuperBlock, int], dict[int, Page]] = {}
        self.nr_ctx = 0
        self.anon_sb: SuperBlock | None = None

    # -- helpers ------------------------------------------------------------------------------

    @property
    def machine(self) -> Machine:
        from loopdev.sim.machine import machine_of

        return machine_of(self.sched)

    def tctx_of(self, task: Task) -> IoUringTask | None:
        return self.tctxs.get(task)

    def percpu_ref_get(self, ctx: IoRingCtx) -> None:
        point("atomic", f"ring{ctx.id}:refs")
        ctx.refs += 1

    def percpu_ref_put(self, ctx: IoRingCtx) -> None:
        point("atomic", f"ring{ctx.id}:refs")
        ctx.refs -= 1
        if ctx.refs == 0 and ctx.refs_dying:
            ctx.ref_comp.complete()

    def percpu_ref_kill(self, ctx: IoRingCtx) -> None:
        ctx.refs_dying = True
        self.percpu_ref_put(ctx)

    # -- setup ---------------------------------------------------------------------------------

    @kfunc
    def io_uring_setup(self, entries: int) -> int:
        if entries <= 0 or entries > 32768:
            raise err(errno.EINVAL, f"io_uring_setup: {entries} entries")
        task = current()
        self.nr_ctx += 1
        ctx = IoRingCtx(self.nr_ctx, entries)
        ctx.fallback_work = DelayedWork(
            lambda: self.io_fallback_req_func(ctx), f"ring{ctx.id}:fallback_work"
        )
        ctx.exit_work = Work(self._exit_fn(ctx), f"ring{ctx.id}:exit_work")
        file = self.anon_inode_getfile(ctx)
        self.io_uring_add_tctx_node(ctx)
        fd = fd_install(task, file)
        emit("state", f"ring{ctx.id}", f"io_uring_setup({entries}) = fd {fd}")
        return fd

    def anon_inode_getfile(self, ctx: IoRingCtx) -> File:
        m = self.machine
        if self.anon_sb is None:
            self.anon_sb = SuperBlock("anon_inodefs", m.vfs.anon_dev())
        inode = Inode(self.anon_sb, 0o600)
        file = File(m.vfs, inode, None, "anon_inode:[io_uring]", abi.O_RDWR, self.fops)
        file.private_data = ctx
        return file

    @kfunc
    def io_uring_alloc_task_context(self, task: Task) -> IoUringTask:
        tctx = self.tctxs[task] = IoUringTask(task)
        return tctx

    @kfunc
    def io_uring_add_tctx_node(self, ctx: IoRingCtx) -> IoUringTask:
        task = current()
        tctx = self.tctx_of(task)
        if tctx is None:
            tctx = self.io_uring_alloc_task_context(task)
        if ctx not in tctx.ctxs:
            tctx.ctxs.append(ctx)
            ctx.uring_lock.lock()
            ctx.tctx_list.append(tctx)
            ctx.uring_lock.unlock()
        return tctx

    def ring_ctx(self, fd: int) -> IoRingCtx:
        file = fdget(current(), fd)
        if file.f_op is not self.fops:
            raise err(errno.EOPNOTSUPP, f"fd {fd} is not an io_uring")
        ctx: IoRingCtx | None = file.private_data
        if ctx is None:
            raise err(errno.EBADF)
        return ctx

    def io_uring_mmap(self, fd: int) -> IoRings:
        """The rings as userspace maps them."""
        return self.ring_ctx(fd).rings

    # -- submission ----------------------------------------------------------------------------

    @kfunc
    def io_uring_enter(self, fd: int, to_submit: int, min_complete: int, flags: int) -> int:
        ctx = self.ring_ctx(fd)
        submitted = 0
        if to_submit:
            self.io_uring_add_tctx_node(ctx)
            ctx.uring_lock.lock()
            try:
                submitted = self.io_submit_sqes(ctx, to_submit)
            finally:
                ctx.uring_lock.unlock()
        if flags & IORING_ENTER_GETEVENTS:
            self.io_cqring_wait(ctx, min_complete)
        return submitted

    @kfunc
    def io_submit_sqes(self, ctx: IoRingCtx, nr: int) -> int:
        task = current()
        tctx = self.tctx_of(task)
        assert tctx is not None
        done = 0
        while done < nr and ctx.rings.sq:
            sqe = ctx.rings.sq.popleft()
            req = IoKiocb(ctx, tctx, sqe)
            self.percpu_ref_get(ctx)
            tctx.inflight += 1
            done += 1
            try:
                self.io_init_req(req)
            except OSError as e:
                req.result = -(e.errno or errno.EINVAL)
                self.io_req_complete(req)
                continue
            self.io_queue_sqe(req)
        return done

    @kfunc
    def io_init_req(self, req: IoKiocb) -> None:
        if req.opcode == IORING_OP_NOP:
            return
        if req.opcode != IORING_OP_READ:
            raise err(errno.EINVAL, f"opcode {req.opcode} is not modelled")
        file = fget(req.task, req.fd)  # io_file_get_normal
        req.file = file
        if file.f_inode.is_reg() and file.f_inode.data is not None:
            req.flags |= REQ_F_ISREG
        if file.f_op is self.fops:  # io_req_track_inflight
            req.flags |= REQ_F_INFLIGHT
            req.tctx.inflight_tracked += 1

    @kfunc
    def io_queue_sqe(self, req: IoKiocb) -> None:
        if req.flags & REQ_F_FORCE_ASYNC:
            self.io_queue_iowq(req)
            return
        res = self.io_issue_sqe(req, nonblock=True)
        if res is QUEUED:
            return
        if res == EAGAIN_RES:
            self.io_queue_iowq(req)  # io_queue_async: no poll for regular files
            return
        req.result = res
        self.io_req_complete(req)

    @kfunc
    def io_issue_sqe(self, req: IoKiocb, nonblock: bool) -> int | None:
        if req.opcode == IORING_OP_NOP:
            return 0
        return self.io_read(req, nonblock)

    # -- reads (io_uring/rw.c) ----------------------------------------------------------------

    @kfunc
    def io_read(self, req: IoKiocb, nonblock: bool) -> int | None:
        file = req.file
        assert file is not None
        if not file.f_mode & FMODE_READ:
            return -errno.EBADF
        inode = file.f_inode
        sb = inode.i_sb
        try:
            if req.flags & REQ_F_ISREG and sb.s_bdev is not None:
                if file.f_flags & abi.O_DIRECT:
                    return self.io_read_direct(req, sb.s_bdev, nonblock)
                return self.filemap_read(req, nonblock)
            if req.flags & REQ_F_ISREG:
                return len(file.f_op.read(file, req.len, req.pos))  # in memory: never blocks
            if nonblock:
                return EAGAIN_RES  # no FMODE_NOWAIT: punt to io-wq
            return len(file.f_op.read(file, req.len, req.pos))
        except OSError as e:
            return -(e.errno or errno.EIO)

    def page_dev_pos(self, inode: Inode, index: int, bdev: BlockDevice) -> int:
        """Where the model puts a file page on its device (the model's files live in memory;
        the I/O still goes through the device so that the driver sees it)."""
        pages = self.machine.block.capacity_bytes(bdev) // PAGE_SIZE
        if pages <= 1:
            return 0
        return (1 + (inode.ino * 61 + index) % (pages - 1)) * PAGE_SIZE

    @kfunc
    def submit_bio(
        self,
        bdev: BlockDevice,
        pos: int,
        size: int,
        end_io: Callable[[Request], None],
        nowait: bool,
    ) -> int:
        """Submit a read bio whose ``end_io`` runs when the driver ends it; ``-EAGAIN`` for a
        ``REQ_NOWAIT`` bio to a frozen queue."""
        block = self.machine.block
        req = Request(bdev, REQ_OP_READ, pos, size)
        req.done = BioEndIo("bio_end_io", lambda: end_io(req))
        q = req.q
        if nowait and q.mq_freeze_depth:
            return EAGAIN_RES
        try:
            block.bio_queue_enter(q)
        except OSError as e:
            req.status = e.errno or errno.EIO
            end_io(req)
            return 0
        if q.queue_rq is None:
            block.blk_mq_end_request(req, errno.EIO)
        else:
            q.queue_rq(req)
        return 0

    @kfunc
    def io_read_direct(self, req: IoKiocb, bdev: BlockDevice, nonblock: bool) -> int | None:
        """``iomap_dio_rw``: one bio; completes from its ``end_io`` (``io_complete_rw``)."""
        file = req.file
        assert file is not None
        size = min(req.len, max(0, file.f_inode.size() - req.pos))
        if size <= 0:
            return 0
        index = req.pos // PAGE_SIZE
        pos = self.page_dev_pos(file.f_inode, index, bdev)

        def io_complete_rw(bio: Request) -> None:
            req.result = -bio.status if bio.status else size
            self.io_req_task_work_add(req, self.io_req_rw_complete)

        ret = self.submit_bio(bdev, pos, min(size, PAGE_SIZE), io_complete_rw, nonblock)
        return EAGAIN_RES if ret == EAGAIN_RES else QUEUED

    def _pages(self, inode: Inode) -> dict[int, Page]:
        return self.page_cache.setdefault((inode.i_sb, inode.ino), {})

    @kfunc
    def page_cache_sync_readahead(self, inode: Inode, index: int, nowait: bool) -> Page | None:
        """Add a locked page and submit its read; None when a NOWAIT bio would block."""
        sb = inode.i_sb
        bdev = sb.s_bdev
        assert bdev is not None
        page = Page(index)
        pages = self._pages(inode)
        pages[index] = page

        def end_page_read(bio: Request) -> None:
            page.error = bio.status
            page.uptodate = not bio.status
            if bio.status:
                pages.pop(index, None)
            self.unlock_page(page)

        ret = self.submit_bio(bdev, self.page_dev_pos(inode, index, bdev), PAGE_SIZE,
                              end_page_read, nowait)  # fmt: skip
        if ret == EAGAIN_RES:
            pages.pop(index, None)
            return None
        return page

    @kfunc
    def unlock_page(self, page: Page) -> None:
        """Unlock and wake the page's waiters (``wake_page_function`` / ``io_async_buf_func``)."""
        page.locked = False
        waiters, page.async_waiters = page.async_waiters, []
        for cb in waiters:
            cb()
        wake_up(page.wq)

    @kfunc
    def filemap_read(self, req: IoKiocb, nonblock: bool) -> int | None:
        """Buffered read through the page cache. Non-blocking (``IOCB_NOWAIT|IOCB_WAITQ``):
        a missing or locked page arms an async wait and the request is retried from
        task_work; blocking (io-wq): wait for the page."""
        file = req.file
        assert file is not None
        inode = file.f_inode
        size = min(req.len, max(0, inode.size() - req.pos))
        if size <= 0:
            return 0
        first, last = req.pos // PAGE_SIZE, (req.pos + size - 1) // PAGE_SIZE
        pages = self._pages(inode)
        for index in range(first, last + 1):
            point("read", f"page_cache:{inode.ino}:{index}")
            page = pages.get(index)
            if page is None:
                page = self.page_cache_sync_readahead(inode, index, nonblock)
                if page is None:
                    return EAGAIN_RES
            if page.locked:
                if nonblock:
                    page.async_waiters.append(self._async_buf_func(req))
                    return QUEUED
                wait_event(page.wq, lambda p=page: not p.locked)  # type: ignore[misc]
            if page.error or not page.uptodate:
                return -(page.error or errno.EIO)
        return len(file.f_op.read(file, size, req.pos))

    def _async_buf_func(self, req: IoKiocb) -> Callable[[], None]:
        def io_async_buf_func() -> None:
            self.io_req_task_work_add(req, self.io_req_task_submit)

        return io_async_buf_func

    # -- io-wq (io_uring/io-wq.c) --------------------------------------------------------------

    @kfunc
    def io_queue_iowq(self, req: IoKiocb) -> None:
        wq = req.tctx.io_wq
        if wq.exiting:
            self.io_run_cancel(req)
            return
        wq.work_list.append(req)
        point("spin", f"{wq.name}:lock")
        if wq.idle:
            wake_up(wq.more_work)
        elif len(wq.workers) < IO_WQ_MAX_WORKERS:
            self.create_io_worker(wq)

    @kfunc
    def create_io_worker(self, wq: IoWq) -> None:
        wq.worker_refs += 1
        worker = kthread_run(lambda: self.io_wq_worker(wq), f"iou-wrk-{wq.tctx.task.pid}",
                             daemon=True)  # fmt: skip
        wq.workers.append(worker)

    @kfunc
    def io_wq_worker(self, wq: IoWq) -> None:
        me = current()
        while True:
            if wq.work_list:
                req = wq.work_list.pop(0)
                if wq.exiting and not req.flags & REQ_F_ISREG:
                    req.cancel = True  # unbound work is cancelled once io-wq exits
                wq.running[me] = req
                self.io_wq_submit_work(req)
                del wq.running[me]
                continue
            if wq.exiting:
                break
            wq.idle += 1
            wait_event(wq.more_work, lambda: bool(wq.work_list) or wq.exiting)
            wq.idle -= 1
        self.io_worker_ref_put(wq)

    def io_worker_ref_put(self, wq: IoWq) -> None:
        wq.worker_refs -= 1
        if wq.worker_refs == 0:
            wq.worker_done.complete()

    @kfunc
    def io_wq_submit_work(self, req: IoKiocb) -> None:
        if req.cancel:
            self.io_req_task_queue_fail(req, -errno.ECANCELED)
            return
        res = self.io_issue_sqe(req, nonblock=False)
        if res is QUEUED:
            return
        req.result = res
        self.io_req_task_work_add(req, self.io_req_task_complete)

    @kfunc
    def io_run_cancel(self, req: IoKiocb) -> None:
        req.cancel = True
        self.io_req_task_queue_fail(req, -errno.ECANCELED)

    @kfunc
    def io_wq_cancel_cb(self, wq: IoWq, match: Callable[[IoKiocb], bool]) -> bool:
        """Cancel matching pending work; running work is only flagged (a blocking read is not
        interruptible)."""
        found = False
        for req in [r for r in wq.work_list if match(r)]:
            wq.work_list.remove(req)
            self.io_run_cancel(req)
            found = True
        for req in wq.running.values():
            if match(req) and not req.cancel:
                req.cancel = True
                found = True
        return found

    @kfunc
    def io_wq_exit_start(self, wq: IoWq) -> None:
        wq.exiting = True

    @kfunc
    def io_wq_put_and_exit(self, wq: IoWq) -> None:
        """Wake every worker, wait until all have exited, cancel what is still pending."""
        wake_up(wq.more_work)
        self.io_worker_ref_put(wq)
        wq.worker_done.wait_for_completion()
        for req in list(wq.work_list):  # io_wq_destroy → io_wq_cancel_pending_work
            wq.work_list.remove(req)
            self.io_run_cancel(req)

    # -- completion -----------------------------------------------------------------------------

    @kfunc
    def io_req_task_work_add(self, req: IoKiocb, func: Callable[[IoKiocb], None]) -> None:
        """Queue `func(req)` to run in the submitter's context (``tctx_task_work``); if the task
        can no longer run task_work, hand it to the ring's fallback work."""
        tctx = req.tctx
        req.tw_func = func
        first = not tctx.task_list
        tctx.task_list.append(req)
        if not first:
            return
        if task_work_add(tctx.task, self._tctx_task_work(tctx), TWA_SIGNAL) < 0:
            self.io_fallback_tw(tctx, sync=False)
            return
        wake_up(tctx.wait)  # TWA_SIGNAL: the task leaves interruptible waits to run it
        wake_up(req.ctx.cq_wait)

    def _tctx_task_work(self, tctx: IoUringTask) -> Callable[[], None]:
        def tctx_task_work() -> None:
            self.tctx_task_work_run(tctx)

        return tctx_task_work

    @kfunc
    def tctx_task_work_run(self, tctx: IoUringTask) -> None:
        if current().exiting:  # PF_EXITING
            self.io_fallback_tw(tctx, sync=True)
            return
        while tctx.task_list:
            batch, tctx.task_list = tctx.task_list, []
            for req in batch:
                fn = req.tw_func
                assert fn is not None
                fn(req)

    @kfunc
    def io_fallback_tw(self, tctx: IoUringTask, sync: bool) -> None:
        """Move the task's pending completions to each ring's ``fallback_work``."""
        batch, tctx.task_list = tctx.task_list, []
        ctxs: list[IoRingCtx] = []
        for req in batch:
            ctx = req.ctx
            if sync and ctx not in ctxs:
                ctxs.append(ctx)
                self.percpu_ref_get(ctx)
            first = not ctx.fallback_list
            ctx.fallback_list.append(req)
            if first:
                queue_work(system_wq, ctx.fallback_work)  # schedule_delayed_work(..., 1)
        for ctx in ctxs:
            flush_delayed_work(ctx.fallback_work)
            self.percpu_ref_put(ctx)

    @kfunc
    def io_fallback_req_func(self, ctx: IoRingCtx) -> None:
        self.percpu_ref_get(ctx)
        ctx.uring_lock.lock()
        while ctx.fallback_list:
            batch, ctx.fallback_list = ctx.fallback_list, []
            for req in batch:
                fn = req.tw_func
                assert fn is not None
                fn(req)
        ctx.uring_lock.unlock()
        self.percpu_ref_put(ctx)

    def io_should_terminate_tw(self) -> bool:
        task = current()
        return task.is_kthread or task.exiting

    @kfunc
    def io_req_task_submit(self, req: IoKiocb) -> None:
        """Retry a request whose page became ready."""
        if self.io_should_terminate_tw():
            req.result = -errno.ECANCELED
            self.io_req_task_complete(req)
            return
        self.io_queue_sqe(req)

    @kfunc
    def io_req_rw_complete(self, req: IoKiocb) -> None:
        self.io_req_task_complete(req)

    @kfunc
    def io_req_task_cancel(self, req: IoKiocb) -> None:
        self.io_req_task_complete(req)

    @kfunc
    def io_req_task_queue_fail(self, req: IoKiocb, ret: int) -> None:
        req.result = ret
        self.io_req_task_work_add(req, self.io_req_task_cancel)

    @kfunc
    def io_req_task_complete(self, req: IoKiocb) -> None:
        self.io_req_complete(req)

    @kfunc
    def io_req_complete(self, req: IoKiocb) -> None:
        """Post the CQE, then free the request."""
        self.io_req_complete_post(req)
        self.io_free_req(req)

    @kfunc
    def io_req_complete_post(self, req: IoKiocb) -> None:
        ctx = req.ctx
        ctx.completion_lock.lock()
        ctx.rings.cq.append(Cqe(req.user_data, req.result))
        ctx.completion_lock.unlock()
        wake_up(ctx.cq_wait)

    @kfunc
    def io_free_req(self, req: IoKiocb) -> None:
        """``io_put_file`` (the request's file reference), the task's and the ring's counts."""
        file, req.file = req.file, None
        if file is not None:
            fput(file)
        tctx = req.tctx
        tctx.inflight -= 1
        if req.flags & REQ_F_INFLIGHT:
            tctx.inflight_tracked -= 1
        wake_up(tctx.wait)
        self.percpu_ref_put(req.ctx)

    @kfunc
    def io_cqring_wait(self, ctx: IoRingCtx, min_events: int) -> None:
        """Wait (interruptibly: SIGKILL ends it with EINTR) for `min_events` CQEs, running the
        task's task_work meanwhile."""
        task = current()
        cq = ctx.rings.cq
        while True:
            if task.task_works:
                task_work_run()  # io_run_task_work
            if len(cq) >= min_events:
                return
            wait_event(ctx.cq_wait, lambda: len(cq) >= min_events or bool(task.task_works),
                       killable=True)  # fmt: skip

    # -- ring release and exit work ------------------------------------------------------------

    @kfunc
    def io_uring_release(self, ctx: IoRingCtx) -> None:
        self.io_ring_ctx_wait_and_kill(ctx)

    @kfunc
    def io_ring_ctx_wait_and_kill(self, ctx: IoRingCtx) -> None:
        ctx.uring_lock.lock()
        self.percpu_ref_kill(ctx)
        ctx.uring_lock.unlock()
        queue_work(system_unbound_wq, ctx.exit_work)

    def _exit_fn(self, ctx: IoRingCtx) -> Callable[[], None]:
        def io_ring_exit_work() -> None:
            self.io_ring_exit_work(ctx)

        return io_ring_exit_work

    @kfunc
    def io_ring_exit_work(self, ctx: IoRingCtx) -> None:
        """Cancel everything of the ring, wait for its requests in HZ/20 rounds, then remove
        the ring from the tasks still using it and free it."""
        while True:
            while self.io_uring_try_cancel_requests(ctx, None, True):
                pass
            if ctx.ref_comp.wait_for_completion_timeout(EXIT_WORK_INTERVAL):
                break
        ctx.uring_lock.lock()
        while ctx.tctx_list:
            tctx = ctx.tctx_list[0]
            done = Completion(f"ring{ctx.id}:tctx_exit")
            ret = task_work_add(tctx.task, self._tctx_exit_cb(ctx, tctx, done), TWA_SIGNAL)
            if ret < 0:
                emit("fail", "WARNING: io_ring_exit_work", f"task_work_add -> {tctx.task.name}")
                ctx.tctx_list.remove(tctx)
                continue
            wake_up(tctx.wait)
            wake_up(ctx.cq_wait)
            ctx.uring_lock.unlock()
            done.wait_for_completion()
            ctx.uring_lock.lock()
        ctx.uring_lock.unlock()
        ctx.completion_lock.lock()
        ctx.completion_lock.unlock()
        self.io_ring_ctx_free(ctx)

    def _tctx_exit_cb(
        self, ctx: IoRingCtx, tctx: IoUringTask, done: Completion
    ) -> Callable[[], None]:
        def io_tctx_exit_cb() -> None:
            if not tctx.in_cancel:
                self.io_uring_del_tctx_node(tctx, ctx)
            done.complete()

        return io_tctx_exit_cb

    @kfunc
    def io_uring_del_tctx_node(self, tctx: IoUringTask, ctx: IoRingCtx) -> None:
        if ctx in tctx.ctxs:
            tctx.ctxs.remove(ctx)
        ctx.uring_lock.lock()
        if tctx in ctx.tctx_list:
            ctx.tctx_list.remove(tctx)
        ctx.uring_lock.unlock()

    @kfunc
    def io_ring_ctx_free(self, ctx: IoRingCtx) -> None:
        ctx.freed = True
        emit("state", f"ring{ctx.id}", "freed")

    @kfunc
    def io_uring_try_cancel_requests(
        self, ctx: IoRingCtx, task: Task | None, cancel_all: bool
    ) -> bool:
        ret = False
        if task is None:
            ret |= self.io_uring_try_cancel_iowq(ctx)
            # 254176234222 "io_uring: flush delayed fallback task_work in cancelation"
            # (v6.10): the exit work runs completions parked on the fallback work at once
            ret |= flush_delayed_work(ctx.fallback_work)
        else:
            tctx = self.tctx_of(task)
            if tctx is not None:

                def match(r: IoKiocb) -> bool:
                    return r.task is task and (cancel_all or bool(r.flags & REQ_F_INFLIGHT))

                ret |= self.io_wq_cancel_cb(tctx.io_wq, match)
            cur = current()
            if cur.task_works:
                task_work_run()  # io_run_task_work
                ret = True
        return ret

    @kfunc
    def io_uring_try_cancel_iowq(self, ctx: IoRingCtx) -> bool:
        ret = False
        ctx.uring_lock.lock()
        for tctx in list(ctx.tctx_list):
            ret |= self.io_wq_cancel_cb(tctx.io_wq, lambda r: r.ctx is ctx)
        ctx.uring_lock.unlock()
        return ret

    # -- task exit -------------------------------------------------------------------------------

    @kfunc
    def io_uring_files_cancel(self, task: Task) -> None:
        """``do_exit``: cancel the tracked requests only (``__io_uring_cancel(false)``)."""
        if self.tctx_of(task) is not None:
            self.io_uring_cancel_generic(False)

    @kfunc
    def io_uring_cancel_generic(self, cancel_all: bool) -> None:
        task = current()
        tctx = self.tctx_of(task)
        if tctx is None:
            return
        self.io_wq_exit_start(tctx.io_wq)
        tctx.in_cancel += 1
        while True:
            inflight = tctx.tctx_inflight(not cancel_all)
            if not inflight:
                break
            loop = False
            for ctx in list(tctx.ctxs):
                loop |= self.io_uring_try_cancel_requests(ctx, task, cancel_all)
            if loop:
                continue
            if task.task_works:
                task_work_run()
            if inflight == tctx.tctx_inflight(not cancel_all):
                seen = inflight
                wait_event(tctx.wait, lambda: _inflight(tctx, cancel_all) != seen  # noqa: B023
                           or bool(task.task_works))  # fmt: skip
        self.io_uring_clean_tctx(tctx)
        tctx.in_cancel -= 1

    @kfunc
    def io_uring_clean_tctx(self, tctx: IoUringTask) -> None:
        for ctx in list(tctx.ctxs):
            self.io_uring_del_tctx_node(tctx, ctx)
        wq = tctx.io_wq
        if not wq.put:
            wq.put = True
            self.io_wq_put_and_exit(wq)


class IoUringExitCancelWait(IoUring):
    """``exit-cancel-wait``: Jens Axboe's 2023 series for the umount-after-kill report. The
    exiting task cancels and waits for *every* one of its requests (not only the tracked ones)
    and then for the file references they dropped (``flush_delayed_fput``), before it goes on
    to ``exit_files`` and is reaped."""

    variant = "exit-cancel-wait"

    @kfunc
    def io_uring_files_cancel(self, task: Task) -> None:
        if self.tctx_of(task) is None:
            return
        self.io_uring_cancel_generic(True)
        self.flush_delayed_fput()

    def flush_delayed_fput(self) -> None:
        self.machine.vfs.flush_delayed_fput()


IO_URING_VARIANTS: dict[str, type[IoUring]] = {
    cls.variant: cls for cls in (IoUring, IoUringExitCancelWait)
}
STATE_KEY = "loopdev.io_uring"


def use_io_uring_variant(sched: Scheduler, variant: str) -> IoUring:
    """Select the io_uring variant of `sched`'s run (before anything used io_uring)."""
    try:
        cls = IO_URING_VARIANTS[variant]
    except KeyError:
        known = ", ".join(IO_URING_VARIANTS)
        raise ValueError(f"unknown io_uring variant {variant!r}; known: {known}") from None
    iou = cls(sched)
    sched.registry[STATE_KEY] = iou
    return iou


def io_uring_of(sched: Scheduler) -> IoUring:
    """The run's io_uring (the ``current`` variant unless another was selected)."""
    iou = sched.registry.get(STATE_KEY)
    if not isinstance(iou, IoUring):
        iou = use_io_uring_variant(sched, "current")
    return iou


def _io_uring_exit_hook(task: Task) -> None:
    s = _sched.maybe_scheduler()
    if s is None:
        return
    iou = s.registry.get(STATE_KEY)
    if isinstance(iou, IoUring) and iou.tctx_of(task) is not None:
        iou.io_uring_files_cancel(task)


add_exit_hook(_io_uring_exit_hook)

# -- system calls (model-only; SimKernel exposes them) -------------------------------------------


def sys_io_uring_setup(entries: int) -> int:
    return io_uring_of(_sched.current_scheduler()).io_uring_setup(entries)


def sys_io_uring_enter(fd: int, to_submit: int, min_complete: int, flags: int) -> int:
    iou = io_uring_of(_sched.current_scheduler())
    return iou.io_uring_enter(fd, to_submit, min_complete, flags)


def sys_io_uring_mmap(fd: int) -> IoRings:
    return io_uring_of(_sched.current_scheduler()).io_uring_mmap(fd)


__all__ = [
    "IORING_ENTER_GETEVENTS", "IORING_OP_NOP", "IORING_OP_READ", "IOSQE_ASYNC",
    "IO_URING_VARIANTS", "Cqe", "IoRingCtx", "IoRings", "IoUring", "IoUringExitCancelWait",
    "Sqe", "io_uring_of", "sys_io_uring_enter", "sys_io_uring_mmap", "sys_io_uring_setup",
    "use_io_uring_variant",
]  # fmt: skip
