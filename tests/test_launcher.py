"""`labkit run` under the signals a reader's shell delivers: in a terminal, as a background job of a
non-interactive shell (`nohup make test &` starts it with SIGINT ignored) and in a session of its own (`setsid`,
a CI runner's step). Ctrl-C ends it with status 130; SIGTERM ends it as terminated by SIGTERM (143 in a shell),
as CI runners and systemd expect; either way after the notebook's kernel was stopped."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from labkit.instruments import procfs

ROOT = Path(__file__).resolve().parent.parent
LAUNCH: dict[str, dict[str, Any]] = {
    "terminal": {},
    "nohup-background": {"preexec_fn": lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)},
    "setsid": {"start_new_session": True},
}


def _wait_for_kernel(launcher: subprocess.Popen[str], timeout_s: float = 120) -> int:
    """The kernel process the launcher started (polled from /proc, bounded in time)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and launcher.poll() is None:
        kernels = [pid for pid in procfs.children(launcher.pid)
                   if "ipykernel_launcher" in " ".join(procfs.cmdline(pid))]
        if kernels:
            return kernels[0]
        time.sleep(0.05)
    pytest.fail(f"no kernel started within {timeout_s} s (launcher exit {launcher.poll()})")


@pytest.mark.parametrize("launch", list(LAUNCH))
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_the_launcher_stops_on_a_signal_however_it_was_started(launch: str, signum: signal.Signals,
                                                               tmp_path: Path) -> None:
    launcher = subprocess.Popen([sys.executable, "-m", "labkit", "run", "--mode", "replay", "--output", str(tmp_path),
                                 "01"], cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                **LAUNCH[launch])
    try:
        kernel = _wait_for_kernel(launcher)
        launcher.send_signal(signum)
        _, stderr = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert "interrupted" in stderr, stderr
    assert launcher.returncode == (130 if signum == signal.SIGINT else -signal.SIGTERM), stderr
    assert not Path(f"/proc/{kernel}").exists(), "the notebook's kernel outlived its launcher"
