"""loopdev vm: real loop-driver designs in virtual machines.

  loopdev vm check          what the guests need, what is installed and cached, and why not
  loopdev vm variants       the designs, the upstream commit or mail each module ports
  loopdev vm build [VARIANT...] [--patch FILE [--label NAME]]
                            build loop.ko modules
  loopdev vm build-kernel --lockdep
                            build the lockdep guest kernel (once per machine)
  loopdev vm run --variant V --scenario S [--userspace U] [--trials N]
                            run lab scenarios on real modules in guests, with a progress bar;
                            --json for machines; --kernel lockdep boots the lockdep kernel,
                            whose reports become trial outcomes
  loopdev vm script --variant V FILE [ARG...]
                            run your own Python reproducer in a guest (the host's root is the
                            guest's, read-only; /tmp is the guest's own)
  loopdev vm test [--variant V] TESTFILE...
                            run real-kernel test modules (pytest) in a guest, e.g. the
                            partition tests this host's kernel cannot run

Guests boot Debian 12's 6.1 kernel (--kernel debian, the default) or the lockdep kernel
(--kernel lockdep) under QEMU; each variant's loop.ko is built against the kernel it runs
under. docs/vm.md and docs/lockdep-kernel.md say more; loopdev lab runs every design in
guests beside the model (docs/lab.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from loopdev.lab.scenarios import by_name
from loopdev.vm import check, debian, guest_tests, kbuild, kernels, variants
from loopdev.vm.build import ModuleBuildError, PatchError, build_module
from loopdev.vm.guest import GuestOptions, run_guest
from loopdev.vm.lockdep_report import example_reports
from loopdev.vm.protocol import Event, Job
from loopdev.vm.qemu import Machine
from loopdev.vm.run import GUEST_SCENARIOS, VariantResult, plan_cells, run_variants
from loopdev.vm.userspaces import USERSPACES, timing_distortion

DEFAULT_USERSPACES = ("util-linux-2.37", "util-linux-2.38", "loopdev")


def add_parser(subparsers: Any) -> None:
    """Register ``vm`` with the main parser's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "vm",
        help="run loop-driver designs as real kernel code in virtual machines",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  loopdev vm check\n"
        "  loopdev vm run --variant v5.17-rc1 --scenario nested-umount --trials 10\n"
        "  loopdev vm run --patch my-fix.patch --label my-fix --scenario detach-open --json\n"
        "  loopdev vm script --variant v5.19 /var/tmp/repro.py\n"
        "  loopdev vm build-kernel --lockdep\n"
        "  loopdev vm run --kernel lockdep --variant v5.16 --variant v6.11 --scenario resume-chain\n"
        "  loopdev vm test tests/kernel/test_partitions.py",
    )
    sub = p.add_subparsers(dest="vm_action", required=True)
    sub.add_parser("check", help="what the guests need and what is here")
    sub.add_parser("variants", help="the designs and what each module ports")
    b = sub.add_parser("build", help="build loop.ko modules (cached)")
    b.add_argument("variant", nargs="*", help="variants (default: every buildable one)")
    _patch_args(b)
    b.add_argument("--force", action="store_true", help="rebuild even if cached")
    _kernel_arg(b)
    _build_kernel_parser(sub)
    r = sub.add_parser("run", help="run lab scenarios on real modules in guests")
    _module_args(r)
    r.add_argument("--scenario", action="append",
                   help="repeatable; default: nested-umount (" + ", ".join(GUEST_SCENARIOS) + ")")  # fmt: skip
    r.add_argument("--userspace", action="append",
                   help="repeatable; default: " + ", ".join(DEFAULT_USERSPACES) + " (also: "
                   + ", ".join(u for u in USERSPACES if u not in DEFAULT_USERSPACES) + ")")  # fmt: skip
    r.add_argument("--trials", type=int, default=10, help="trials per cell (default 10)")
    r.add_argument("--parallel", type=int, default=2, help="guests at once (default 2)")
    r.add_argument("--guests-per-variant", type=int, default=1,
                   help="split a variant's cells over this many guests (default 1)")  # fmt: skip
    r.add_argument("--no-udevd", action="store_true", help="never start systemd-udevd")
    r.add_argument("--json", action="store_true", help="print JSON")
    r.add_argument("--logs", action="store_true", help="with --json: the guests' console/dmesg")
    r.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: on a terminal)")  # fmt: skip
    _machine_args(r)
    s = sub.add_parser("script", help="run a Python file in a guest")
    _module_args(s)
    s.add_argument("file", help="a Python file on the host (the guest sees the host's root)")
    s.add_argument("args", nargs="*", help="its arguments")
    _machine_args(s)
    t = sub.add_parser(
        "test", help="run real-kernel test modules (pytest) in a guest",
        description="Run pytest on test files of the host inside one guest, as root, with its "
        "own loop devices: for real-kernel tests this machine's kernel cannot run (the "
        "partition tests: Debian's 6.1 parses DOS partition tables). Exit status 0 when every "
        "test passed or skipped for an expected reason (--expect-skip).",
        epilog="example:\n  loopdev vm test tests/kernel/test_partitions.py\n"
        "  loopdev vm test --variant v6.11 --pytest-arg=-kstale tests/kernel/test_partitions.py",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    t.add_argument("paths", nargs="+", metavar="TESTFILE", help="test files or directories")
    t.add_argument("--variant", default=None,
                   help=f"the loop module (default {guest_tests.STOCK}: Debian's loop.c)")  # fmt: skip
    t.add_argument("--patch", metavar="FILE", help="a patch (-p1) to Debian's 6.1 loop.c instead")
    t.add_argument("--expect-skip", action="append", default=[], metavar="REGEX",
                   help="a skip whose reason matches this is expected (repeatable)")  # fmt: skip
    t.add_argument("--pytest-arg", action="append", default=[], metavar="ARG",
                   help="passed to pytest (repeatable), e.g. --pytest-arg=-k --pytest-arg=stale")  # fmt: skip
    t.add_argument("--output", action="store_true", help="print pytest's own output too")
    _machine_args(t, timeout=900.0, what="the whole pytest run may take")


def _build_kernel_parser(sub: Any) -> None:
    k = sub.add_parser(
        "build-kernel",
        help="build the lockdep guest kernel (once per machine, cached)",
        description="Build Debian's linux-source-6.1 with lockdep (CONFIG_PROVE_LOCKING) for "
        "the guests: tinyconfig plus loopdev's config fragment (virtio, 9p, ext4, xfs, "
        "squashfs, iso9660, io_uring, hibernation for /sys/power/resume, loop as a module), "
        "built out of tree into the cache ($LOOPDEV_CACHE, else ~/.cache/loopdev) with a "
        "progress line. It takes about 10 CPU-minutes (9-18 minutes of wall clock on a shared "
        "2-core machine); later calls find it in the cache at once. An interrupted build "
        "resumes where it stopped. Prints the build directory: arch/x86/boot/bzImage boots, "
        "Module.symvers is what loop.ko modules build against.",
        epilog="needs the Debian packages linux-source-6.1 gcc make flex bison bc libelf-dev "
        "libssl-dev cpio (scripts/setup.sh installs them)\n\nthen:\n"
        "  loopdev vm run --kernel lockdep --variant v5.16 --scenario resume-chain",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    k.add_argument("--lockdep", action="store_true", required=True,
                   help="the lockdep kernel (the only kind there is; required, so that the "
                   "command says what it builds)")  # fmt: skip
    k.add_argument("--clean", action="store_true",
                   help="throw away a cached or partial build and start over")  # fmt: skip
    k.add_argument("--jobs", "-j", type=int, default=kbuild.JOBS,
                   help=f"parallel make jobs, niced (default {kbuild.JOBS})")  # fmt: skip
    k.add_argument("--quiet", "-q", action="store_true", help="no progress line")


def _kernel_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kernel", choices=tuple(kernels.KERNELS), default=kernels.DEFAULT,
                   help="the guest kernel: " + "; ".join(f"{k}: {v}" for k, v in
                                                         kernels.KERNELS.items())
                   + f" (default {kernels.DEFAULT})")  # fmt: skip


def _patch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--patch", metavar="FILE", help="a patch (-p1) to Debian's 6.1 loop.c")
    p.add_argument("--label", help="the column name for --patch (default: its file name)")


def _module_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variant", action="append",
                   help="repeatable: " + ", ".join(variants.VARIANTS))  # fmt: skip
    _patch_args(p)


