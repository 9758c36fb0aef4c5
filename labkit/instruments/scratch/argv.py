"""The command lines that start a scratch container: the host-side enter script and the in-namespace setup script.

The process tree, outermost first: ``/bin/sh -c ENTER`` (host pid namespace) writes its pid to every
``cgroup.procs`` of the container's group and only then execs ``unshare``, so every process of the container,
``unshare`` included, is counted and limited from its first instruction; ``unshare --pid --fork …`` makes the
new namespaces and forks PID 1, which runs ``/bin/sh -c SETUP`` (the host's shell, already inside), which
bind-mounts the rootfs onto itself, mounts /proc, sets the hostname, ``pivot_root``\\ s and execs the command.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from labkit.instruments.scratch.spec import ScratchSpec

CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SETUP_FAILED_EXIT = 125  # like `docker run`: the container could not be set up, the command never ran
SETUP_FAILED_MARK = "labkit-scratch:"  # how the scripts' own error messages start
SETUP_NAME = "labkit-scratch-setup"  # $0 of the setup shell: tells it apart from the command in /proc/<pid>/cmdline
ENTER_NAME = "labkit-scratch-enter"

# Host shell, host pid: join the cgroup (every hierarchy), then become `unshare`. $1 is the number of
# cgroup.procs files that follow; the rest is the unshare command line.
ENTER = r"""
n=$1; shift
while [ "$n" -gt 0 ]; do
    echo $$ > "$1" || { echo "labkit-scratch: cannot join cgroup ($1)" >&2; exit 125; }
    shift; n=$((n - 1))
done
exec "$@"
"""

# Host shell, new namespaces, PID 1. Arguments: mount pivot_root rootfs old-root-dir hostname argv...
SETUP = r"""
fail() { echo "labkit-scratch: $1 failed" >&2; exit 125; }
mount_bin=$1 pivot_bin=$2 rootfs=$3 old=$4 name=$5; shift 5
"$mount_bin" --bind "$rootfs" "$rootfs" || fail "bind-mounting the rootfs onto itself"
"$mount_bin" -t proc proc "$rootfs/proc" || fail "mounting /proc"
printf '%s' "$name" > /proc/sys/kernel/hostname || fail "setting the hostname"
cd "$rootfs" || fail "cd into the rootfs"
"$pivot_bin" . "$old" || fail "pivot_root"
cd / || fail "cd /"
umount -l "/$old" || fail "detaching the old root (umount -l, from the rootfs)"
rmdir "/$old" 2>&- || true  # cosmetic (the host removes it at the end): the rootfs may have no rmdir
exec "$@"
"""

UNSHARE_OPTIONS = ("--pid", "--fork", "--kill-child", "--mount", "--uts", "--net", "--ipc", "--propagation", "private")


@dataclass(frozen=True)
class Programs:
    """Absolute paths of the host programs used before the pivot."""

    unshare: str
    mount: str
    pivot_root: str


@dataclass(frozen=True)
class Launch:
    """``argv``: what to spawn; ``shown``: the same for error messages, the long setup script abbreviated."""

    argv: tuple[str, ...]
    shown: tuple[str, ...]


def build(spec: ScratchSpec, programs: Programs, procs_files: Sequence[Path], old_root_name: str) -> Launch:
    """The command line that starts ``spec`` in the cgroup whose ``cgroup.procs`` files are ``procs_files``,
    parking the old root in ``<rootfs>/<old_root_name>``."""
    setup_args = (SETUP_NAME, programs.mount, programs.pivot_root, str(spec.rootfs), old_root_name, spec.hostname,
                  *spec.argv)
    unshare = (programs.unshare, *UNSHARE_OPTIONS, "--", "/bin/sh", "-c")
    procs = tuple(str(p) for p in procs_files)
    argv = ("/bin/sh", "-c", ENTER, ENTER_NAME, str(len(procs)), *procs, *unshare, SETUP, *setup_args)
    return Launch(argv, (*unshare, "<labkit scratch setup script>", *setup_args))


def in_setup(cmdline: Sequence[str], unshare: str) -> bool:
    """Whether a process with this command line is still a copy of ``unshare`` or the setup shell (PID 1 is
    first the one, then the other, then the command)."""
    return SETUP_NAME in cmdline[:4] or list(cmdline[:1]) == [unshare]
