"""A model of fio (flexible I/O tester) for the model kernel: jobs of reads on one file through
io_uring (``--ioengine=io_uring``, the model-only io_uring syscalls of
:class:`loopdev.sim.kernel.SimKernel`) or ``pread`` (``psync``/``sync``).

What it keeps of fio: the command line (``--name --filename --ioengine --rw=read|randread
--bs --size --iodepth --direct --numjobs --time_based --runtime --force_async --thinktime
--thread --output``), laying out a missing or short file first, ``iodepth`` requests in flight
per job, each job its own ring, reaping with ``io_uring_enter(GETEVENTS, min_complete=1)``.
What it does not: statistics beyond a summary line, other engines, writes. The jobs run in
the one model task (``--thread``: a SIGKILL ends all of them together). Its start-up and its
I/O take virtual time (the timing parameters ``fio.exec_time`` and, in the loop driver,
``loop.service_time``), so a ``--time_based`` job runs until ``--runtime`` like the real
one; a pass over the file that takes no virtual time at all (page-cache hits) ends the job,
since the model's clock could never reach the runtime; ``--thinktime`` (usec) sleeps
between batches as fio does.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from dataclasses import dataclass, field

from loopdev import abi
from loopdev.kernel import Kernel, RunResult
from loopdev.lab.userspace.program import EX_FAILURE, fail, ok, spend_cpu, strerror, strtosize
from loopdev.sim.io_uring import IoRings, Sqe
from loopdev.sim.kernel import SimKernel
from loopdev.sim.params import FIO_EXEC_TIME, FIO_EXIT_MM
from loopdev.sim.sched import param

IORING_OP_READ = 22
IORING_ENTER_GETEVENTS = 1
IOSQE_ASYNC = 1 << 4
LAYOUT_CHUNK = 1 << 20


@dataclass
class JobSpec:
    """One ``--name`` section of the command line."""

    name: str = "job"
    filename: str = ""
    ioengine: str = "psync"
    rw: str = "read"
    bs: int = 4096
    size: int = 0
    iodepth: int = 1
    direct: bool = False
    numjobs: int = 1
    time_based: bool = False
    runtime: float = 0.0
    force_async: int = 0
    thinktime: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)


_BOOL = {"1": True, "0": False, "true": True, "false": False}
_IGNORED = {"thread", "output", "group_reporting", "output-format", "minimal", "eta"}


def parse_args(argv: Sequence[str]) -> JobSpec:
    """The job from ``fio --opt=value ...`` (ValueError on what the model does not know)."""
    job = JobSpec()
    for arg in argv[1:]:
        if not arg.startswith("--"):
            raise ValueError(f"job files are not modelled: {arg!r}")
        key, _, value = arg[2:].partition("=")
        if key in _IGNORED:
            continue
        if key == "name":
            job.name = value
        elif key == "filename":
            job.filename = value
        elif key == "ioengine":
            if value not in ("io_uring", "psync", "sync"):
                raise ValueError(f"ioengine {value!r} is not modelled")
            job.ioengine = value
        elif key == "rw":
            if value not in ("read", "randread"):
                raise ValueError(f"rw={value} is not modelled")
            job.rw = value
        elif key in ("bs", "size"):
            setattr(job, key, strtosize(value))
        elif key in ("iodepth", "numjobs", "force_async"):
            setattr(job, key, int(value))
        elif key in ("direct", "time_based"):
            setattr(job, key, _BOOL.get(value or "1", True))
        elif key == "runtime":
            job.runtime = float(value.rstrip("s"))
        elif key == "thinktime":
            job.thinktime = int(value) / 1e6
        else:
            raise ValueError(f"unrecognized option '--{key}'")
    if not job.filename:
        raise ValueError("no --filename given")
    if job.bs <= 0 or job.iodepth <= 0 or job.numjobs <= 0:
        raise ValueError("bs, iodepth and numjobs must be positive")
    return job


def layout(kernel: Kernel, job: JobSpec) -> int:
    """Create or extend the file to ``size`` ("Laying out IO file"); returns its size."""
    fd = kernel.open(job.filename, abi.O_RDWR | abi.O_CREAT | abi.O_CLOEXEC, 0o644)
    try:
        size = kernel.fstat(fd).size
        want = job.size or size
        while size < want:
            n = min(LAYOUT_CHUNK, want - size)
            size += kernel.pwrite(fd, bytes(n), size)
        return want
    finally:
        kernel.close(fd)


class Job:
    """One running job: its file, its ring, what is in flight."""

    def __init__(self, kernel: SimKernel, spec: JobSpec, index: int, size: int) -> None:
        self.kernel = kernel
        self.spec = spec
        self.index = index
        self.blocks = max(1, size // spec.bs)
        flags = abi.O_RDONLY | abi.O_CLOEXEC | (abi.O_DIRECT if spec.direct else 0)
        self.fd: int = kernel.open(spec.filename, flags)
        self.ring = -1
        self.rings: IoRings | None = None
        if spec.ioengine == "io_uring":
            self.ring = kernel.io_uring_setup(spec.iodepth)
            self.rings = kernel.io_uring_mmap(self.ring)
        self.issued = 0
        self.inflight = 0
        self.done_bytes = 0
        self.errors = 0
        self.seq = 0
        self.t0 = kernel.monotonic()
        self.pass_t0 = self.t0
        self.stalled = False  # a whole pass took no virtual time

    def more(self) -> bool:
        spec = self.spec
        if not spec.time_based:
            return self.issued < self.blocks
        now = self.kernel.monotonic()
        if spec.runtime and now - self.t0 >= spec.runtime:
            return False
        if self.issued and self.issued % self.blocks == 0:
            if now == self.pass_t0:
                self.stalled = True
            self.pass_t0 = now
        return not self.stalled

    def offset(self) -> int:
        if self.spec.rw == "randread":
            return int(self.kernel.random() * self.blocks) * self.spec.bs
        off = (self.seq % self.blocks) * self.spec.bs
        self.seq += 1
        return off

    def step(self) -> bool:
        """One batch: fill the queue, submit and wait for one completion; False when done."""
        rings = self.rings
        if rings is None:
            return self._step_sync()
        spec = self.spec
        to_submit = 0
        while self.inflight < spec.iodepth and self.more():
            flags = IOSQE_ASYNC if spec.force_async and self.issued % spec.force_async == 0 else 0
            sqe = Sqe(IORING_OP_READ, self.fd, self.offset(), spec.bs, user_data=self.issued,
                      flags=flags)  # fmt: skip
            rings.sq.append(sqe)
            self.issued += 1
            self.inflight += 1
            to_submit += 1
        if not self.inflight:
            return False
        self.kernel.io_uring_enter(self.ring, to_submit, 1, IORING_ENTER_GETEVENTS)
        while rings.cq:
            cqe = rings.cq.popleft()
            self.inflight -= 1
            if cqe.res < 0:
                self.errors += 1
            else:
                self.done_bytes += cqe.res
        return True

    def _step_sync(self) -> bool:
        if not self.more():
            return False
        data = self.kernel.pread(self.fd, self.spec.bs, self.offset())
        self.issued += 1
        self.done_bytes += len(data)
        return True

    def close(self) -> None:
        if self.ring >= 0:
            self.kernel.close(self.ring)
        self.kernel.close(self.fd)


def exec_cost(kernel: SimKernel) -> None:
    """fio's start-up until its job opens its file: the timing parameter ``fio.exec_time``
    of virtual time. Its address space then costs ``fio.exit_mm`` to tear down when it
    exits (``SimKernel.exit_mm_cost``)."""
    spend_cpu(kernel, param(FIO_EXEC_TIME))
    kernel.exit_mm_cost(param(FIO_EXIT_MM))


def fio_main(kernel: SimKernel, argv: Sequence[str], stdin: bytes | None = None) -> RunResult:
    """``fio --name=... --filename=... [options]``."""
    del stdin
    try:
        spec = parse_args(argv)
    except ValueError as e:
        return fail(EX_FAILURE, f"fio: {e}")
    exec_cost(kernel)
    try:
        size = layout(kernel, spec)
        jobs = [Job(kernel, spec, i, size) for i in range(spec.numjobs)]
    except OSError as e:
        return fail(EX_FAILURE, f"fio: {spec.filename}: {strerror(e.errno or errno.EIO)}")
    running = list(jobs)
    try:
        while running:
            for job in list(running):
                if not job.step():
                    running.remove(job)
            if spec.thinktime:
                kernel.sleep(spec.thinktime)
    except OSError as e:
        return fail(EX_FAILURE, f"fio: {spec.name}: {strerror(e.errno or errno.EIO)}")
    finally:
        for job in jobs:
            job.close()
    total = sum(j.done_bytes for j in jobs)
    errors = sum(j.errors for j in jobs)
    line = f"{spec.name}: (groupid=0, jobs={spec.numjobs}): err={errors}: READ: io={total}B"
    return ok(line + "\n") if not errors else fail(EX_FAILURE, line)


def register_fio(kernel: SimKernel) -> None:
    """Make ``fio`` runnable in a model kernel (``kernel.run``/``kernel.start``)."""
    kernel.register_program("fio", fio_main)


__all__ = ["JobSpec", "fio_main", "layout", "parse_args", "register_fio"]
