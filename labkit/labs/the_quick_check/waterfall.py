"""Sections 1 and 2: the bases' sizes, every step built cold and its image examined, then code-only rebuilds (all
steps interleaved, round by round) and one dependency-change rebuild per step."""

from __future__ import annotations

import itertools
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pandas as pd

from labkit.core.results import rows_where
from labkit.core.session import LabSession
from labkit.errors import BadParameter, LabkitError, NotPrepared
from labkit.instruments import builds, containers, measure, npmcache, procfs, undo
from labkit.instruments.engine import Scope
from labkit.instruments.limits import Limits
from labkit.labs.the_quick_check.declaration import (
    BASES_TABLE,
    DEPENDENCY_CHANGE,
    DEV_DEPENDENCY,
    EDITED_FILE,
    GREETING,
    INSTALL_COMMANDS,
    SECRET_FILE,
    STEP_NAMES,
    Step,
    base_tags,
    build_cache_image,
    fill,
    manifests,
    measure_bases,
    stamp_version,
    steps_of,
    write_context,
)

COLD, CODE, DEPENDENCY = "cold", "code-only", "dependency change"
CHAPTER_TARGET_BYTES = 200e6  # the quick check's goal: an image under 200 MB
CHAPTER_TARGET_S = 60.0  # … and a rebuild under 60 s
CHAPTER_CODE_ONLY_S = 10.0  # the chapter's answer: about 10 s per code-only rebuild once dependencies are cached
CHAPTER_FIRST_BYTES, CHAPTER_FIRST_S = 1.6e9, 8 * 60.0  # the teammate's image and CI time the chapter starts from
CHAPTER_FULL_BASE_BYTES, CHAPTER_SLIM_BASE_BYTES = 1e9, 250e6  # node:20 and node:20-slim in the chapter's table
DEFAULT_STOP_TIMEOUT_S = 10  # docker stop's default grace period
READY_TIMEOUT_S = 30.0
READY_LINE = b"listening on"  # what the service prints once it listens


def check_stop_timeout(stop_timeout_s: int) -> None:
    if isinstance(stop_timeout_s, bool) or not isinstance(stop_timeout_s, int) or not 1 <= stop_timeout_s <= 60:
        raise BadParameter(f"stop_timeout_s={stop_timeout_s!r} is out of range.",
                           f"Give whole seconds from 1 to 60 (docker stop's default is {DEFAULT_STOP_TIMEOUT_S}).")


def installs(build: builds.Build) -> bool:
    """Whether the build ran a dependency install (an executed step whose instruction runs npm ci or npm install)."""
    return any(not step.cached and not step.base and any(c in step.instruction for c in INSTALL_COMMANDS)
               for step in build.log.steps)


def _build_row(step: Step, kind: str, repeat: int, position: int, build: builds.Build) -> dict[str, Any]:
    return {"step": step.name, "kind": kind, "repeat": repeat, "position": position, "wall_s": build.wall_s,
            "executed": build.log.executed, "cached": build.log.cached, "installs": installs(build),
            "first_executed": build.log.first_executed or "", "context_bytes": build.log.context_bytes}


def edit_source(context: Path, number: int, run: str) -> None:
    """A code-only change: edit `number` of run `run` in the service's greeting (no earlier run's build cache holds
    the result)."""
    source = context / EDITED_FILE
    text = source.read_text()
    start = text.index("export const GREETING")
    end = text.index("\n", start)
    source.write_text(text[:start] + GREETING.replace('check"', f'check (edit {number} of {run})"') + text[end:])


def change_dependencies(context: Path, step: Step, run: str) -> None:
    """A dependency change: the manifests with one runtime dependency added (the step's own version kept)."""
    for name in npmcache.MANIFESTS:
        shutil.copy2(DEPENDENCY_CHANGE / name, context / name)
    stamp_version(context, step, run)


