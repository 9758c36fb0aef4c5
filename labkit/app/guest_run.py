"""Notebooks executed inside the lab machine (notebook 15's guest): cgroup v2, Docker's systemd driver, its own kernel.

The guest sees this checkout, labkit's cache, the virtualenv and the Python interpreter behind it over 9p, read-only
and at the same paths as on the host; the checkout and the cache each lie below an overlay whose writes stay in the
guest (its disk is a snapshot, dropped at power-off). So the guest runs this very labkit on the host's cached
assets, with no network and no second install. The base images the notebooks use are saved from the host's engine
and loaded into the guest's. The guest's ``labkit run`` writes the executed notebooks and their results into the
boot's share; they come back to build/guest/ (a quick run's to build/guest/quick/), or with ``record`` to
data/results/guest/, each with its provenance: the guest's fingerprint (kernel, cgroup v2, the engine's cgroup
driver) and the host's commit, which the guest reads from the same files.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from labkit import paths
from labkit.app import catalog, runner
from labkit.core import session
from labkit.errors import BadParameter, NotPrepared
from labkit.instruments import engine, images, shell, space
from labkit.instruments.vm import accelerator, guest
from labkit.instruments.vm.kvm import QEMU

MEMORY_MIB = 3072
"""The guest's memory (MiB) for a notebook run: systemd, dockerd, Jupyter's kernel and the notebook's containers."""
CPUS = 2
BOOT_ALLOWANCE_S = 300.0
"""Seconds allowed beside the notebooks' own timeouts: boot, mounts and loading the bases (about 40 s under TCG).
A guest that has not even mounted its shares by then has stalled: it is booted again, once."""
LOAD_TIMEOUT_S = 600.0
"""Seconds one base's `docker load` may take in the guest (a few seconds each under TCG); past it the job ends, so
a guest engine that hangs does not hold the boot until its timeout."""
UNSUPPORTED = {"15-the-lab-machine": "it boots the lab machine itself: run it on the host (`labkit run 15`)"}
REPORT = "guest-run.json"  # in each notebook's results: the boot's timeline, the guest, how each notebook went
CONSOLE = "console.log"  # beside the executed notebooks: every line the guest printed
_OUT = "/labkit/out"
_SHARES = """set -e
ro() {{ mkdir -p "$2" && mount -t 9p -o {nine_p},ro,cache=loose "$1" "$2"; }}
over() {{ ro "$1" "/mnt/host/$1"; mkdir -p "/var/lib/labkit-overlay/$1/up" "/var/lib/labkit-overlay/$1/work" "$2"
  mount -t overlay overlay -o "lowerdir=/mnt/host/$1,upperdir=/var/lib/labkit-overlay/$1/up,\
workdir=/var/lib/labkit-overlay/$1/work" "$2"; }}
over project {project}
over cache {cache}
{venv}
{python}
mark shares
for base in /labkit/base-*.tar; do [ ! -e "$base" ] || timeout {load_s} docker load -q -i "$base"; done
mark bases
"""
_RUN = """cd {project}
set +e
LABKIT_RESULTS_DIR={out}/results LABKIT_GIT_COMMIT={commit} \
  {labkit} run --fresh {quick}--timeout {timeout} --output {out}/notebooks {notebooks}
status=$?
mark notebooks
exit $status
"""


@dataclass(frozen=True)
class GuestSetting:
    """What a boot of the lab machine for `notebooks` needs: the `made` guest, their `bases` (image tags) as
    `archives` (file name → docker save tar), the host folders shared `read_only` by 9p tag, and `script`, the
    job's first part: it mounts those shares at their host paths and loads the bases."""

    notebooks: list[Path]
    made: guest.GuestImage
    bases: list[str]
    archives: dict[str, bytes]
    read_only: dict[str, Path]
    script: str


