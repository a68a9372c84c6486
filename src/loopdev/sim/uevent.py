"""Kernel uevents: ``kobject_uevent`` broadcast to every open NETLINK_KOBJECT_UEVENT socket."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from loopdev.kernel import Uevent
from loopdev.sim.sched import emit, kfunc, tracing
from loopdev.sim.sync import WaitQueue, wait_event, wake_up
from loopdev.sim.vfs import File, FileOperations, Inode


class UeventSocket:
    """One listening socket: its queue of undelivered events."""

    __slots__ = ("queue", "wq")

    def __init__(self, n: int) -> None:
        self.queue: deque[Uevent] = deque()
        self.wq = WaitQueue(f"uevent_sock{n}")


class UeventBus(FileOperations):
    """The kernel's uevent broadcast; also the file operations of its sockets."""

    def __init__(self) -> None:
        self.sockets: list[UeventSocket] = []
        self.seqnum = 0
        self._n = 0

    def open_socket(self) -> UeventSocket:
        self._n += 1
        sock = UeventSocket(self._n)
        self.sockets.append(sock)
        return sock

    def release(self, inode: Inode, file: File) -> None:
        sock = file.private_data
        if sock in self.sockets:
            self.sockets.remove(sock)

    @kfunc
    def kobject_uevent_env(self, action: str, devpath: str, env: Mapping[str, str]) -> None:
        """Send one event to every socket."""
        self.seqnum += 1
        full = {"ACTION": action, "DEVPATH": devpath, **env, "SEQNUM": str(self.seqnum)}
        ev = Uevent(action=action, devpath=devpath, env=full)
        if tracing():
            emit("uevent", action, " ".join(f"{k}={v}" for k, v in full.items() if k != "ACTION"))
        for sock in self.sockets:
            sock.queue.append(ev)
            if sock.wq.waiters:
                wake_up(sock.wq)

    @staticmethod
    def recv(sock: UeventSocket, timeout: float | None) -> Uevent | None:
        """Block until an event arrives (None after `timeout` virtual seconds)."""
        if not sock.queue:
            if timeout is not None and timeout <= 0:
                return None
            wait_event(sock.wq, lambda: bool(sock.queue), timeout, killable=True)
        return sock.queue.popleft() if sock.queue else None


__all__ = ["UeventBus", "UeventSocket"]
