"""The lab's real cells in QEMU guests: for every model variant that can be a loop module (and
for every patch a user brings), each scenario a guest can run, beside the model's cell.

Debian 12's 6.1 kernel boots with the variant's ``loop.ko`` (:mod:`loopdev.vm`); resume-chain
runs on the lockdep kernel instead, when it is built, so that its verdict is lockdep's (and
never on both kernels into the same cells). Trials per cell are budgeted by what a trial costs
in a guest; a guest runs its cells in :data:`CELL_ORDER` and stops at the lab's deadline, and
whatever it left out counts as cut.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loopdev.lab.outcome import CellKey, CellResult
from loopdev.lab.scenarios import by_name
from loopdev.vm.guest import GuestOptions
from loopdev.vm.run import GUEST_SCENARIOS, OnEvent, Request, plan_cells, run_requests
from loopdev.vm.userspaces import USERSPACES


@dataclass(frozen=True)
class Cost:
    """What a real cell of a scenario costs in a guest (two guests at once under TCG; the
    figures are docs/lab.md's), and the trials it gets by default."""

    trials: int
    trial_seconds: float
    prepare_seconds: float  # its prepare and cleanup


#: per scenario: trials by cost; resume-chain's verdict is lockdep's, which reports once per
#: boot, so two trials say all there is
COSTS: dict[str, Cost] = {
    "mount-loop+udev": Cost(6, 0.2, 0.7),
    "mount-loop": Cost(10, 0.05, 0.2),
    "nested-umount": Cost(6, 0.15, 1.2),
    "detach-open": Cost(8, 0.15, 0.2),
    "detach-open[held]": Cost(4, 0.1, 0.2),
    "detach-open[partscan]": Cost(8, 0.4, 1.0),
    "nested-umount+udev": Cost(6, 0.25, 1.6),
    "parallel-attach": Cost(3, 0.3, 1.0),
    "iouring-kill": Cost(2, 1.4, 0.4),
    "resume-chain": Cost(2, 0.25, 0.5),
    "resume-chain[clr-fd]": Cost(2, 0.25, 0.5),
}
#: seconds from starting QEMU to the agent's first trial and from its last to QEMU's exit
BOOT_SECONDS = {"debian": 16.0, "lockdep": 9.0}
#: the order a guest runs its cells in: what the claims read and cheap cells first, so that
#: the deadline cuts the costly ones
CELL_ORDER = (
    "mount-loop+udev", "mount-loop", "nested-umount", "detach-open", "nested-umount+udev",
    "parallel-attach", "iouring-kill", "resume-chain", "resume-chain[clr-fd]", "detach-open[held]",
    "detach-open[partscan]",
)  # fmt: skip
#: scenarios that run on the lockdep kernel (when it is built; else nowhere)
LOCKDEP_SCENARIOS = frozenset({"resume-chain", "resume-chain[clr-fd]"})
#: seconds the guests may take in a default lab run (two at once)
DEFAULT_TIME_LIMIT = 230.0
#: a guest's boot in the progress bar's units (trials): it takes as long as ~10-50 trials
BOOT_UNITS = 10


@dataclass
class RealColumn:
    """One real column as the reports show it: what it ran, on which kernels, in which
    guests, or why it could not run."""

    column: str
    variant: str | None  # the model variant it stands for; None: a user's patch
    origin: str  # the variant's upstream change or the patch file
    unavailable: str = ""
    kernels: list[str] = field(default_factory=list)
    guests: list[dict[str, object]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "column": self.column, "variant": self.variant, "origin": self.origin,
            "unavailable": self.unavailable, "kernels": self.kernels, "guests": self.guests,
            "notes": self.notes,
        }  # fmt: skip


@dataclass
class VmRun:
    """What the guests produced for the lab."""

    cells: dict[CellKey, CellResult] = field(default_factory=dict)
    columns: dict[str, RealColumn] = field(default_factory=dict)
    distorted: dict[CellKey, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    guests: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class UserPatch:
    """A user's patch to the 6.1 loop.c, run as one more real column."""

    path: Path
    label: str


def unavailable() -> str | None:
    """Why the guests cannot run here (None: they can): root, the packages, the guest
    kernel in the cache. Nothing is downloaded or built to find out."""
    if os.geteuid() != 0:
        return "needs root (the guests share the host's / read-only over 9p)"
    from loopdev.vm import check, debian

    for item in check.environment():
        if item.required and not item.ok:
            return f"{item.name}: {item.detail} (scripts/setup.sh installs what guests need)"
    try:
        kernel = debian.guest_kernel()
    except debian.VmSetupError as e:
        return str(e)
    if not debian.image_ready(kernel):
        return (f"the guest kernel {kernel.release} is not in the cache (scripts/setup.sh or "
                "loopdev vm check fetch it)")  # fmt: skip
    return None


def lockdep_kernel_built() -> bool:
    from loopdev.vm import kbuild

    return kbuild.find_lockdep_kernel() is not None


def guest_scenarios(scenarios: Sequence[str]) -> list[str]:
    """The scenarios of a lab run that guests run, in :data:`CELL_ORDER`."""
    return [s for s in CELL_ORDER if s in scenarios and s in GUEST_SCENARIOS]


def guest_rows(userspaces: Sequence[str]) -> list[str]:
    """The lab rows a guest can run (util-linux 2.37 and 2.38 as in-process programs, the
    library)."""
    return [u for u in userspaces if u in USERSPACES]


def trials_for(scenario: str, scale: float) -> int:
    cost = COSTS.get(scenario)
    return max(1, round((cost.trials if cost else 5) * scale))


def estimate(request: Request) -> float:
    """Seconds a request's guest should take (two guests at once)."""
    total = BOOT_SECONDS.get(request.options.kernel, 16.0)
    for c in request.cells:
        cost = COSTS.get(c.scenario, Cost(5, 0.5, 1.0))
        total += cost.prepare_seconds + c.trials * cost.trial_seconds
    return total





def plan_requests(
    variants: Sequence[str],
    scenarios: Sequence[str],
    userspaces: Sequence[str],
    *,
    scale: float = 1.0,
    patches: Sequence[UserPatch] = (),
    lockdep: bool = True,
) -> tuple[list[Request], list[str]]:
    """The guests' requests (:class:`loopdev.vm.run.Request`) for the lab's real columns, and
    notes on what was left out. The lockdep kernel's short guests come first, Debian's
    after them; each gets its share of the time left when it starts."""
    notes: list[str] = []
    names = guest_scenarios(scenarios)
    rows = guest_rows(userspaces)
    trials = {s: trials_for(s, scale) for s in names}
    debian_s = [s for s in names if s not in LOCKDEP_SCENARIOS]
    lockdep_s = [s for s in names if s in LOCKDEP_SCENARIOS]
    if lockdep_s and not lockdep:
        notes.append(f"{', '.join(lockdep_s)}: no real cells: the lockdep kernel is not built "
                     "(loopdev vm build-kernel --lockdep, about 10 CPU-minutes, once)")  # fmt: skip
        lockdep_s = []
    columns: list[tuple[str | Path, str | None]] = [(v, None) for v in variants]
    columns += [(p.path, p.label) for p in patches]
    requests: list[Request] = []
    # lockdep reports once per boot: each lockdep scenario gets guests of its own; they are
    # short and first, so that the time limit never leaves them out
    groups = [("lockdep", [s]) for s in lockdep_s] + [("debian", debian_s)]
    for kernel, chosen in groups:
        cells = plan_cells(chosen, rows, trials) if chosen and rows else []
        cells = [c for c in cells if _runs_with(c.scenario, c.userspace)]
        if not cells:
            continue
        for v, label in columns:
            name = label or str(v)
            tag = name if kernel == "debian" else f"{name} ({kernel}: {chosen[0]})"
            req = Request(v, cells, label=label, options=GuestOptions(kernel=kernel), tag=tag)
            req.estimate = estimate(req)
            requests.append(req)
    return requests, notes


def has_module(request: Request) -> bool:
    """Whether a request's design can be a module (a user's patch is assumed to build)."""
    from loopdev.vm.variants import VARIANTS

    v = VARIANTS.get(str(request.variant_or_patch))
    return v is None or v.buildable


def _runs_with(scenario: str, userspace: str) -> bool:
    only = getattr(by_name(scenario), "userspaces", None)
    return only is None or userspace in only


def run(
    requests: Sequence[Request],
    *,
    deadline: float | None,
    parallel: int = 2,
    on_event: OnEvent | None = None,
) -> VmRun:
    """Run the requests' guests (two at once by default) and fold them into a :class:`VmRun`:
    the cells keyed with backend ``vm``, each real column's guests and notes, the timing
    distortion of every cell."""
    t0 = time.monotonic()
    results = run_requests(requests, parallel=parallel, deadline=deadline, on_event=on_event)
    out = VmRun()
    for r in results:
        col = out.columns.setdefault(r.column, RealColumn(r.column, r.variant, r.origin))
        if r.unavailable and not col.unavailable:
            col.unavailable = r.unavailable
        if r.kernel not in col.kernels and not r.unavailable:
            col.kernels.append(r.kernel)
        col.guests.extend(g.to_json() for g in r.guests)
        col.notes.extend(n for n in r.notes if n not in col.notes)
        out.guests += len(r.guests)
        for key, cell in r.cells.items():
            out.cells[key] = cell
            if cell.timing_distorted:
                out.distorted[key] = cell.timing_distorted
    out.seconds = time.monotonic() - t0
    return out


def build_patch(patch: UserPatch, *, lockdep: bool) -> list[float]:
    """Build a user's patch for the Debian guest kernel (and the lockdep kernel's tree when
    ``lockdep``) before the lab starts, so that a patch that does not apply or a module that
    does not build fails at once. Raises PatchError or ModuleBuildError with the hunk or the
    compiler's errors (nothing is cached then); returns the build seconds."""
    from loopdev.vm import build, kernels
    from loopdev.vm.variants import module_source

    src = module_source(patch.path, patch.label)
    names = ["debian", "lockdep"] if lockdep else ["debian"]
    return [build.build_module(src, kernels.build_target(n)).seconds for n in names]
