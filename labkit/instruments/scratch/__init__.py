"""A container from scratch: one process isolated like a container, without Docker (notebook 01).

What Docker does for ``docker run``, done by hand with util-linux:

1. a cgroup ``labkit/<run_id>/<name>`` with a memory, a pids and a CPU limit (:mod:`labkit.instruments.cgroups`);
2. a tiny host shell joins that cgroup and only then execs ``unshare``, so every process of the container,
   ``unshare`` included, is counted and limited from its first instruction;
3. ``unshare --pid --fork --mount --uts --net --ipc --propagation private`` gives the child new namespaces:
   it is PID 1 of a new pid namespace, with its own mount table, hostname, network stack and IPC;
4. a setup script (the host's ``/bin/sh``, already in the new namespaces) bind-mounts the rootfs onto itself
   (``pivot_root`` needs a mount point), mounts a fresh ``/proc`` for the new pid namespace, sets the
   hostname, ``pivot_root``\\ s into the rootfs with the old root parked in a fresh directory, detaches the
   old root (``umount -l``) and execs the command.

Host programs (``mount``, ``pivot_root``) are used only before the pivot; after it the only programs left
are the rootfs's own, so the rootfs must provide ``umount`` (busybox and Debian minbase both do); its
``rmdir`` is used if there is one. The hostname is written to ``/proc/sys/kernel/hostname`` by the shell
itself, so no program is needed for it. Not done here, unlike Docker: ``/dev`` stays as the rootfs has it
(no device nodes are made), the new network namespace has only ``lo``, down; no capabilities are dropped,
no seccomp filter, no user namespace: PID 1 is root with the host's full capability set.

Nothing outlives the ``with`` block: every process in the cgroup is killed, the cgroup removed; the mounts
live only in the container's mount namespace, which dies with its last process.

Modules: :mod:`.spec` (what is asked, validated), :mod:`.argv` (the enter and setup scripts),
:mod:`.pid1` (finding PID 1 by NSpid), :mod:`.status` (the raw exit status and the shell-style code),
:mod:`.container` (start, wait, output, cleanup).
"""

from labkit.instruments.scratch.container import ScratchContainer, ScratchSetupError, run_scratch_once
from labkit.instruments.scratch.spec import DEFAULT_LIMITS, ScratchSpec
from labkit.instruments.scratch.status import ExitStatus

__all__ = ["DEFAULT_LIMITS", "ExitStatus", "ScratchContainer", "ScratchSetupError", "ScratchSpec", "run_scratch_once"]