@dataclass(frozen=True)
class WaterfallResult:
    """`builds`: one row per build — step, kind (cold, code-only, dependency change), repeat, position (in its
    round), wall_s (the docker build command, s), executed and cached (steps, from BuildKit's log), installs
    (whether an executed step ran npm ci or npm install), first_executed (where the cache broke), context_bytes.
    `images`: one row per step's cold-built image — size_bytes, layers, context_bytes, cold_s, user (its USER),
    uid (of its PID 1, read from the host), secret_file (whether /app/.env is in its file system),
    dev_dependency_files (files of the dev dependency typescript under /app/node_modules), stop_timeout_s, stop_s
    (docker stop, s), exit_code and pid1 (its command line). The file system is read in the running container: a
    file a later layer deleted would not show, and no step's Dockerfile deletes either. `bases`: one row per base —
    base, tag, size_bytes (as the engine holds it); empty in a replay of a recording made before it was measured."""

    builds: pd.DataFrame
    images: pd.DataFrame
    bases: pd.DataFrame

    @property
    def steps(self) -> list[str]:
        return list(self.images["step"])

    @property
    def bases_recorded(self) -> bool:
        return not self.bases.empty

    def base_bytes(self, base: str) -> int:
        return int(self.bases.set_index("base").loc[base, "size_bytes"])

    @staticmethod
    def runtime_base(step: str) -> str:
        """The base `step`'s image is made on (its Dockerfile's last FROM)."""
        return steps_of((step,))[0].runtime_base

    def image(self, step: str) -> pd.Series:
        return self.images.set_index("step").loc[step]

    def size_bytes(self, step: str) -> int:
        return int(self.image(step)["size_bytes"])

    def of(self, kind: str, step: str) -> pd.DataFrame:
        return rows_where(self.builds, kind=kind, step=step)

    def code_only(self, step: str) -> measure.Summary:
        """Code-only rebuild time of `step` (s): median and its order-statistic interval."""
        return measure.summarize(self.of(CODE, step)["wall_s"].tolist())

    def dependency_s(self, step: str) -> float:
        return float(self.of(DEPENDENCY, step)["wall_s"].median())

    def code_installs(self, step: str) -> bool:
        """Whether any code-only rebuild of `step` ran the dependency install."""
        return bool(self.of(CODE, step)["installs"].any())

    @property
    def first(self) -> str:
        return self.steps[0]

    @property
    def final(self) -> str:
        return self.steps[-1]

    def secret_shipped(self, step: str) -> bool:
        return bool(self.image(step)["secret_file"])

    def table(self) -> pd.DataFrame:
        """The waterfall, one row per step: size, the base it is made on (with its size where recorded), code-only
        rebuild (median, interval), dependency rebuild, cold build, context sent, stop time, PID 1's uid, whether
        the secret is in the image and the dev dependency's files."""
        rows = []
        for step in self.steps:
            image, code, base = self.image(step), self.code_only(step), self.runtime_base(step)
            rows.append({"step": step, "image (MB)": round(image["size_bytes"] / 1e6, 1), "runtime base": base,
                         "base (MB)": round(self.base_bytes(base) / 1e6, 1) if self.bases_recorded else None,
                         "code-only rebuild (s)": round(code.median, 2),
                         "interval (s)": f"{code.ci_low:.2f}–{code.ci_high:.2f} ({code.coverage:.0%})"
                         if code.n > 1 else "— (n = 1)",
                         "runs npm on code edit": "yes" if self.code_installs(step) else "no",
                         "dependency rebuild (s)": round(self.dependency_s(step), 2),
                         "cold build (s)": round(float(image["cold_s"]), 2),
                         "context (MB)": round(float(image["context_bytes"]) / 1e6, 2),
                         "docker stop (s)": round(float(image["stop_s"]), 2), "exit": int(image["exit_code"]),
                         "PID 1 uid": int(image["uid"]),
                         ".env in image": "yes" if image["secret_file"] else "no",
                         "typescript files": int(image["dev_dependency_files"])})
        return pd.DataFrame(rows).set_index("step")

    def waterfall(self) -> pd.DataFrame:
        """Per step (index): size (MB) and code-only rebuild median with its interval (s), for the plot."""
        rows = {step: {"size_mb": self.size_bytes(step) / 1e6, "code_s": self.code_only(step).median,
                       "code_low_s": self.code_only(step).ci_low, "code_high_s": self.code_only(step).ci_high}
                for step in self.steps}
        return pd.DataFrame.from_dict(rows, orient="index")

    def base_share(self, step: str) -> str:
        """How much of `step`'s image is its runtime base, in words; needs the bases' sizes (`bases_recorded`)."""
        base, size = self.runtime_base(step), self.size_bytes(step)
        base_bytes = self.base_bytes(base)
        return (f"{step}'s runtime base {base} alone is {base_bytes / 1e6:.1f} MB, {base_bytes / size:.0%} of its "
                f"{size / 1e6:.1f} MB image (its Dockerfile adds {(size - base_bytes) / 1e6:.1f} MB)")

    def conclusion(self) -> str:
        first, final = self.first, self.final
        first_code, final_code = self.code_only(first), self.code_only(final)
        quiet = [s for s in self.steps if not self.code_installs(s)]
        share = f" {self.base_share(final)}." if self.bases_recorded else ""
        return (f"**What we measured.** The teammate's image is **{self.size_bytes(first) / 1e6:.0f} MB**; "
                f"a code-only rebuild of it takes {first_code.median:.1f} s and reruns the install "
                f"({'yes' if self.code_installs(first) else 'no'}). After every fix, the image is "
                f"**{self.size_bytes(final) / 1e6:.0f} MB** ({self.size_bytes(final) / self.size_bytes(first):.0%} "
                f"of the first) and a code-only rebuild takes {final_code.median:.1f} s "
                f"({final_code.median / first_code.median:.0%} of the first). The steps whose code-only rebuilds ran "
                f"no npm install: {', '.join(quiet) or 'none'}. The fake `.env` ships in "
                f"{', '.join(s for s in self.steps if self.secret_shipped(s)) or 'no step'}; PID 1 runs as uid "
                f"{int(self.image(final)['uid'])} in the last image, whose `docker stop` took "
                f"{float(self.image(final)['stop_s']):.2f} s (the first: {float(self.image(first)['stop_s']):.2f} s)."
                f"{share}")