def _machine_args(
    p: argparse.ArgumentParser, timeout: float = 60.0, what: str = "a trial may take"
) -> None:
    _kernel_arg(p)
    p.add_argument("--vcpus", type=int, default=1, help="vCPUs per guest (default 1)")
    p.add_argument("--memory", type=int, default=1024, help="MiB per guest (default 1024)")
    p.add_argument("--accel", choices=("tcg", "kvm"), default="tcg",
                   help="tcg emulation (default) or kvm")  # fmt: skip
    p.add_argument("--trial-timeout", type=float, default=timeout,
                   help=f"seconds {what} before the guest is declared hung (default "
                   f"{timeout:g})")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Entry point of ``loopdev vm``."""
    action: str = args.vm_action
    try:
        if action == "check":
            return _check()
        if action == "variants":
            return _variants()
        if action == "build":
            return _build(args)
        if action == "build-kernel":
            return _build_kernel(args)
        if action == "run":
            return _run(args)
        if action == "test":
            return _test(args)
        return _script(args)
    except (debian.VmSetupError, PatchError, ModuleBuildError, KeyError, ValueError) as e:
        print(f"loopdev: vm {action}: {str(e).strip(chr(39))}", file=sys.stderr)
        return 2


def _check() -> int:
    ok, items = check.ready()
    for item in items:
        mark = "ok  " if item.ok else ("MISS" if item.required else "--  ")
        if item.detail.startswith("n/a"):
            mark = "n/a "
        print(f"{mark} {item.name:<25} {item.detail.removeprefix('n/a: ')}")
    print("guests can run" if ok else "guests cannot run: see MISS above (scripts/setup.sh)")
    return 0 if ok else 1


def _variants() -> int:
    for v in variants.VARIANTS.values():
        what = f"n/a: {v.unavailable}" if v.unavailable else (v.patch or "Debian's loop.c")
        print(f"{v.name:<18} {what}\n{'':<18} ports: {v.ports}")
    return 0


def _sources(args: argparse.Namespace, default_all: bool) -> list[variants.ModuleSource]:
    names = list(getattr(args, "variant", None) or [])
    out = [variants.module_source(n) for n in names]
    if args.patch:
        out.append(variants.module_source(Path(args.patch), args.label))
    if not out and default_all:
        out = [variants.module_source(v.name) for v in variants.VARIANTS.values() if v.buildable]
    if not out:
        raise ValueError("give --variant NAME or --patch FILE")
    return out


def _build(args: argparse.Namespace) -> int:
    args.variant = args.variant or None
    target = kernels.build_target(args.kernel)
    for src in _sources(args, default_all=True):
        m = build_module(src, target, force=args.force)
        how = "cached" if m.cached else f"built in {m.seconds:.1f} s"
        print(f"{src.label:<18} {how:<16} {m.path}")
    return 0


def _build_kernel(args: argparse.Namespace) -> int:
    progress = None if args.quiet else kbuild.terminal_progress()
    try:
        built = kbuild.build_lockdep_kernel(progress, jobs=args.jobs, clean=args.clean)
    except kbuild.KernelBuildError as e:
        if progress:
            print(file=sys.stderr)
        print(f"loopdev: vm build-kernel: {e}", file=sys.stderr)
        return 1
    if progress:
        print(file=sys.stderr)
    mins, secs = divmod(int(built.seconds), 60)
    print(f"{built.build_dir}  ({built.release}, built in {mins}m{secs:02d}s, "
          f"{built.steps} steps)")  # fmt: skip
    return 0


def _options(args: argparse.Namespace) -> GuestOptions:
    return GuestOptions(machine=Machine(args.vcpus, args.memory, args.accel), kernel=args.kernel)


def _run(args: argparse.Namespace) -> int:
    from loopdev.lab.report import Progress

    names: list[str | Path] = list(args.variant or [])
    labels: list[str | None] = [None] * len(names)
    if args.patch:
        names.append(Path(args.patch))
        labels.append(args.label)
    if not names:
        raise ValueError("give --variant NAME (repeatable) or --patch FILE")
    scenarios = args.scenario or ["nested-umount"]
    userspaces = args.userspace or list(DEFAULT_USERSPACES)
    cells = plan_cells(scenarios, userspaces, args.trials)
    progress = Progress(enabled=args.progress)
    progress.set_total(len(names) * sum(c.trials for c in cells))

    def on_event(column: str, ev: Event) -> None:
        if ev.kind == "trial":
            progress.advance(1, f"{column} {ev.data['scenario']}/{ev.data['userspace']}")
        elif ev.kind == "ready":
            progress.advance(0, f"{column}: guest up")

    results = run_variants(
        names, scenarios, userspaces, args.trials, labels=labels,
        trial_timeout=args.trial_timeout, options=_options(args),
        guests_per_variant=args.guests_per_variant, parallel=args.parallel,
        udevd=not args.no_udevd, on_event=on_event,
    )  # fmt: skip
    progress.finish()
    if args.json:
        print(json.dumps([r.to_json(with_logs=args.logs) for r in results], indent=1))
    else:
        print(table(results))
    return 0 if all(g.status == "ok" for r in results for g in r.guests) else 1


def table(results: list[VariantResult]) -> str:
    """The terminal table: one line per cell, then each guest's status."""
    lines = [f"{'column':<18} {'scenario':<20} {'userspace':<20} {'fail/runs':>9}  outcomes"]
    for r in results:
        if r.unavailable:
            lines.append(f"{r.column:<18} n/a: {r.unavailable}")
            continue
        for cell in r.cells.values():
            k = cell.key
            counts = ", ".join(f"{label} {n}" for label, n in sorted(cell.counts.items()))
            cut = f" (+{cell.cut} cut)" if cell.cut else ""
            mark = " *" if timing_distortion(k.scenario, by_name(k.scenario).udev, k.userspace) else ""
            lines.append(f"{k.column:<18} {k.scenario:<20} {k.userspace + mark:<20} "
                         f"{cell.failures:>4}/{cell.checked:<4}  {counts}{cut}")  # fmt: skip
    lines.append("")
    for r in results:
        for g in r.guests:
            boot = f"boot {g.boot_seconds:.1f} s, " if g.boot_seconds else ""
            msg = f": {g.message}" if g.message else ""
            ld = {"on": ", lockdep on to the end", "off": ", lockdep off after a report"}
            lines.append(f"guest {g.column}: {g.status}{msg} ({boot}{g.seconds:.1f} s"
                         f"{ld.get(g.lockdep, '')})")  # fmt: skip
            lines.extend(f"  kernel {w}" for w in g.warnings[:3])
        lines.extend(f"note {r.column}: {n}" for n in dict.fromkeys(r.notes))
    reasons = {timing_distortion(c.key.scenario, by_name(c.key.scenario).udev, c.key.userspace)
               for r in results for c in r.cells.values()} - {""}  # fmt: skip
    for why in sorted(reasons):
        lines.append(f"* timing-distorted: {why}")
    for r in results:
        for cell in r.cells.values():
            for label, reports in example_reports(cell).items():
                lines.append(f"\n{cell.key}: {label} (trial {cell.examples[label].seed})")
                for report in reports[:1]:
                    lines.extend(f"  {line}" for line in report.summary())
    return "\n".join(lines)


