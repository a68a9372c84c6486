"""The guest's ``/init`` (busybox sh, PID 1).

It loads the 9p/virtio modules and the chosen ``loop.ko``, mounts the host's ``/`` read-only
(tag ``host``) and the job directory read-write (tag ``job``), loads the filesystem modules
from the host's copy of the guest kernel, lowers the hung-task timeout, prepares a chroot of the
host root (devtmpfs, proc, sysfs, tmpfs on /tmp and /run, with the host directories under
/tmp that the guest needs bound back read-only, the guest kernel's modules on
/lib/modules/<release>, the job directory on /run/loopdev-vm) and starts the agent there.

Then PID 1 is the watchdog: once a second it compares the uptime with the deadline the agent
writes before every trial (``/run/loopdev-vm.deadline``); past it, it asks the kernel for the
blocked tasks' stacks (sysrq ``w``, and ``l`` for the CPUs), saves the kernel log into the job
directory, writes ``hang`` as the status and powers off. When the agent exits, PID 1 saves the
kernel log, writes ``done`` and powers off. A kernel panic reboots at once (``panic=-1``),
which QEMU (``-no-reboot``) turns into its exit.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

#: where the job directory appears inside the chroot
JOB_DIR = "/run/loopdev-vm"
#: the agent's per-trial deadline (uptime seconds, 0: none), on the chroot's tmpfs /run
DEADLINE_FILE = "/run/loopdev-vm.deadline"

_BIND_MODULES = r"""if [ -d $H/lib/modules ]; then
  mount -t tmpfs -o mode=755 mods $H/lib/modules
  mkdir -p $H/lib/modules/{release}
  mount --bind $H{modules_dir} $H/lib/modules/{release}
fi
"""

_TEMPLATE = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
say() { echo "loopdev-vm: $*" > /dev/kmsg; }
fail() { say "init: $*"; echo "init-failed: $*" > /job/status 2>/dev/null; poweroff -f; }
for m in {boot_modules}; do insmod /mod/$m || fail "insmod $m"; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,{host_cache} host /host \
  || fail "mount host root"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 job /job || fail "mount job dir"
echo booting > /job/status
insmod /mod/loop.ko {loop_params} || fail "insmod loop.ko"
say "boot: 9p root mounted, loop.ko loaded"
for m in {host_modules}; do insmod /host$m 2>/dev/null; done
say "boot: filesystem modules loaded"
echo {hung_task} > /proc/sys/kernel/hung_task_timeout_secs
echo 1 > /proc/sys/kernel/sysrq
H=/host
{bind_modules}mount -t devtmpfs dev $H/dev
mount -t proc proc $H/proc
mount -t sysfs sys $H/sys
{keep_tmp_before}mount -t tmpfs -o mode=1777 tmp $H/tmp
{keep_tmp_after}mount -t tmpfs -o mode=755 run $H/run
mkdir -p $H{job_dir}
mount --bind /job $H{job_dir}
echo 0 > $H{deadline}
echo running > /job/status
say "boot: starting the agent"
cd $H
chroot $H /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  HOME=/root LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PYTHONPATH={pythonpath} \
  {python} -m loopdev.vm.agent {job_dir}/job.json {job_dir}/events.jsonl \
  > /job/agent.log 2>&1 &
agent=$!
while :; do
  state=$(cut -d' ' -f3 /proc/$agent/stat 2>/dev/null)
  if [ -z "$state" ] || [ "$state" = Z ]; then break; fi
  sleep 1
  now=$(cut -d. -f1 /proc/uptime)
  deadline=$(cat $H{deadline} 2>/dev/null)
  if [ -n "$deadline" ] && [ "$deadline" -gt 0 ] && [ "$now" -gt "$deadline" ]; then
    say "watchdog: the trial passed its deadline (uptime $now > $deadline)"
    echo w > /proc/sysrq-trigger
    echo l > /proc/sysrq-trigger
    sleep 1
    dmesg > /job/dmesg.txt
    echo hang > /job/status
    sync
    poweroff -f
  fi
done
wait $agent
echo $? > /job/agent-exit
dmesg > /job/dmesg.txt
echo done > /job/status
sync
poweroff -f
"""


@dataclass(frozen=True)
class InitParams:
    """What ``/init`` needs to know (host paths are absolute paths on the host's root)."""

    boot_modules: list[str]
    host_modules: list[Path]
    release: str
    modules_dir: Path | None  # the kernel's module tree (None: everything is built in)
    python: str
    pythonpath: Path
    hung_task_secs: int = 10
    host_cache: str = "cache=loose"
    loop_params: str = ""
    #: host directories under /tmp the guest must still see (read-only) once its own tmpfs
    #: covers /tmp: a project checked out there, its venv, a cache there
    keep_tmp: list[Path] = field(default_factory=list)


def render(p: InitParams) -> str:
    """The ``/init`` script for ``p``."""
    bind = "" if p.modules_dir is None else _BIND_MODULES
    before = after = ""
    if p.keep_tmp:  # the host's /tmp stays reachable at /hosttmp for the binds below
        before = "mkdir -p /hosttmp && mount --bind $H/tmp /hosttmp\n"
        for d in p.keep_tmp:
            rel = shlex.quote(str(d.relative_to("/tmp")))
            after += (f"if [ -d /hosttmp/{rel} ]; then mkdir -p $H/tmp/{rel}; "
                      f"else touch $H/tmp/{rel}; fi; mount --bind /hosttmp/{rel} $H/tmp/{rel}\n")
    return (
        _TEMPLATE.replace("{bind_modules}", bind)
        .replace("{keep_tmp_before}", before)
        .replace("{keep_tmp_after}", after)
        .replace("{boot_modules}", " ".join(shlex.quote(m) for m in p.boot_modules))
        .replace("{host_modules}", " ".join(shlex.quote(str(m)) for m in p.host_modules))
        .replace("{release}", shlex.quote(p.release))
        .replace("{modules_dir}", shlex.quote(str(p.modules_dir)))
        .replace("{python}", shlex.quote(p.python))
        .replace("{pythonpath}", shlex.quote(str(p.pythonpath)))
        .replace("{hung_task}", str(int(p.hung_task_secs)))
        .replace("{host_cache}", p.host_cache)
        .replace("{loop_params}", p.loop_params)
        .replace("{job_dir}", JOB_DIR)
        .replace("{deadline}", DEADLINE_FILE)
    )
