"""Section 1: exec format error — the foreign image with its emulator's binfmt_misc entry disabled, then
enabled again."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from labkit.core.results import rows_where
from labkit.core.session import LabSession
from labkit.instruments import arch, containers, images
from labkit.instruments.arch import require_emulation
from labkit.instruments.images import busybox_base
from labkit.labs.arm64_vs_amd64.declaration import EXEC_FORMAT_ERROR, LIMITS, UNAME, platforms


@dataclass(frozen=True)
class ExecFormatResult:
    """`runs`: entry_state (the emulator's binfmt entry disabled / enabled), platform, native, image, command,
    exit_code, output (stdout and stderr as the CLI printed them), exec_format_error."""

    runs: pd.DataFrame

    def row(self, entry_state: str, native: bool) -> pd.Series:
        rows = rows_where(self.runs, entry_state=entry_state, native=native)
        return rows.iloc[0]

    @property
    def failed_without_emulator(self) -> bool:
        r = self.row("disabled", native=False)
        return int(r["exit_code"]) != 0 and bool(r["exec_format_error"])

    @property
    def recovered(self) -> bool:
        """With the entry enabled again the foreign image ran and `uname -m` named the foreign machine."""
        r = self.row("enabled", native=False)
        return int(r["exit_code"]) == 0 and str(r["output"]) == arch.UNAME_MACHINE[str(r["platform"])]

    def conclusion(self) -> str:
        off, on = self.row("disabled", native=False), self.row("enabled", native=False)
        native = self.row("disabled", native=True)
        return (f"**What we measured.** With the emulator's entry disabled, `docker run --platform {off['platform']}` "
                f"exited **{off['exit_code']}** and said: `{off['output']}`. The native image ran meanwhile and "
                f"printed `{native['output']}`: only the foreign binary failed, at `execve`, before any of its code "
                f"ran. With the entry enabled again the same image exited {on['exit_code']} and `uname -m` printed "
                f"**{on['output']}**: the kernel handed the binary to qemu, which reports the machine it emulates.")


def run_exec_format(lab: LabSession) -> ExecFormatResult:
    """`uname -m` in the native and the foreign busybox image, with the foreign platform's binfmt entry disabled
    (restored afterwards, whatever happens) and enabled."""
    lab.require_root("disabling a binfmt_misc entry")

    def experiment() -> pd.DataFrame:
        require_emulation()  # enabled before, so that the run after the restore can show the recovery
        native, foreign = platforms()
        entry = arch.emulator_entry()
        rows = []
        with lab.scope() as scope:
            def attempt(state: str) -> None:
                for platform in (native, foreign):
                    image = images.require_base(lab.engine, busybox_base(platform)).tag
                    done = containers.run_on_platform(scope, image, platform, UNAME, limits=LIMITS)
                    said = containers.said(done)
                    rows.append({"entry_state": state, "platform": platform, "native": platform == native,
                                 "image": image, "command": " ".join(UNAME), "exit_code": done.exit_code,
                                 "output": said, "exec_format_error": EXEC_FORMAT_ERROR in said})

            with arch.entry_disabled(entry):
                attempt("disabled")
            attempt("enabled")
        return pd.DataFrame(rows)

    return ExecFormatResult(lab.measure("exec_format", experiment))