def run_waterfall(lab: LabSession, steps: tuple[str, ...] = STEP_NAMES, code_repeats: int = 3,
                  stop_timeout_s: int = DEFAULT_STOP_TIMEOUT_S, memory_limit_mib: int = 256) -> WaterfallResult:
    """The bases' sizes read from the engine; each of `steps` built cold (``--no-cache``) from its own copy of the
    teammate's checkout and its image examined (size, layers, the secret, the dev dependency, PID 1's uid,
    ``docker stop -t stop_timeout_s``); then `code_repeats` rounds of code-only rebuilds (a new edit of the greeting
    each), the steps in an order rotated round by round; then one rebuild per step after a dependency was added.
    Every build runs with ``--network none``, npm reading the packages from the cache image."""
    chosen = steps_of(steps)
    measure.validate_repeats(code_repeats, names=("code_repeats", "warmup"))
    check_stop_timeout(stop_timeout_s)
    limits = Limits.of(memory_mib=memory_limit_mib, pids=64, cpus=1.0)
    lab.require_root("reading PID 1's uid and command line in /proc")
    if lab.live and not (npmcache.folder(manifests()) / npmcache.COMPLETE).exists():
        raise NotPrepared("the npm cache of notebook 14's app is not fetched yet.", "Run `labkit setup 14`.")

    def experiment() -> dict[str, pd.DataFrame]:
        client = lab.engine
        tags = base_tags(client)
        cache = npmcache.folder(manifests())
        build_rows: list[dict[str, Any]] = []
        image_rows: list[dict[str, Any]] = []
        with lab.scope() as scope, undo.temporary_folder("labkit-quick-check-") as scratch:
            folder = Path(scratch)
            cache_image = build_cache_image(folder, scope, cache)
            contexts = {}
            for step in chosen:
                contexts[step.name] = write_context(folder / step.name, step, cache, scope.scope_id)
                (contexts[step.name] / "Dockerfile").write_text(fill(step.template, cache_image, tags))

            def build(step: Step, no_cache: bool = False) -> builds.Build:
                return builds.build(contexts[step.name], f"labkit-quick-check-{step.name}:{scope.scope_id}", scope,
                                    no_cache=no_cache)

            for step in chosen:
                cold = build(step, no_cache=True)
                build_rows.append(_build_row(step, COLD, 0, 0, cold))
                image_rows.append(_examine(client, scope, step, cold, limits, stop_timeout_s))
            done: list[tuple[Step, builds.Build]] = []
            edits = itertools.count(1)

            def code_rebuild(step: Step) -> Callable[[], None]:
                def action() -> None:
                    edit_source(contexts[step.name], next(edits), scope.scope_id)
                    done.append((step, build(step)))
                return action

            order = measure.compare({step.name: code_rebuild(step) for step in chosen}, code_repeats, warmup=0)
            for (step, rebuilt), (_, timing) in zip(done, order.iterrows(), strict=True):
                build_rows.append(_build_row(step, CODE, int(timing["repeat"]), int(timing["position"]), rebuilt))
            for position, step in enumerate(chosen):
                change_dependencies(contexts[step.name], step, scope.scope_id)
                build_rows.append(_build_row(step, DEPENDENCY, 0, position, build(step)))
        return {"builds": pd.DataFrame(build_rows), "images": pd.DataFrame(image_rows)}

    bases = lab.unrecorded(BASES_TABLE)
    if bases is None:
        bases = lab.measure(BASES_TABLE, lambda: measure_bases(lab.engine))
    tables = lab.record("waterfall", ("builds", "images"), experiment, steps=list(steps), code_repeats=code_repeats,
                        stop_timeout_s=stop_timeout_s, **limits.record())
    return WaterfallResult(tables["builds"], tables["images"], bases)