@dataclass(frozen=True)
class GuestNotebooks:
    """One boot that executed notebooks: `runs` (how each went, from the guest's run report), `marks` (seconds
    from QEMU's start: kernel, systemd, default-target, docker-ready, shares, bases, notebooks, job-done, off),
    `notebooks_dir` and `results_dir` (where the executed copies and the results were put on the host)."""

    runs: list[runner.NotebookRun]
    marks: dict[str, float]
    status: int | None
    completed: bool
    notebooks_dir: Path
    results_dir: Path

    @property
    def failed(self) -> list[runner.NotebookRun]:
        return [r for r in self.runs if r.status != "ok"]


def destinations(quick: bool, record: bool) -> tuple[Path, Path]:
    """Where a guest run's executed notebooks and results go on the host: build/guest/[quick/]{notebooks,results},
    results in data/results/guest/ when recorded (a second host beside the host's own data/results/)."""
    base = paths.build_dir() / "guest" / ("quick" if quick else "")
    results = paths.recorded_results_dir() / "guest" if record else base / "results"
    return base / "notebooks", results


def interpreter_share(made: guest.GuestImage) -> Path | None:
    """The interpreter folder to share, or None when the virtualenv's interpreter is the system's (/usr), which
    the guest has too: then its version must be the host's (Debian 12's python3 on both); refused otherwise."""
    prefix = Path(sys.base_prefix).resolve()
    if not prefix.is_relative_to("/usr"):
        return prefix
    versions = made.manifest.get("versions", {})
    theirs = str(versions.get("python3", "?")) if isinstance(versions, dict) else "?"
    ours = f"{sys.version_info.major}.{sys.version_info.minor}"
    if not theirs.startswith(ours + "."):
        raise NotPrepared(f"the virtualenv's interpreter is the system's Python {ours} ({prefix}), and the lab "
                          f"machine's python3 is {theirs}: the guest cannot run this virtualenv.",
                          "Make the virtualenv from a Python outside /usr (e.g. `PYTHON=/opt/python3.11/bin/python3 "
                          "make test` after removing .venv), or from Debian 12's python3.")
    return None


def check(notebooks: list[Path], timeout_s: float) -> None:
    """Refuse, before anything starts, notebooks the guest does not run and a timeout that is not positive."""
    for notebook in notebooks:
        if notebook.stem in UNSUPPORTED:
            raise BadParameter(f"notebook {notebook.stem} does not run in the lab machine: "
                               f"{UNSUPPORTED[notebook.stem]}.", "Leave it out of `labkit guest run`.")
    if not timeout_s > 0:
        raise BadParameter(f"timeout={timeout_s}: need a positive number of seconds.", "E.g. --timeout 1800.")


def prepare(selection: list[str], timeout_s: float, *, record: bool = False) -> GuestSetting:
    """Check `selection` (as `labkit run` takes it), the guest, memory and disk, then gather the shares and the
    notebooks' bases for one boot; refuses before anything starts."""
    notebooks = runner.discover(selection)
    check(notebooks, timeout_s)
    shell.require_program(QEMU)  # the KVM probe asks for it only where /dev/kvm exists
    if record:
        session.require_committed()
    if not guest.is_made():
        raise NotPrepared("the lab machine is not made yet.", "Run `labkit setup 15` (about 2 minutes, once).")
    made = guest.ensure_guest()
    python = interpreter_share(made)
    space.require_memory({space.Size("the lab machine's memory", MEMORY_MIB): 1})
    space.require_disk((guest.runs_parent(), {space.Size("one boot's snapshot", guest.BOOT_MIB): 1}))
    client = engine.connect()
    labs = {lab.stem: lab for lab in catalog.all_labs()}
    bases = sorted({name for nb in notebooks for name in labs[nb.stem].bases})
    tags = {name: images.require_base(client, name).tag for name in bases}
    archives = {f"base-{name}.tar": b"".join(client.images.get(tag).save(named=True)) for name, tag in tags.items()}
    venv = Path(sys.prefix)  # the virtualenv running this labkit: inside the checkout (.venv) or shared on its own
    own_venv = not venv.is_relative_to(paths.project_root())
    read_only = {"project": paths.project_root(), "cache": paths.cache_dir(), **({"venv": venv} if own_venv else {}),
                 **({"python": python} if python else {})}
    script = guest.MARK_FUNCTION + _SHARES.format(
        nine_p=guest.NINE_P_OPTIONS, project=shlex.quote(str(paths.project_root())),
        cache=shlex.quote(str(paths.cache_dir())),
        venv=f"ro venv {shlex.quote(str(venv))}" if own_venv else "",
        python=f"ro python {shlex.quote(str(python))}" if python else "", load_s=f"{LOAD_TIMEOUT_S:.0f}")
    return GuestSetting(notebooks, made, list(tags.values()), archives, read_only, script)


