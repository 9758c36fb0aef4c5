"""Section 2: ``docker stop`` per CMD form: how long it takes and the exit code the engine reports."""

from __future__ import annotations

import itertools
import time
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from typing import Any

import pandas as pd

from labkit.core.session import LabSession
from labkit.errors import BadParameter
from labkit.instruments import containers, measure, procfs
from labkit.labs.pitfalls_and_security.declaration import (
    PROBE,
    check_repeats,
    limits_for,
    probe_argv,
    probe_images,
    wait_ready,
)

SHELL_COMPOUND = "shell form, compound command"
SHELL_SINGLE = "shell form, one command"
EXEC_PLAIN = "exec form, no handler"
EXEC_HANDLER = "exec form, SIGTERM handler"
INIT = "--init, exec form, no handler"
WAIT = f"python3 {PROBE} wait"
# Each form: the Dockerfile line, the command the engine stores for it (a shell-form CMD is stored as
# ["/bin/sh", "-c", "<line>"]: that is what `docker inspect` shows), and docker run options.
FORMS: dict[str, tuple[str, list[str], dict[str, Any]]] = {
    SHELL_COMPOUND: (f"CMD {WAIT}; echo stopped", ["/bin/sh", "-c", f"{WAIT}; echo stopped"], {}),
    SHELL_SINGLE: (f"CMD {WAIT}", ["/bin/sh", "-c", WAIT], {}),
    EXEC_PLAIN: (f'CMD ["python3", "{PROBE}", "wait"]', probe_argv("wait"), {}),
    EXEC_HANDLER: (f'CMD ["python3", "{PROBE}", "wait", "--exit-on-sigterm"]',
                   probe_argv("wait", "--exit-on-sigterm"), {}),
    INIT: (f'CMD ["python3", "{PROBE}", "wait"] + docker run --init', probe_argv("wait"), {"init": True}),
}
DEFAULT_TIMEOUT_S = 10  # docker stop's default grace period before SIGKILL
# Between two stops' starts in a round, s: a prompt stop takes about 0.1 s, so each is over before the next begins,
# and a waiting one ends a grace period later, after the round's last has begun (below the grace period / forms).
STAGGER_S = 1.0
PROMPT_S = 0.2  # closer than this, one stop's SIGTERM or teardown may have slowed another's
SIGTERM_EXIT, SIGKILL_EXIT = 143, 137  # 128 + the signal's number


@dataclass(frozen=True)
class StopResult:
    """`stops`: form, repeat, position (in its round), dockerfile_cmd, pid1 (PID 1's command line, read from the
    host), stop_timeout_s (docker stop -t), started_s (when its docker stop call began, s after the round's
    first; absent in recordings made one stop after another), stop_s (the docker stop call, s), exit_code
    (State.ExitCode)."""

    stops: pd.DataFrame

    @property
    def closest_s(self) -> float | None:
        """The shortest time (s) between two stops' starts or ends in one round: how near one stop's work came to
        another's (None when the stops ran one after another)."""
        if "started_s" not in self.stops.columns:
            return None
        gaps = []
        for _, stops in self.stops.groupby("repeat"):
            moments = sorted((at, index) for index, row in stops.iterrows()
                             for at in (row["started_s"], row["started_s"] + row["stop_s"]))
            gaps += [later - at for (at, first), (later, second) in itertools.pairwise(moments) if first != second]
        return float(min(gaps)) if gaps else None

    @property
    def timeout_s(self) -> int:
        return int(self.stops["stop_timeout_s"].iloc[0])

    def of(self, form: str) -> pd.DataFrame:
        return self.stops[self.stops["form"] == form]

    def exit_codes(self, form: str) -> set[int]:
        return set(self.of(form)["exit_code"].astype(int))

    def median_s(self, form: str) -> float:
        return float(self.of(form)["stop_s"].median())

    def waited(self, form: str) -> bool:
        """Every stop of `form` ended in SIGKILL (137) after at least the grace period."""
        rows = self.of(form)
        return bool((rows["exit_code"] == SIGKILL_EXIT).all() and (rows["stop_s"] >= self.timeout_s).all())

    def prompt(self, form: str) -> bool:
        """Every stop of `form` ended before the grace period, with the program's own exit (0 or 143)."""
        rows = self.of(form)
        return bool(rows["exit_code"].isin([0, SIGTERM_EXIT]).all() and (rows["stop_s"] < self.timeout_s).all())

    def pid1(self, form: str) -> str:
        return str(self.of(form)["pid1"].iloc[0])

    def sh_execs_single_command(self) -> bool:
        """Whether /bin/sh replaced itself with the one command (then PID 1 is python3, not sh)."""
        return not self.pid1(SHELL_SINGLE).startswith("/bin/sh")

    def table(self) -> pd.DataFrame:
        """Per form: the Dockerfile line, PID 1, the median stop time with its interval, and the exit codes."""
        rows = []
        for form in FORMS:
            low, high, coverage = measure.median_interval(self.of(form)["stop_s"].to_numpy())
            rows.append({"form": form, "Dockerfile": FORMS[form][0], "PID 1": self.pid1(form),
                         "n": len(self.of(form)), "median stop (s)": round(self.median_s(form), 2),
                         "interval (s)": f"{low:.2f}–{high:.2f} ({coverage:.0%})" if len(self.of(form)) > 1
                         else "— (n = 1)",
                         "exit codes": ", ".join(map(str, sorted(self.exit_codes(form))))})
        return pd.DataFrame(rows)

    def conclusion(self) -> str:
        shell = "replaced itself with it (`exec`)" if self.sh_execs_single_command() else \
            "stayed PID 1 and ran it as its child"
        quick = (f" (quick mode: `docker stop -t {self.timeout_s}` instead of the default {DEFAULT_TIMEOUT_S} s)"
                 if self.timeout_s != DEFAULT_TIMEOUT_S else "")
        return (f"**What we measured{quick}.** With the shell form, `/bin/sh` stays PID 1 for a compound command "
                f"and, for a single command, {shell} on this image (dash). Shell form, compound: median "
                f"{self.median_s(SHELL_COMPOUND):.2f} s, exit {sorted(self.exit_codes(SHELL_COMPOUND))}; one "
                f"command: {self.median_s(SHELL_SINGLE):.2f} s, exit {sorted(self.exit_codes(SHELL_SINGLE))}. "
                f"Exec form **without a handler** is no better: {self.median_s(EXEC_PLAIN):.2f} s, exit "
                f"{sorted(self.exit_codes(EXEC_PLAIN))} — the kernel does not deliver a signal to a namespace's "
                f"PID 1 that has no handler for it. With a handler: {self.median_s(EXEC_HANDLER):.2f} s, exit "
                f"{sorted(self.exit_codes(EXEC_HANDLER))}; under `--init` (PID 1 `{self.pid1(INIT)}` forwards the "
                f"signal, the program dies of it): {self.median_s(INIT):.2f} s, exit "
                f"{sorted(self.exit_codes(INIT))}." + self._side_by_side())

    def _side_by_side(self) -> str:
        closest = self.closest_s
        if closest is None:
            return ""
        apart = self.stops.sort_values(["repeat", "position"]).groupby("repeat")["started_s"].diff().median()
        return (f" A round's stops began {apart:.1f} s apart, each in a call of its own, and no stop began or "
                f"ended within {closest:.2f} s of another's start or end: "
                + ("each prompt stop was over before the next began, and the waiting ones only waited side by side."
                   if closest >= PROMPT_S else
                   "some came close enough to slow each other; read their times with care."))


