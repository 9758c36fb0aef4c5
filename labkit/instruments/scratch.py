"""A container from scratch: one process isolated like a container, without Docker (notebook 01).

What Docker does for ``docker run``, done by hand with util-linux:

1. a cgroup ``labkit/<run_id>/<name>`` with a memory and a pids limit (:mod:`labkit.cgroups`);
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
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

from labkit.instruments import shell
from labkit.instruments.cgroups import MIB, Cgroup, CgroupLayout, validate_limits

log = logging.getLogger("labkit.scratch")

DEFAULT_MEMORY_MAX_BYTES = 256 * MIB
DEFAULT_PIDS_MAX = 64
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SETUP_FAILED_EXIT = 125  # like `docker run`: the container could not be set up, the command never ran
_SETUP_NAME = "labkit-scratch-setup"
# util-linux 2.38's `unshare --fork` passes on a child's death by signal N by raising N on itself, but for
# SIGKILL its signal(SIGKILL, SIG_DFL) fails (EINVAL) and it exits 1 with this message instead. Only SIGKILL
# (and SIGSTOP, which does not end a process) gets there, so this message with exit 1 means "PID 1 was
# SIGKILLed" (e.g. by the OOM killer): reported as 137, like Docker.
_UNSHARE_SIGKILL_MESSAGE = "unshare: sigprocmask unblock failed: Invalid argument"
_ENTER_NAME = "labkit-scratch-enter"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9][A-Za-z0-9-]{0,62})*$")

# Host shell, host pid: join the cgroup (every hierarchy), then become `unshare`. $1 is the number of
# cgroup.procs files that follow; the rest is the unshare command line.
_ENTER = r"""
n=$1; shift
while [ "$n" -gt 0 ]; do
    echo $$ > "$1" || { echo "labkit-scratch: cannot join cgroup ($1)" >&2; exit 125; }
    shift; n=$((n - 1))
done
exec "$@"
"""

# Host shell, new namespaces, PID 1. Arguments: mount pivot_root rootfs old-root-dir hostname argv...
_SETUP = r"""
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


class ScratchSetupError(shell.CommandError):
    """The container could not be set up (the message names the step); the command itself never ran."""