# Run by node in the service's container: whether /app/.env exists and how many files the dev dependency holds.
LOOK_INSIDE = (
    "const fs = require('fs'), path = require('path'); let files = 0;"
    "const walk = (d) => { for (const e of fs.readdirSync(d, {withFileTypes: true})) {"
    " if (e.isDirectory()) walk(path.join(d, e.name)); else if (e.isFile()) files++; } };"
    f"const dev = '/app/node_modules/{DEV_DEPENDENCY}'; if (fs.existsSync(dev)) walk(dev);"
    f"console.log(JSON.stringify({{secret: fs.existsSync('/app/{SECRET_FILE}'), files}}));"
)


def _examine(client: docker.DockerClient, scope: Scope, step: Step, cold: builds.Build, limits: Limits,
             stop_timeout_s: int) -> dict[str, Any]:
    """The cold-built image of `step`: its size and layers, then a container of it started and waited for, what
    its file system holds (read by node inside it), PID 1's uid and command line (from the host), and the stop."""
    attributes = client.images.get(cold.image_id).attrs
    with containers.running(client, scope, cold.image_id, [], stem=f"stop-{step.name}", limits=limits) as container:
        _wait_ready(container)
        inside = json.loads(containers.exec_text(container, ["node", "-e", LOOK_INSIDE]))
        pid = containers.host_pid(client, container.id)
        pid1, uid = " ".join(procfs.cmdline(pid)), procfs.read_status(pid).uid
        started = time.perf_counter_ns()
        container.stop(timeout=stop_timeout_s)
        stop_s = (time.perf_counter_ns() - started) / 1e9
        container.reload()
        exit_code = int(container.attrs["State"]["ExitCode"])
    return {"step": step.name, "size_bytes": int(attributes["Size"]), "layers": len(attributes["RootFS"]["Layers"]),
            "context_bytes": cold.log.context_bytes, "cold_s": cold.wall_s, "user": attributes["Config"]["User"],
            "uid": uid, "secret_file": bool(inside["secret"]), "dev_dependency_files": int(inside["files"]),
            "stop_timeout_s": stop_timeout_s, "stop_s": stop_s, "exit_code": exit_code, "pid1": pid1}


def _wait_ready(container: Any) -> None:
    """Return once the service says it listens; LabkitError with its log if it exits or stays silent."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if READY_LINE in container.logs():
            return
        container.reload()
        if container.status == "exited":
            break
        time.sleep(0.05)
    raise LabkitError(f"the service in {container.name} did not say it listens within {READY_TIMEOUT_S:.0f} s: "
                      f"{container.logs().decode(errors='replace')[-500:]!r}",
                      "Its image is built from labkit/assets/quick_check: run the notebook again, or build it by hand.")