def _stop_at(container: Any, begun_ns: int, offset_s: float, timeout_s: int) -> tuple[float, float]:
    """``docker stop -t timeout_s`` begun `offset_s` s after `begun_ns` (perf_counter ns): when it began (s after
    `begun_ns`) and how long the call took (s)."""
    time.sleep(max(0.0, offset_s - (time.perf_counter_ns() - begun_ns) / 1e9))
    started = time.perf_counter_ns()
    container.stop(timeout=timeout_s)
    return (started - begun_ns) / 1e9, (time.perf_counter_ns() - started) / 1e9


def run_stop(lab: LabSession, repeats: int = 3, stop_timeout_s: int = DEFAULT_TIMEOUT_S,
             memory_limit_mib: int = 64) -> StopResult:
    """Each form started, waited for until its program says it is ready, then ``docker stop -t stop_timeout_s``
    timed; `repeats` rounds, the forms in an order rotated round by round. A round's stops begin `STAGGER_S` s
    apart (less when the grace period is short), each in a call of its own, so that the round waits out about one
    grace period instead of one per form that ignores SIGTERM, while no stop's SIGTERM or end meets another's."""
    check_repeats(repeats)
    if isinstance(stop_timeout_s, bool) or not isinstance(stop_timeout_s, int) or not 1 <= stop_timeout_s <= 60:
        raise BadParameter(f"stop_timeout_s={stop_timeout_s!r} is out of range.",
                           f"Give whole seconds from 1 to 60 (docker stop's default is {DEFAULT_TIMEOUT_S}).")
    limits = limits_for(lab, memory_limit_mib)
    lab.require_root("reading PID 1's command line in /proc")

    stagger_s = min(STAGGER_S, stop_timeout_s / len(FORMS))

    def experiment() -> pd.DataFrame:
        client = lab.engine
        rows = []
        names = list(FORMS)
        with lab.scope() as scope, probe_images(client, scope) as made:
            for repeat in range(repeats):
                order = names[repeat % len(names):] + names[:repeat % len(names)]
                with ExitStack() as round_:
                    ready = []
                    for position, form in enumerate(order):
                        line, argv, options = FORMS[form]
                        container = round_.enter_context(containers.running(
                            client, scope, made.root, argv, stem=f"stop-{repeat}-{position}", limits=limits,
                            **options))
                        wait_ready(container)
                        ready.append((form, line, container,
                                      " ".join(procfs.cmdline(containers.host_pid(client, container.id)))))
                    begun_ns = time.perf_counter_ns()
                    timed = measure.run_together(*(
                        partial(_stop_at, container, begun_ns, position * stagger_s, stop_timeout_s)
                        for position, (_, _, container, _) in enumerate(ready)))
                    for position, ((form, line, container, pid1), (started_s, stop_s)) in enumerate(
                            zip(ready, timed, strict=True)):
                        container.reload()
                        rows.append({"form": form, "repeat": repeat, "position": position, "dockerfile_cmd": line,
                                     "pid1": pid1, "stop_timeout_s": stop_timeout_s, "started_s": started_s,
                                     "stop_s": stop_s, "exit_code": int(container.attrs["State"]["ExitCode"])})
        return pd.DataFrame(rows)

    return StopResult(lab.measure("stop", experiment, repeats=repeats, stop_timeout_s=stop_timeout_s,
                                  **limits.record()))
