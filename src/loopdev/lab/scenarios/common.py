"""Helpers scenarios share: where a directory is mounted from, whether a loop device is still
bound, timed waits, and cleanup that never leaves anything behind (all through the port)."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Callable, Iterator, Mapping

from loopdev import abi
from loopdev.errors import LoopdevError
from loopdev.kernel import Process
from loopdev.lab.scenarios.base import Env, ScenarioFailure, Unsupported, errname


def _unescape(raw: str) -> str:
    return raw.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace(
        "\\134", "\\"
    )


def mounts(env: Env) -> list[tuple[str, str]]:
    """(source, mount point) of every mount, in mountinfo's order (none if it is unreadable)."""
    try:
        raw = env.kernel.readfile("/proc/self/mountinfo").decode("utf-8", "replace")
    except OSError:
        return []
    found: list[tuple[str, str]] = []
    for line in raw.splitlines():
        left, _, right = line.partition(" - ")
        parts, rparts = left.split(), right.split()
        if len(parts) > 4 and len(rparts) > 1:
            found.append((_unescape(rparts[1]), _unescape(parts[4])))
    return found


def mount_source(env: Env, target: str) -> str | None:
    """The source device of the mount on ``target`` (the last one), from mountinfo."""
    table = mounts(env)
    if not table:
        return None
    want = env.kernel.realpath(target)
    found = None
    for source, mountpoint in table:
        if mountpoint == want:
            found = source
    return found


def is_mounted(env: Env, target: str) -> bool:
    return mount_source(env, target) is not None


def loop_bound(env: Env, device: str) -> bool:
    """True while ``/dev/loopN`` is bound (its sysfs ``loop/`` directory exists)."""
    name = device.rsplit("/", 1)[-1]
    try:
        env.kernel.stat(f"/sys/block/{name}/loop/backing_file")
        return True
    except OSError:
        return False


def wait_unbound(env: Env, device: str, timeout: float) -> float | None:
    """Seconds until ``device`` is unbound, or None if it is still bound after ``timeout``."""
    k = env.kernel
    t0 = k.monotonic()
    delay = 0.0002
    while loop_bound(env, device):
        if k.monotonic() - t0 >= timeout:
            return None
        k.sleep(delay)
        delay = min(delay * 1.5, 0.005)
    return k.monotonic() - t0


def wait_until(env: Env, done: Callable[[], bool], timeout: float, interval: float) -> bool:
    """Poll ``done`` every ``interval`` seconds until it returns True (then True) or
    ``timeout`` seconds have passed (then False)."""
    k = env.kernel
    t0 = k.monotonic()
    while not done():
        if k.monotonic() - t0 >= timeout:
            return False
        k.sleep(interval)
    return True


def timed_umount(env: Env, target: str, step: str, *, wait_detach: bool = False) -> None:
    """Unmount through the userspace; on the real kernel record the umount latency and, with
    ``wait_detach`` (only as a trial's last step: waiting changes what follows), the delay
    until the loop device behind it is really detached."""
    src = mount_source(env, target) if env.measure_latency and wait_detach else None
    k = env.kernel
    t0 = k.monotonic()
    env.userspace.umount(target, step=step)
    t1 = k.monotonic()
    if env.measure_latency:
        env.measure("umount_latency", t1 - t0)
        if src and src.startswith("/dev/loop"):
            delay = wait_unbound(env, src, 2.0)
            if delay is not None:
                env.measure("detach_delay", delay)


@contextlib.contextmanager
def library_step(step: str) -> Iterator[None]:
    """Calls of the loopdev library as one step: what they raise becomes the ScenarioFailure
    a user of the library sees, the exception's kind (with the errno behind it) and its first
    line."""
    try:
        yield
    except (LoopdevError, OSError) as e:
        raise _library_failure(step, e) from e


def _library_failure(step: str, e: LoopdevError | OSError) -> ScenarioFailure:
    kind = type(e).__name__
    cause = e.__cause__ or e.__context__
    if isinstance(e, OSError):
        kind = errname(e)
    elif isinstance(cause, OSError) and cause.errno:
        kind = f"{kind}/{errname(cause)}"
    msg = str(e).splitlines()[0] if str(e) else kind
    return ScenarioFailure(step, kind, msg)


def ensure_dir(env: Env, path: str) -> None:
    try:
        env.kernel.mkdir(path)
    except OSError as e:
        if e.errno == errno.EEXIST:
            return
        if e.errno in (errno.ENOSYS, errno.EOPNOTSUPP):
            raise Unsupported(f"mkdir {path}: not modelled") from e
        raise


def force_umount(env: Env, target: str, timeout: float = 3.0) -> None:
    """Unmount whatever is on ``target`` (retrying while busy, lazily as a last resort)."""
    k = env.kernel
    t0 = k.monotonic()
    while is_mounted(env, target):
        try:
            k.umount2(target, 0)
            continue
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.ENOENT):
                return
            if k.monotonic() - t0 > timeout:
                with contextlib.suppress(OSError):
                    k.umount2(target, abi.MNT_DETACH)
                return
        k.sleep(0.01)