def run(selection: list[str], *, quick: bool, record: bool = False, timeout_s: float = runner.DEFAULT_TIMEOUT_S,
        run_id: str | None = None) -> GuestNotebooks:
    """Execute the notebooks `selection` names (as `labkit run` takes them) in one boot of the lab machine and
    bring their executed copies and results back (see the module). `timeout_s`: seconds per notebook."""
    setting = prepare(selection, timeout_s, record=record)
    notebooks = setting.notebooks
    script = setting.script + _RUN.format(
        project=shlex.quote(str(paths.project_root())), labkit=shlex.quote(str(Path(sys.prefix) / "bin" / "labkit")),
        out=_OUT, quick="--quick " if quick else "", commit=shlex.quote(session.git_commit()),
        timeout=f"{timeout_s:g}", notebooks=" ".join(nb.stem[:2] for nb in notebooks))
    boot = guest.run_job(setting.made, script, setting.archives, run_id=run_id or engine.new_run_id(),
                         accel=accelerator(), memory_mib=MEMORY_MIB, cpus=CPUS,
                         timeout_s=BOOT_ALLOWANCE_S + timeout_s * len(notebooks), read_only=setting.read_only,
                         ready=("shares", BOOT_ALLOWANCE_S))
    notebooks_dir, results_dir = destinations(quick, record)
    notebooks_dir.mkdir(parents=True, exist_ok=True)
    finished = {name.split("/")[1] for name in boot.outputs if name.startswith("results/")} - {""}
    for folder in finished:  # a notebook's results replace its earlier ones whole, as a host run's do
        shutil.rmtree(results_dir / folder, ignore_errors=True)
    for name, content in boot.outputs.items():
        kind, _, rest = name.partition("/")
        paths.atomic_write((notebooks_dir if kind == "notebooks" else results_dir) / rest, content)
    (notebooks_dir / CONSOLE).write_text("\n".join(boot.console) + "\n")
    reported = boot.outputs.get(f"notebooks/{runner.REPORT}")
    why = ("the guest's run left no report" if not boot.stalls or "shares" in boot.marks else
           f"the lab machine stalled in each of {boot.stalls} boots: its shares were not mounted "
           f"{BOOT_ALLOWANCE_S:.0f} s after QEMU started")
    runs = ([runner.NotebookRun(**entry) for entry in json.loads(reported)["notebooks"]] if reported else
            [runner.NotebookRun(nb.stem, "not run", 0.0, "", error=why) for nb in notebooks])
    result = GuestNotebooks(runs, boot.marks, boot.status, boot.completed, notebooks_dir, results_dir)
    report = json.dumps({
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "accelerator": boot.accelerator,
        "guest": setting.made.manifest, "quick": quick, "recorded": record, "marks": boot.marks,
        "uptimes": boot.uptimes, "status": boot.status, "completed": boot.completed, "stalls": boot.stalls,
        "bases": setting.bases,
        "notebooks": [vars(r) for r in runs]}, indent=1, default=str) + "\n"
    for folder in finished:  # each notebook's results say which boot made them, beside its provenance
        paths.atomic_write(results_dir / folder / REPORT, report)
    return result
