"""One way to run an external command: logged, time-limited, with one error type.

Every shell-out in labkit (docker CLI, debootstrap, unshare, qemu, apt-get, pip, JupyterLab) goes through
:func:`run`, or :func:`spawn` for a process that runs beside labkit; this is the only module that imports
``subprocess`` (a test checks), and it names what their callers need of it (:data:`Process`, :data:`DEVNULL`, …).
"""

from __future__ import annotations

import ctypes
import logging
import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from labkit.errors import LabkitError

log = logging.getLogger("labkit.shell")

# What the callers of spawn() handle: the process, its standard streams, and the timeout of Process.wait().
Process = subprocess.Popen
DEVNULL, PIPE, STDOUT = subprocess.DEVNULL, subprocess.PIPE, subprocess.STDOUT
TimeoutExpired = subprocess.TimeoutExpired


class CommandError(LabkitError, RuntimeError):
    """A command exited non-zero, timed out or could not be started."""

    def __init__(
        self,
        argv: Sequence[str],
        exit_code: int | None,
        stdout: str,
        stderr: str,
        hint: str = "",
    ) -> None:
        self.argv = list(argv)
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr
        self.hint = hint
        status = "timed out" if exit_code is None else f"exited {exit_code}"
        tail = stderr.strip().splitlines()[-5:] or stdout.strip().splitlines()[-5:]
        message = f"`{shlex.join(self.argv)}` {status}"
        if tail:
            message += ":\n  " + "\n  ".join(tail)
        super().__init__(message, hint)


class MissingProgram(CommandError):
    """The program is not installed; the message says which package provides it."""


@dataclass(frozen=True)
class Completed:
    """What a finished command printed; `stdout`/`stderr` are text."""

    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str


# Where a missing program comes from on Debian (space-separated packages), so the error can say what to install.
DEBIAN_PACKAGE = {
    "docker": "docker.io",
    "dockerd": "docker.io",
    "debootstrap": "debootstrap",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-aarch64-static": "qemu-user-static",
    "busybox": "busybox-static",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "ip": "iproute2",
    "dmesg": "util-linux",
    "losetup": "mount",
    "fincore": "util-linux-extra",
    "apt-get": "apt",
    "dpkg": "dpkg",
    "dpkg-deb": "dpkg",
    "aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu libc6-dev-arm64-cross",  # cross gcc and its static libc
    "x86_64-linux-gnu-gcc": "gcc-x86-64-linux-gnu libc6-dev-amd64-cross",
    "gcc": "gcc libc6-dev",  # libc6-dev has the static libc that `gcc -static` links
    "htpasswd": "apache2-utils",
    "musl-gcc": "musl-tools",  # gcc against Debian's musl: its headers, libc and loader (musl-dev, musl)
    "dpkg-buildflags": "dpkg-dev",
    "nm": "binutils",
    "systemd-analyze": "systemd",
    "ctr": "containerd",
    "tini-static": "tini",
    "mke2fs": "e2fsprogs",
}


def require_program(name: str) -> str:
    """Return the absolute path of `name`, or raise MissingProgram naming the package to install."""
    path = shutil.which(name)
    if path is None:
        package = DEBIAN_PACKAGE.get(name, name)
        raise MissingProgram(
            [name], None, "", f"{name}: not found on PATH",
            hint=f"Install it: `apt-get install {package}` (or run `make lab`, which installs what the labs need).",
        )
    return path


PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies
_LIBC = ctypes.CDLL(None, use_errno=True)