class ScratchContainer:
    """A process isolated like a container by ``unshare`` + ``pivot_root``; a context manager.

    ``rootfs`` needs ``/bin/sh``, an empty ``/proc`` directory and ``umount``. ``host_pid`` is the host PID
    of the container's PID 1 once it runs ``argv``; ``cgroup`` its :class:`~labkit.cgroups.Cgroup`.
    Output goes to temporary files, read with :meth:`output`. Leaving the block (also by an exception or
    KeyboardInterrupt) kills every process in the cgroup and removes the cgroup.
    """

    def __init__(
        self,
        rootfs: Path,
        argv: Sequence[str],
        *,
        run_id: str,
        name: str,
        hostname: str = "scratch",
        memory_max_bytes: int = DEFAULT_MEMORY_MAX_BYTES,
        pids_max: int = DEFAULT_PIDS_MAX,
        layout: CgroupLayout | None = None,
        start_timeout_s: float = 10.0,
    ) -> None:
        self.rootfs = Path(rootfs).resolve()
        self.argv = [str(a) for a in argv]
        self.run_id = run_id
        self.name = name
        self.hostname = hostname
        self.memory_max_bytes = memory_max_bytes
        self.pids_max = pids_max
        self.start_timeout_s = start_timeout_s
        self._validate()
        self._layout = layout
        self._cgroup: Cgroup | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._old_root: Path | None = None
        self._stdout: IO[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._host_pid: int | None = None
        self._setup_argv: list[str] = []
        self._unshare = ""
        self._final_output: tuple[str, str] | None = None

    def _validate(self) -> None:
        rootfs = self.rootfs
        if not rootfs.is_dir():
            raise ValueError(
                f"rootfs={str(rootfs)!r}: allowed is an existing directory holding a root filesystem"
            )
        if rootfs == Path("/"):
            raise ValueError("rootfs='/': allowed is a directory other than the host's root")
        if not os.path.lexists(rootfs / "bin/sh"):
            raise ValueError(f"rootfs={str(rootfs)!r}: it has no bin/sh; allowed is a rootfs with a shell")
        if not (rootfs / "proc").is_dir():
            raise ValueError(f"rootfs={str(rootfs)!r}: it has no proc directory to mount /proc on")
        if not any(os.path.lexists(rootfs / d / "umount") for d in ("bin", "sbin", "usr/bin", "usr/sbin")):
            raise ValueError(
                f"rootfs={str(rootfs)!r}: it has no umount (in bin, sbin, usr/bin or usr/sbin); after "
                "pivot_root only the rootfs's own programs are reachable, and one must detach the old root"
            )
        if not self.argv or not self.argv[0]:
            raise ValueError(f"argv={self.argv!r}: allowed is a non-empty command line")
        for param, value in (("run_id", self.run_id), ("name", self.name)):
            if not isinstance(value, str) or not _NAME.match(value):
                raise ValueError(
                    f"{param}={value!r}: allowed is 1-63 letters, digits, _ . - (first a letter or digit)"
                )
        if not _HOSTNAME.match(self.hostname) or len(self.hostname) > 64:
            raise ValueError(
                f"hostname={self.hostname!r}: allowed is a host name of at most 64 characters "
                "(letters, digits, - and . between labels)"
            )
        validate_limits(self.memory_max_bytes, self.pids_max)
        if self.memory_max_bytes is None or self.pids_max is None:
            raise ValueError("memory_max_bytes and pids_max: a scratch container always runs under limits")
        if not self.start_timeout_s > 0:
            raise ValueError(f"start_timeout_s={self.start_timeout_s!r}: allowed is a number of seconds > 0")

    @property
    def cgroup(self) -> Cgroup:
        if self._cgroup is None:
            raise RuntimeError("the container is not running: use it as `with ScratchContainer(...) as c:`")
        return self._cgroup

    def __enter__(self) -> ScratchContainer:
        programs = [shell.require_program(p) for p in ("unshare", "mount", "pivot_root")]
        layout = self._layout if self._layout is not None else CgroupLayout.from_system()
        self._host_pid = None
        self._final_output = None
        try:
            self._cgroup = layout.create(
                f"labkit/{self.run_id}/{self.name}",
                memory_max_bytes=self.memory_max_bytes,
                pids_max=self.pids_max,
            )
            self._old_root = Path(tempfile.mkdtemp(prefix=".labkit-oldroot-", dir=self.rootfs))
            self._stdout = tempfile.TemporaryFile()
            self._stderr = tempfile.TemporaryFile()
            unshare, mount, pivot_root = programs
            self._unshare = unshare
            setup_args = [
                _SETUP_NAME,
                mount,
                pivot_root,
                str(self.rootfs),
                self._old_root.name,
                self.hostname,
                *self.argv,
            ]
            unshare_argv = [
                unshare, "--pid", "--fork", "--kill-child", "--mount", "--uts", "--net", "--ipc",
                "--propagation", "private", "--", "/bin/sh", "-c",
            ]  # fmt: skip
            # What errors show: the setup script itself is long and lives in this module.
            self._setup_argv = [*unshare_argv, "<labkit.scratch setup script>", *setup_args]
            procs = [str(p) for p in self._cgroup.procs_files]
            argv = [
                "/bin/sh",
                "-c",
                _ENTER,
                _ENTER_NAME,
                str(len(procs)),
                *procs,
                *unshare_argv,
                _SETUP,
                *setup_args,
            ]
            self._proc = shell.spawn(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=self._stdout,
                stderr=self._stderr,
                env={"PATH": CONTAINER_PATH, "HOME": "/"},
                cwd="/",
                start_new_session=True,  # a Ctrl-C in the notebook reaches Python, which then cleans up
            )
        except BaseException:
            try:
                self._cleanup()
            except BaseException:
                log.exception("cleaning up after a failed start of scratch container %r", self.name)
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._cleanup()

    @property
    def host_pid(self) -> int:
        """The host PID of the container's PID 1, once it has left the setup script and runs ``argv``.

        Found among the cgroup's processes by ``NSpid`` in /proc/<pid>/status (one level deeper than ours,
        ending in 1). Waits up to ``start_timeout_s``; raises ScratchSetupError when setup failed and
        RuntimeError when the command ended before it could be seen.
        """
        if self._host_pid is not None:
            return self._host_pid
        proc = self._running()
        depth = len(_nspid("self")) + 1
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            for pid in self.cgroup.pids():
                try:
                    nspid = _nspid(str(pid))
                    cmdline = Path(f"/proc/{pid}/cmdline").read_text().split("\0")[:-1]
                except (FileNotFoundError, ProcessLookupError):
                    continue
                # PID 1 is first a copy of unshare, then the setup shell, then the command.
                in_setup = _SETUP_NAME in cmdline[:4] or cmdline[:1] == [self._unshare]
                if len(nspid) == depth and nspid[-1] == 1 and cmdline and not in_setup:
                    self._host_pid = pid
                    return pid
            code = proc.poll()
            if code is not None:
                self._raise_if_setup_failed(code)
                raise RuntimeError(
                    f"the container's command {self.argv} ended (exit code {_exit_code(code)}) before its "
                    "host PID could be seen; use wait() for short commands"
                )
            if time.monotonic() >= deadline:
                stdout, stderr = self.output()
                raise shell.CommandError(
                    self._setup_argv, None, stdout, stderr,
                    hint=f"the container's PID 1 did not reach its command within {self.start_timeout_s} s",
                )  # fmt: skip
            time.sleep(0.002)

    def wait(self, timeout_s: float) -> int:
        """Wait for the command to end and return its exit code (128 + signal number when killed, like a
        shell: 137 for SIGKILL, e.g. by the OOM killer). Raises CommandError when it runs past ``timeout_s``
        and ScratchSetupError when the setup failed."""
        proc = self._running()
        try:
            code = _wait_exactly(proc, timeout_s)
        except subprocess.TimeoutExpired as exc:
            stdout, stderr = self.output()
            raise shell.CommandError(
                self.argv, None, stdout, stderr, hint=f"the scratch container ran longer than {timeout_s} s"
            ) from exc
        self._raise_if_setup_failed(code)
        if code == 1 and self.output()[1].rstrip().endswith(_UNSHARE_SIGKILL_MESSAGE):
            return 128 + signal.SIGKILL
        return _exit_code(code)

    def output(self) -> tuple[str, str]:
        """What the container printed so far (after the block: in all): (stdout, stderr)."""
        if self._final_output is not None:
            return self._final_output
        texts = []
        for f in (self._stdout, self._stderr):
            if f is None or f.closed:
                texts.append("")
                continue
            # pread: the container shares this file's offset, so seeking would make it overwrite its output
            data = os.pread(f.fileno(), os.fstat(f.fileno()).st_size, 0)
            texts.append(data.decode(errors="replace"))
        return texts[0], texts[1]

    def _keep_output(self) -> None:
        self._final_output = self.output()

    def _running(self) -> subprocess.Popen[str]:
        if self._proc is None:
            raise RuntimeError("the container is not running: use it as `with ScratchContainer(...) as c:`")
        return self._proc

    def _raise_if_setup_failed(self, code: int) -> None:
        stdout, stderr = self.output()
        if code == SETUP_FAILED_EXIT and "labkit-scratch:" in stderr:
            raise ScratchSetupError(
                self._setup_argv, code, stdout, stderr,
                hint="Setting up the scratch container failed before the command ran (see the step above).",
            )  # fmt: skip

    def _cleanup(self) -> None:
        """Kill everything in the cgroup, reap, remove the cgroup and the old-root directory; each step runs
        even when an earlier one failed, and the first error is raised at the end."""
        errors: list[BaseException] = []

        def attempt(step: Callable[..., object], *args: object) -> None:
            try:
                step(*args)
            except BaseException as exc:
                errors.append(exc)

        if self._cgroup is not None and self._proc is not None:
            attempt(_kill_inside, self._cgroup, self._proc, 5.0)
        if self._proc is not None:
            # Covers the instant before the enter shell joined the cgroup; unshare's --kill-child takes
            # PID 1 (and with it the whole pid namespace) along.
            attempt(_kill_and_reap, self._proc)
        if self._cgroup is not None:
            attempt(self._cgroup.kill_all, 5.0)
            attempt(self._cgroup.remove)
        if self._old_root is not None:
            attempt(_rmdir_if_exists, self._old_root)
        if self._stdout is not None and self._stderr is not None:
            attempt(self._keep_output)
        for f in (self._stdout, self._stderr):
            if f is not None:
                attempt(f.close)
        self._cgroup = None
        self._proc = None
        self._old_root = None
        self._stdout = self._stderr = None
        if errors:
            raise errors[0]


def run_scratch_once(
    rootfs: Path,
    argv: Sequence[str],
    *,
    run_id: str,
    name: str,
    timeout_s: float,
    hostname: str = "scratch",
    memory_max_bytes: int = DEFAULT_MEMORY_MAX_BYTES,
    pids_max: int = DEFAULT_PIDS_MAX,
    layout: CgroupLayout | None = None,
) -> int:
    """Run a short command in a scratch container and return its exit code (start-up timing, notebook 01).

    Same guarantees as :class:`ScratchContainer`; raises CommandError when it runs past ``timeout_s``.
    """
    if not timeout_s > 0:
        raise ValueError(f"timeout_s={timeout_s!r}: allowed is a number of seconds > 0")
    with ScratchContainer(
        rootfs, argv, run_id=run_id, name=name, hostname=hostname,
        memory_max_bytes=memory_max_bytes, pids_max=pids_max, layout=layout,
    ) as container:  # fmt: skip
        return container.wait(timeout_s)


def _kill_inside(cgroup: Cgroup, proc: subprocess.Popen[str], timeout_s: float) -> None:
    """SIGKILL the container's processes but not ``unshare`` (``proc``), so that ``unshare`` reaps PID 1 and
    exits by itself and we reap ``unshare``: killing both at once would leave PID 1 a zombie for the host's
    init to collect, some time later."""
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None:
        inside = [pid for pid in cgroup.pids() if pid != proc.pid]
        if not inside:
            return
        for pid in inside:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() >= deadline:
            return  # _kill_and_reap and Cgroup.kill_all come next
        time.sleep(0.002)


def _wait_exactly(proc: subprocess.Popen[str], timeout_s: float) -> int:
    """Popen.wait(timeout) without its polling: that sleeps up to 50 ms between checks, which would show up
    in start-up timings. A pidfd becomes readable the moment the process ends (Linux >= 5.3)."""
    if proc.poll() is not None:
        return proc.returncode
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError:
        return proc.wait(timeout=timeout_s)
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout_s)
    finally:
        os.close(pidfd)
    if not ready:
        raise subprocess.TimeoutExpired(proc.args, timeout_s)
    return proc.wait()


def _kill_and_reap(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"pid {proc.pid} ({proc.args!r}) survived SIGKILL") from exc


def _rmdir_if_exists(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.rmdir()


def _nspid(pid: str) -> list[int]:
    """The NSpid line of /proc/<pid>/status: this process's pid in each pid namespace, outermost first."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return [int(tok) for tok in line.split()[1:]]
    raise RuntimeError(f"/proc/{pid}/status has no NSpid line (kernel older than 4.1?)")


def _exit_code(returncode: int) -> int:
    """Popen's returncode as a shell reports it: a death by signal N is 128 + N."""
    return 128 - returncode if returncode < 0 else returncode
