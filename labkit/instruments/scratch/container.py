"""The scratch container's lifetime: make its cgroup, start it, find PID 1, wait, read its output, clean up."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from labkit.errors import BadParameter
from labkit.instruments import cgroups, shell, undo
from labkit.instruments.cgroups import Cgroup, CgroupLayout
from labkit.instruments.limits import Limits
from labkit.instruments.scratch import argv as launch
from labkit.instruments.scratch.pid1 import find_pid1, own_depth
from labkit.instruments.scratch.spec import DEFAULT_LIMITS, ScratchSpec
from labkit.instruments.scratch.status import ExitStatus

log = logging.getLogger("labkit.scratch")


class ScratchSetupError(shell.CommandError):
    """The container could not be set up (the message names the step); the command itself never ran."""


class ScratchContainer:
    """A process isolated like a container by ``unshare`` + ``pivot_root``, in a cgroup under ``limits``
    (memory, pids and CPU); a context manager.

    The parameters are those of :class:`ScratchSpec` (checked before anything starts); ``layout`` is where the
    cgroup controllers are (default: this host's). ``host_pid`` is the host PID of the container's PID 1 once it
    runs ``argv``; ``cgroup`` its :class:`~labkit.instruments.cgroups.Cgroup`. Output goes to temporary files,
    read with :meth:`output`. :meth:`wait` returns the shell-style exit code, :attr:`raw_exit` says what the
    process really ended with. Leaving the block (also by an exception or KeyboardInterrupt) kills every
    process in the cgroup and removes the cgroup.
    """

    def __init__(
        self,
        rootfs: Path,
        argv: Sequence[str],
        *,
        run_id: str,
        name: str,
        hostname: str = "scratch",
        limits: Limits = DEFAULT_LIMITS,
        layout: CgroupLayout | None = None,
        start_timeout_s: float = 10.0,
    ) -> None:
        self.spec = ScratchSpec(rootfs, argv, run_id=run_id, name=name, hostname=hostname, limits=limits,
                                start_timeout_s=start_timeout_s)
        self._layout = layout
        self._cgroup: Cgroup | None = None
        self._proc: shell.Process[str] | None = None
        self._old_root: Path | None = None
        self._journal: contextlib.ExitStack | None = None
        self._stdout: IO[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._host_pid: int | None = None
        self._launch: launch.Launch | None = None
        self._unshare = ""
        self._final_output: tuple[str, str] | None = None
        self._status: ExitStatus | None = None

    @classmethod
    def from_spec(cls, spec: ScratchSpec, layout: CgroupLayout | None = None) -> ScratchContainer:
        return cls(spec.rootfs, spec.argv, run_id=spec.run_id, name=spec.name, hostname=spec.hostname,
                   limits=spec.limits, layout=layout, start_timeout_s=spec.start_timeout_s)

    @property
    def rootfs(self) -> Path:
        return self.spec.rootfs

    @property
    def argv(self) -> list[str]:
        return list(self.spec.argv)

    @property
    def limits(self) -> Limits:
        return self.spec.limits

    @property
    def cgroup(self) -> Cgroup:
        if self._cgroup is None:
            raise RuntimeError("the container is not running: use it as `with ScratchContainer(...) as c:`")
        return self._cgroup

    def __enter__(self) -> ScratchContainer:
        programs = launch.Programs(*(shell.require_program(p) for p in ("unshare", "mount", "pivot_root")))
        layout = self._layout if self._layout is not None else CgroupLayout.from_system()
        self._host_pid = None
        self._final_output = None
        self._status = None
        self._unshare = programs.unshare
        try:
            self._old_root = Path(tempfile.mkdtemp(prefix=".labkit-oldroot-", dir=self.spec.rootfs))
            # Journalled before the group is made: a maker killed with SIGKILL leaves a container that runs on
            # (its processes are the kernel's, not this process's children) for the next labkit command to end.
            self._journal = contextlib.ExitStack()
            self._journal.enter_context(undo.recorded(f"scratch container {self.spec.relpath}", remove_left, {
                "relpath": self.spec.relpath, "old_root": str(self._old_root)}))
            self._cgroup = layout.create(self.spec.relpath, self.spec.limits)
            self._stdout = tempfile.TemporaryFile()
            self._stderr = tempfile.TemporaryFile()
            self._launch = launch.build(self.spec, programs, self._cgroup.procs_files, self._old_root.name)
            self._proc = shell.spawn(
                self._launch.argv,
                stdin=shell.DEVNULL,
                stdout=self._stdout,
                stderr=self._stderr,
                env={"PATH": launch.CONTAINER_PATH, "HOME": "/"},
                cwd="/",
                start_new_session=True,  # a Ctrl-C in the notebook reaches Python, which then cleans up
            )
        except BaseException:
            try:
                self._cleanup()
            except BaseException:
                log.exception("cleaning up after a failed start of scratch container %r", self.spec.name)
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._cleanup()

    @property
    def host_pid(self) -> int:
        """The host PID of the container's PID 1, once it has left the setup script and runs ``argv``.

        Found among the cgroup's processes by ``NSpid`` (:mod:`.pid1`). Waits up to ``start_timeout_s``;
        raises ScratchSetupError when setup failed and RuntimeError when the command ended before it could be
        seen.
        """
        if self._host_pid is not None:
            return self._host_pid
        proc = self._running()
        depth = own_depth() + 1
        deadline = time.monotonic() + self.spec.start_timeout_s
        while True:
            pid = find_pid1(self.cgroup.pids(), self._unshare, depth)
            if pid is not None:
                self._host_pid = pid
                return pid
            code = proc.poll()
            if code is not None:
                status = self._ended(code)
                raise RuntimeError(
                    f"the container's command {self.argv} ended ({status.raw}, exit code {status.code}) before "
                    "its host PID could be seen; use wait() for short commands"
                )
            if time.monotonic() >= deadline:
                stdout, stderr = self.output()
                raise shell.CommandError(
                    self._shown_argv(), None, stdout, stderr,
                    hint=f"The container's PID 1 did not reach its command within {self.spec.start_timeout_s} s.",
                )  # fmt: skip
            time.sleep(0.002)

    def wait(self, timeout_s: float) -> int:
        """Wait for the command to end and return its exit code as a shell reports it (128 + signal number when
        killed: 137 for SIGKILL, e.g. by the OOM killer); :attr:`raw_exit` has the status behind it. Raises
        CommandError when it runs past ``timeout_s`` and ScratchSetupError when the setup failed."""
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not timeout_s >= 0:
            raise BadParameter(f"timeout_s={timeout_s!r}: not a time.", "Give a number of seconds >= 0.")
        proc = self._running()
        try:
            code = _wait_exactly(proc, timeout_s)
        except shell.TimeoutExpired as exc:
            stdout, stderr = self.output()
            raise shell.CommandError(
                self.argv, None, stdout, stderr, hint=f"The scratch container ran longer than {timeout_s} s."
            ) from exc
        return self._ended(code).code

    @property
    def raw_exit(self) -> str:
        """The status the container's process really ended with, before any mapping: ``"exited 0"``,
        ``"killed by signal 9"``, or ``"unshare exited 1: sigprocmask unblock failed: Invalid argument"``
        (util-linux's unshare after its PID 1 was SIGKILLed, which :meth:`wait` reports as 137). Known once
        :meth:`wait` returned (or the block ended); RuntimeError before."""
        if self._status is None:
            raise RuntimeError("the container has not ended yet: call wait() first")
        return self._status.raw

    @property
    def exit_status(self) -> ExitStatus | None:
        """Both readings of how it ended (:class:`~.status.ExitStatus`), None while it runs."""
        return self._status

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

    def _ended(self, returncode: int) -> ExitStatus:
        """Record how the process ended; raise ScratchSetupError when it was the setup that failed."""
        stdout, stderr = self.output()
        self._status = ExitStatus.of(returncode, stderr)
        if returncode == launch.SETUP_FAILED_EXIT and launch.SETUP_FAILED_MARK in stderr:
            raise ScratchSetupError(
                self._shown_argv(), returncode, stdout, stderr,
                hint="Setting up the scratch container failed before the command ran (see the step above).",
            )  # fmt: skip
        return self._status

    def _shown_argv(self) -> list[str]:
        return list(self._launch.shown) if self._launch is not None else self.argv

    def _running(self) -> shell.Process[str]:
        if self._proc is None:
            raise RuntimeError("the container is not running: use it as `with ScratchContainer(...) as c:`")
        return self._proc

    def _keep_output(self) -> None:
        self._final_output = self.output()

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
            if self._status is None and self._proc.returncode is not None and self._stderr is not None:
                self._status = ExitStatus.of(self._proc.returncode, self.output()[1])
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
        if self._journal is not None:
            attempt(self._journal.close)  # the record goes; its undo finds nothing left
        self._cgroup = None
        self._proc = None
        self._old_root = None
        self._journal = None
        self._stdout = self._stderr = None
        if errors:
            raise errors[0]


def remove_left(detail: dict[str, Any]) -> None:
    """Undo of a scratch container (``detail``: its cgroup's `relpath`, its `old_root` folder in the rootfs): its
    processes killed and its groups removed, the folder gone (nothing when both are gone already)."""
    cgroups.swept(detail)
    _rmdir_if_exists(Path(detail["old_root"]))


def run_scratch_once(
    rootfs: Path,
    argv: Sequence[str],
    *,
    run_id: str,
    name: str,
    timeout_s: float,
    hostname: str = "scratch",
    limits: Limits = DEFAULT_LIMITS,
    layout: CgroupLayout | None = None,
) -> int:
    """Run a short command in a scratch container and return its shell-style exit code (start-up timing,
    notebook 01).

    Same guarantees as :class:`ScratchContainer`; raises CommandError when it runs past ``timeout_s``.
    """
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not timeout_s > 0:
        raise BadParameter(f"timeout_s={timeout_s!r}: not a time.", "Give a number of seconds > 0.")
    with ScratchContainer(rootfs, argv, run_id=run_id, name=name, hostname=hostname, limits=limits,
                          layout=layout) as container:
        return container.wait(timeout_s)


def _kill_inside(cgroup: Cgroup, proc: shell.Process[str], timeout_s: float) -> None:
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


def _wait_exactly(proc: shell.Process[str], timeout_s: float) -> int:
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
        raise shell.TimeoutExpired(proc.args, timeout_s)
    return proc.wait()


def _kill_and_reap(proc: shell.Process[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=5)
    except shell.TimeoutExpired as exc:
        raise RuntimeError(f"pid {proc.pid} ({proc.args!r}) survived SIGKILL") from exc


def _rmdir_if_exists(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.rmdir()
