"""Reading a guest's kernel log: the blocked tasks sysrq ``w`` and the hung-task detector
print, and the line that says why a kernel panicked."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TS = re.compile(r"^\[\s*\d+\.\d+\]\s?")
_TASK = re.compile(r"task:(\S+)\s+state:(\w)")
_HUNG = re.compile(r"INFO: task (\S+):\d+ blocked for more than")
#: frames that only say "this task sleeps"
_SCHED = re.compile(
    r"^(__schedule|schedule\w*|io_schedule\w*|__mutex_lock\w*|mutex_lock\w*|"
    r"rwsem_down\w*|down_\w+|wait_for_completion\w*|__wait_for_common|__flush_work\w*|"
    r"__wait_\w+|wait_\w+|\? \w+|<TASK>|</TASK>|ret_from_fork\w*|entry_SYSCALL\w*|"
    r"do_syscall_64|__x64_sys_\w+|__do_sys_\w+|__se_sys_\w+|do_group_exit|kthread)\b"
)


@dataclass
class BlockedTask:
    """One task in state D and its call trace (innermost first)."""

    name: str
    frames: list[str] = field(default_factory=list)

    def summary(self, depth: int = 4) -> str:
        """``name: f1 <- f2 <- ...``, scheduler frames left out."""
        useful = [f.split("+", 1)[0] + (" [loop]" if "[loop]" in f else "")
                  for f in self.frames if not _SCHED.match(f)]  # fmt: skip
        return f"{self.name}: " + " <- ".join(useful[:depth]) if useful else self.name

    def format(self) -> str:
        """The task and its whole call trace, one frame a line."""
        return "\n".join([f"{self.name} (state D):", *(f"  {f}" for f in self.frames)])


def blocked_tasks(log: str) -> list[BlockedTask]:
    """Tasks reported in state D (sysrq-w or hung-task reports), each once, in order."""
    tasks: dict[str, BlockedTask] = {}
    current: BlockedTask | None = None
    for raw in log.splitlines():
        line = _TS.sub("", raw).strip()
        m = _TASK.search(line)
        if m:
            current = None
            if m.group(2) == "D":
                current = BlockedTask(m.group(1))
            continue
        if current is None:
            continue
        if line == "</TASK>" or not line:
            if current.frames and current.name + str(current.frames[:3]) not in tasks:
                tasks[current.name + str(current.frames[:3])] = current
            current = None
        elif line not in ("Call Trace:", "<TASK>"):
            current.frames.append(line)
    return list(tasks.values())


def hung_task_names(log: str) -> list[str]:
    """Tasks the hung-task detector reported (``INFO: task X:PID blocked for more than``)."""
    return list(dict.fromkeys(m.group(1) for m in _HUNG.finditer(log)))


def panic_reason(log: str) -> str:
    """The first BUG/Oops/panic line of the log, without its timestamp ('' if none)."""
    for needle in ("BUG:", "kernel BUG at", "Oops:", "general protection fault",
                   "Kernel panic - not syncing"):  # fmt: skip
        for raw in log.splitlines():
            line = _TS.sub("", raw).strip()
            i = line.find(needle)
            if i >= 0:
                return line[i:]
    return ""


def warnings(log: str) -> list[str]:
    """``WARNING:`` lines (a WARN_ON fired), without timestamps."""
    return [_TS.sub("", raw).strip() for raw in log.splitlines() if "WARNING:" in raw]
