"""What the process a scratch container was started with ended with: the raw status and the shell-style code.

The process labkit waits for is ``unshare`` (the enter shell execs it). util-linux 2.38's ``unshare --fork``
passes on its child's (PID 1's) exit code, and a death by signal N by raising N on itself — except for
SIGKILL, where its ``signal(SIGKILL, SIG_DFL)`` fails (EINVAL) and it exits 1 after printing
``unshare: sigprocmask unblock failed: Invalid argument``. Only SIGKILL (and SIGSTOP, which does not end a
process) gets there, so that message with exit 1 means "PID 1 was SIGKILLed" (e.g. by the OOM killer) and
:attr:`ExitStatus.code` reports it as 137, like Docker; :attr:`ExitStatus.raw` keeps what really happened.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

UNSHARE_SIGKILL_MESSAGE = "unshare: sigprocmask unblock failed: Invalid argument"
SIGKILLED_RAW = f"unshare exited 1: {UNSHARE_SIGKILL_MESSAGE.removeprefix('unshare: ')}"  # ExitStatus.raw for it


@dataclass(frozen=True)
class ExitStatus:
    """``returncode`` as Popen reports it (negative: killed by that signal) and unshare's last stderr line."""

    returncode: int
    last_stderr_line: str = ""

    @classmethod
    def of(cls, returncode: int, stderr: str) -> ExitStatus:
        lines = stderr.rstrip().splitlines()
        return cls(returncode, lines[-1].rstrip() if lines else "")

    @property
    def pid1_sigkilled(self) -> bool:
        """unshare's way of saying PID 1 died of SIGKILL (see the module docstring)."""
        return self.returncode == 1 and self.last_stderr_line.endswith(UNSHARE_SIGKILL_MESSAGE)

    @property
    def code(self) -> int:
        """The exit code as a shell reports it: 128 + N for a death by signal N (137 for SIGKILL)."""
        if self.pid1_sigkilled:
            return 128 + signal.SIGKILL
        return 128 - self.returncode if self.returncode < 0 else self.returncode

    @property
    def raw(self) -> str:
        """What unshare really ended with: ``"exited 0"``, ``"killed by signal 15"``, or for the SIGKILL case
        ``"unshare exited 1: sigprocmask unblock failed: Invalid argument"``."""
        if self.pid1_sigkilled:
            return SIGKILLED_RAW
        if self.returncode < 0:
            return f"killed by signal {-self.returncode}"
        return f"exited {self.returncode}"


def why_code(raw: str, code: int) -> str:
    """In words, for a reader: why a process that ended as `raw` (:attr:`ExitStatus.raw`) is reported as `code`."""
    if raw == SIGKILLED_RAW:
        return (f"util-linux's unshare ends so when its PID 1 dies of SIGKILL (it cannot pass SIGKILL on by "
                f"raising it on itself), so labkit reports it as {code}, like Docker's 128 + SIGKILL")
    if raw.startswith("killed by signal"):
        return f"reported as {code} (128 + the signal's number), as Docker reports it"
    return f"exit code {code}"