def _script(args: argparse.Namespace) -> int:
    srcs = _sources(args, default_all=False)
    if len(srcs) != 1:
        raise ValueError("script runs on one module: give one --variant or --patch")
    module = build_module(srcs[0], kernels.build_target(args.kernel))
    job = Job(cells=[], trial_timeout=args.trial_timeout,
              script=[str(Path(args.file).resolve()), *args.args])  # fmt: skip
    run = run_guest(module, job, _options(args))
    for ev in run.events:
        if ev.kind == "output":
            sys.stdout.write(str(ev.data.get("stdout", "")))
            sys.stderr.write(str(ev.data.get("stderr", "")))
    if run.status != "ok":
        print(f"loopdev: vm script: guest {run.status}: {run.message}", file=sys.stderr)
        return 1
    out = next((e for e in run.events if e.kind == "output"), None)
    return int(out.data.get("returncode", 1)) if out else 1


def _test(args: argparse.Namespace) -> int:
    from loopdev.lab.report import Progress

    progress = Progress(enabled=None)
    progress.set_total(1)

    def on_event(ev: Event) -> None:
        if ev.kind == "ready":
            progress.advance(0, "guest up; pytest running")
        elif ev.kind == "test":
            progress.advance(0, f"{ev.data.get('outcome')}: {ev.data.get('nodeid')}")

    which: str | Path = Path(args.patch) if args.patch else (args.variant or guest_tests.STOCK)
    result = guest_tests.run_tests(
        args.paths, which, pytest_args=args.pytest_arg, timeout=args.trial_timeout,
        options=_options(args), on_event=on_event,
    )  # fmt: skip
    progress.advance(1, "done")
    progress.finish()
    if args.output:
        print(result.output.rstrip())
    for test in result.tests:
        why = f": {test.message.splitlines()[0]}" if test.message else ""
        print(f"{test.outcome.upper():<8} {test.nodeid}{why}")
    bad = result.unexpected(args.expect_skip)
    print(result.summary())
    for report in result.lockdep_reports:
        print(f"lockdep in the guest: {report.label}")
        print("\n".join(f"  {line}" for line in report.summary()))
    if result.status != "ok":
        print(f"loopdev: vm test: guest {result.status}: {result.message}", file=sys.stderr)
    for test in bad:
        print(f"unexpected: {test.outcome} {test.nodeid}", file=sys.stderr)
    return 0 if result.ok(args.expect_skip) else 1