def detach_backed_by(env: Env, image: str) -> None:
    """Detach every loop device whose backing file is ``image`` (ours, by path under the
    lab's private work directory), verified by LOOP_GET_STATUS64 on an open fd."""
    k = env.kernel
    try:
        names = [n for n in k.listdir("/sys/block") if n.startswith("loop")]
    except OSError:
        return
    want = k.realpath(image) if image.startswith("/") else image
    for name in names:
        try:
            backing = k.readfile(f"/sys/block/{name}/loop/backing_file").decode().strip()
        except OSError:
            continue
        if backing.removesuffix(" (deleted)") != want:
            continue
        try:
            fd = k.open(f"/dev/{name}", abi.O_RDONLY)
        except OSError:
            continue
        try:
            buf = abi.LoopInfo64.buffer()
            k.ioctl(fd, abi.LOOP_GET_STATUS64, buf)
            info = abi.LoopInfo64.unpack(buf)
            st = k.stat(want)
            if (info.lo_device, info.lo_inode) == (st.dev, st.ino):
                k.ioctl(fd, abi.LOOP_CLR_FD)
        except OSError:
            pass
        finally:
            k.close(fd)
        wait_unbound(env, f"/dev/{name}", 2.0)


def remove(env: Env, *paths: str) -> None:
    """Best-effort removal of files and (empty) directories we created."""
    for p in paths:
        for fn in (env.kernel.unlink, env.kernel.rmdir):
            try:
                fn(p)
                break
            except OSError:
                continue


class StartGate:
    """Children released together, after every one of them has started: each says it is
    ready (a file) and waits for a shared flock on the gate file, which the parent holds
    exclusively until every child is ready. Made of port calls, so the model and a real
    kernel run the same code; on a real kernel (the more so under emulation, where a fork
    costs tens of milliseconds) the race then starts when the last child has started, not
    when the first one has."""

    def __init__(self, env: Env, names: list[str]) -> None:
        self.env, self.names = env, names
        self.path = env.path(".gate")
        k = env.kernel
        self.fd = k.open(self.path, abi.O_RDWR | abi.O_CREAT | abi.O_TRUNC, 0o600)
        k.flock(self.fd, abi.LOCK_EX)
        remove(self.env, *(self._ready(n) for n in names))

    def _ready(self, name: str) -> str:
        return self.env.path(f".{name}.ready")

    def wrap(self, name: str, fn: Callable[[], None]) -> Callable[[], None]:
        """``fn`` run once the gate opens."""

        def body() -> None:
            k = self.env.kernel
            fd = k.open(self.path, abi.O_RDONLY)  # before it is ready: the parent removes it
            try:
                write_file(self.env, self._ready(name), "")
                k.flock(fd, abi.LOCK_SH)
            finally:
                k.close(fd)
            fn()

        return body

    def open(self, timeout: float, procs: list[Process]) -> None:
        """Wait (bounded) until every child is ready, then release them all at once; a child
        that exits before it got ready (it failed at its start) ends the wait too."""
        k = self.env.kernel

        def ready_or_failed() -> bool:
            return all(exists(self.env, self._ready(n)) for n in self.names) or any(
                p.wait(0) is not None for p in procs
            )

        wait_until(self.env, ready_or_failed, timeout, 0.0005)
        k.flock(self.fd, abi.LOCK_UN)
        k.close(self.fd)
        remove(self.env, self.path, *(self._ready(n) for n in self.names))


def exists(env: Env, path: str) -> bool:
    """Whether ``path`` exists (stat succeeds)."""
    try:
        env.kernel.stat(path)
        return True
    except OSError:
        return False


def run_children(
    env: Env,
    children: Mapping[str, Callable[[], None]],
    timeout: float = 20.0,
    *,
    together: bool = False,
) -> list[ScenarioFailure]:
    """Run each function in its own process/task; collect the user-visible failures they
    report (through a small result file, since a process only returns an exit status).
    ``together``: the functions start only when every process has started (:class:`StartGate`)
    rather than each as soon as its own process is up."""
    k = env.kernel
    gate = StartGate(env, list(children)) if together else None
    procs = []
    for name, fn in children.items():
        result = env.path(f".{name}.result")
        remove(env, result)
        body = gate.wrap(name, fn) if gate else fn
        procs.append((name, result, k.spawn(_reporting(env, body, result), name)))
    if gate:
        gate.open(timeout, [p for _, _, p in procs])
    failures: list[ScenarioFailure] = []
    for name, result, proc in procs:
        status = proc.wait(timeout)
        if status is None:
            proc.kill(9)
            proc.wait(5.0)
            failures.append(ScenarioFailure(name, "hang", f"{name} did not finish in {timeout}s"))
            continue
        try:
            raw = k.readfile(result).decode("utf-8", "replace")
        except OSError:
            raw = ""
        remove(env, result)
        if raw.startswith("unsupported\t"):
            raise Unsupported(raw.split("\t", 1)[1])
        if raw:
            step, kind, message = [*raw.split("\t", 2), "", ""][:3]
            failures.append(ScenarioFailure(step, kind, message))
        elif status != 0:
            failures.append(ScenarioFailure(name, f"exit {status}", f"{name} exited with {status}"))
    return failures


def _reporting(env: Env, fn: Callable[[], None], result: str) -> Callable[[], None]:
    """The child's body: what it saw goes to the result file, which the parent reads (a
    process only returns an exit status; raising further would be a crash, not a verdict)."""

    def body() -> None:
        try:
            fn()
        except ScenarioFailure as f:
            write_file(env, result, f"{f.step}\t{f.kind}\t{f.message}")
        except Unsupported as u:
            write_file(env, result, f"unsupported\t{u}")

    return body


def write_file(env: Env, path: str, text: str) -> None:
    """Create (or truncate) ``path`` holding ``text``."""
    k = env.kernel
    fd = k.open(path, abi.O_WRONLY | abi.O_CREAT | abi.O_TRUNC, 0o600)
    try:
        k.write(fd, text.encode())
    finally:
        k.close(fd)
