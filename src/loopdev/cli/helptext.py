"""The text of ``loopdev --help``: usage, options, subcommands, examples, exit codes."""

from __future__ import annotations

from loopdev import __version__
from loopdev.cli import listing
from loopdev.errors import EXIT_CODES

USAGE = """\
Usage:
 loopdev [options] [<loopdev>]
 loopdev [options] -f | <loopdev> <file>
 loopdev mount <image> <dir> [-t <type>] [-o <options>] [-r]
 loopdev umount <dir> [--timeout <seconds>]
 loopdev lab ...            (race lab; see `loopdev lab --help`)
 loopdev vm ...             (real kernels in QEMU; see `loopdev vm --help`)

Set up and control loop devices. The command line is losetup's (util-linux 2.38), so
`alias losetup=loopdev` works; detach waits until the device is really gone.
"""

OPTIONS = """\
Options:
 -a, --all                     list all used devices
 -d, --detach <loopdev>...     detach one or more devices
 -D, --detach-all              detach all used devices (with --loop-ref: only those)
 -f, --find                    find first unused device
 -c, --set-capacity <loopdev>  resize the device
 -j, --associated <file>       list all devices associated with <file>
 -L, --nooverlap               avoid possible conflict between devices
     --remove <loopdev>...     remove unused device nodes (LOOP_CTL_REMOVE)

 -o, --offset <num>            start at offset <num> into file
     --sizelimit <num>         device is limited to <num> bytes of the file
 -b, --sector-size <num>       set the logical sector size to <num>
 -P, --partscan                create a partitioned loop device
 -r, --read-only               set up a read-only loop device
     --direct-io[=<on|off>]    open backing file with O_DIRECT
     --loop-ref <string>       loop device reference (also filters -a/-l/-D)
     --show                    print device name after setup (with -f)
 -v, --verbose                 verbose mode

     --wait, --no-wait         detach: wait until the device is really unbound (default)
     --timeout <seconds>       detach: give up waiting after this long (default 5)

 -J, --json                    use JSON --list output format
 -l, --list                    list info about all or specified (default)
 -n, --noheadings              don't print headings for --list output
 -O, --output <cols>           specify columns to output for --list (+COLS appends)
     --output-all              output all columns
     --raw                     use raw --list output format

 -h, --help                    display this help
 -V, --version                 display version

Sizes (<num>) take losetup's suffixes: KiB, MiB, GiB... (K, M, G too) and KB, MB, GB.
"""

EXAMPLES = """\
Examples:
 loopdev -f --show disk.img            attach to the first free device, print its name
 loopdev -r -P -f --show disk.img      read-only, with partitions (/dev/loopNp1 ...)
 loopdev -o 1MiB --sizelimit 64MiB -f --show disk.img
 loopdev -l -J                         list attached devices as JSON
 loopdev -j disk.img                   which devices use disk.img
 loopdev -d /dev/loop3                 detach; returns once loop3 is really unbound
 loopdev -d /dev/loop3 --timeout 30    ... waiting up to 30 s for its holders
 loopdev -D --loop-ref ci-1234         detach every device attached with --loop-ref ci-1234
 loopdev mount disk.img /mnt -r        attach + mount (reuses a matching device safely)
 loopdev umount /mnt                   unmount; returns once the loop device is gone
"""


def exit_codes() -> str:
    lines = "".join(f" {code:>3}  {text}\n" for code, text in sorted(EXIT_CODES.items()))
    return "Exit status:\n" + lines


def main_help() -> str:
    return "\n".join(
        [
            USAGE,
            OPTIONS,
            "Available output columns:\n" + listing.columns_help(),
            EXAMPLES,
            exit_codes(),
        ]
    )


def version() -> str:
    return f"loopdev {__version__} (losetup-compatible command line of util-linux 2.38)\n"