# An interrupt raised while Python forks runs inside its at-fork handlers, which swallow it and leave logging's
# lock held: the process then hangs at its next log line (seen in CI as a SIGINT or SIGTERM that never ended a
# run). This thread holds them back while it forks; they arrive the moment the child has started.
HELD_WHILE_FORKING = {signal.SIGINT, signal.SIGTERM}
INTERRUPTED_WAIT_S = 30.0  # how long a program started as an interrupt arrived may finish before it is killed


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """`values` set in this process's environment for the block (what the programs it starts, and labkit's own
    settings, read), the previous values back after."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def interrupts_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait (in this thread) until the block ends: for a fork, and for an undo that must not be
    cut between the change undone and its journal record removed."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_WHILE_FORKING)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _unblocked_then(preexec: Callable[[], None] | None) -> Callable[[], None]:
    """A preexec_fn for :func:`spawn`: the child starts with the interrupts this process held while forking."""

    def child() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_WHILE_FORKING)
        if preexec is not None:
            preexec()

    return child


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A preexec_fn: the child is SIGKILLed when `parent` (this process) dies, however it dies.

    A `docker build` or `docker run` left running after a timeout, SIGTERM or SIGKILL of the Python process would
    go on in the engine; killed with it, the CLI drops its connection and the engine cancels the build.
    """

    def arm() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_WHILE_FORKING)  # held by the parent: not for the program
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return arm


def dies_with_parent() -> Callable[[], None]:
    """A preexec_fn for :func:`spawn`: the program is SIGKILLed when this process dies, however it dies (a VM that
    must not outlive the notebook that booted it)."""
    return _die_with_parent(os.getpid())


def run(
    argv: Sequence[str],
    timeout: float,
    *,
    check: bool = True,
    input_text: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    hint: str = "",
) -> Completed:
    """Run `argv` (no shell) for at most `timeout` seconds and return what it printed.

    The command dies with this process (a timeout kills it too). Raises CommandError on a non-zero exit (when
    `check`), on a timeout, or when the program is missing. `hint` is appended to the error message: say there
    what the user can do about it.
    """
    argv = [str(a) for a in argv]
    log.info("run: %s", shlex.join(argv))
    proc: subprocess.Popen[str] | None = None
    try:
        with interrupts_held():
            proc = subprocess.Popen(
                argv, stdin=None if input_text is None else subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True, env=None if env is None else dict(env), cwd=cwd,
                preexec_fn=_die_with_parent(os.getpid()))
    except FileNotFoundError:
        require_program(argv[0])
        raise
    except BaseException:
        # An interrupt held while forking arrives as the hold ends, with the program started: let it finish
        # (bounded) so that what it makes (a `docker run -d`'s container) exists before the caller's cleanup
        # looks for it, then pass the interrupt on. Seen in CI: a container made after its scope was swept.
        if proc is not None:
            try:
                proc.communicate(input_text, timeout=min(timeout, INTERRUPTED_WAIT_S))
            except subprocess.TimeoutExpired:
                pass
            finally:
                proc.kill()
                proc.wait()
        raise
    with proc:  # as subprocess.run: whatever ends the wait (a timeout, an interrupt) kills the program first
        try:
            stdout, stderr = proc.communicate(input_text, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            stdout, stderr = proc.communicate()
            raise CommandError(argv, None, _text(stdout), _text(stderr), hint=hint) from exc
        except BaseException:
            proc.kill()
            raise
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, stdout, stderr, hint=hint)
    return Completed(tuple(argv), proc.returncode, stdout, stderr)


def _text(output: bytes | str | None) -> str:
    if output is None:
        return ""
    return output if isinstance(output, str) else output.decode(errors="replace")


def spawn(argv: Sequence[str], **popen_kwargs: object) -> subprocess.Popen[str]:
    """Start `argv` in the background (for output that must be read while it runs); logged like :func:`run`.

    The caller owns the process and must end it (``terminate``/``kill`` in a ``finally``). An interrupt held while
    it started is raised before the caller gets it: the process is killed first, as no one else could end it.
    """
    argv = [str(a) for a in argv]
    log.info("spawn: %s", shlex.join(argv))
    require_program(argv[0])
    preexec = popen_kwargs.pop("preexec_fn", None)
    process: subprocess.Popen[str] | None = None
    try:
        with interrupts_held():
            process = subprocess.Popen(argv, text=True, preexec_fn=_unblocked_then(preexec),  # type: ignore[call-overload,arg-type]
                                       **popen_kwargs)
    except BaseException:
        if process is not None:
            process.kill()
            process.wait()
        raise
    return process
