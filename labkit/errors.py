"""One family of errors a user can act on: each carries a `hint` that says what to do.

The CLI prints the message and the hint of a :class:`LabkitError` and nothing else; any other exception is a
bug and shows its traceback. Subclasses also derive from the built-in type a caller would expect
(``ValueError`` for bad input, ``LookupError`` for something not made yet, …) so ``except ValueError`` works.
"""

from __future__ import annotations


class LabkitError(Exception):
    """An error whose message says what went wrong and whose `hint` says what to do about it."""

    def __init__(self, message: str, hint: str = "") -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message}\n{hint}" if hint else message)


class BadParameter(LabkitError, ValueError):
    """A parameter is outside what is allowed; the message names the parameter as the caller passed it."""


class NotPrepared(LabkitError, LookupError):
    """Something an experiment needs (a base image, a rootfs, recorded results) is not made yet."""


class HostUnsupported(LabkitError, RuntimeError):
    """This host lacks a feature an experiment needs (root, a cgroup controller, binfmt, a program)."""


class NeedsRoot(HostUnsupported, PermissionError):
    """A live experiment needs uid 0."""


class EngineUnavailable(LabkitError, RuntimeError):
    """No Docker Engine answers; the hint says how to start one."""


class EngineLost(EngineUnavailable):
    """The engine stopped answering in the middle of a run; the message names where the partial results are."""


class EngineError(LabkitError, RuntimeError):
    """The engine refused or failed a request (the docker SDK's APIError, a failed build, a container that
    failed): the message carries the engine's own explanation, the hint what to try."""


class EngineTimeout(LabkitError, TimeoutError):
    """The engine answers, but sent nothing for longer than labkit waits (LABKIT_ENGINE_TIMEOUT)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is so that its cleanup runs as after Ctrl-C; the process then ends as
    terminated by SIGTERM (exit status 143), which is what CI runners and systemd expect."""
