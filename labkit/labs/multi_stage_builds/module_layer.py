"""Section 3: the Go module download as its own layer, the chapter's ``COPY go.mod go.sum`` then ``go mod download``
before ``COPY . .``, against the same Dockerfile with ``COPY . .`` first; each built, then rebuilt after a one-line
edit of main.go, with the layer cache in use.

No module proxy is reachable here, so the service's one dependency, ``labkit.example/greet`` (a small module of our
own, in labkit/assets/go_service/greet), is served from a ``GOPROXY=file://`` folder this lab makes once in the
cache (the layout proxy.golang.org serves: ``@v/list``, ``.info``, ``.mod``, ``.zip``), and the service's go.sum
carries the module's hashes as the go command computes them, which it checks on download.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from labkit import assets
from labkit.core.results import rows_where
from labkit.core.session import LabSession
from labkit.instruments import builds, containers, measure, undo
from labkit.labs.multi_stage_builds.declaration import (
    GO_SERVICE,
    LIMITS,
    MODULE_COLUMNS,
    STEM,
    base_tags,
)
from labkit.paths import cache_dir

MODULE, VERSION = "labkit.example/greet", "v1.0.0"
DOCKERFILES = {  # the chapter's order, and the order that copies everything first
    "download first": "Dockerfile.download-first",
    "everything first": "Dockerfile.everything-first",
}
DOWNLOAD_STEP = "RUN go mod download"
FIRST, EDITED = "first build", "after an edit"
VERSION_TIME = "2026-12-01T00:00:00Z"  # the version's date in the proxy's .info (any fixed date does)


def hash1(files: dict[str, bytes]) -> str:
    """The go command's ``h1:`` hash (golang.org/x/mod/sumdb/dirhash.Hash1) of `files` (name → content): SHA-256
    of the lines ``<sha256 hex>  <name>``, sorted by name, base64-encoded."""
    summary = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in sorted(files.items()))
    return "h1:" + base64.b64encode(hashlib.sha256(summary.encode()).digest()).decode()


def module_files() -> dict[str, bytes]:
    """The dependency's files, as they sit in its module zip (``<module>@<version>/<path>``)."""
    return {f"{MODULE}@{VERSION}/{name}": text.encode() for name, text in assets.tree(f"{GO_SERVICE}/greet").items()}


def go_sum() -> str:
    """The service's go.sum: the module zip's hash and its go.mod's (hashed under the name ``go.mod``)."""
    files = module_files()
    return (f"{MODULE} {VERSION} {hash1(files)}\n"
            f"{MODULE} {VERSION}/go.mod {hash1({'go.mod': files[f'{MODULE}@{VERSION}/go.mod']})}\n")


def module_proxy() -> Path:
    """A ``GOPROXY=file://`` folder serving the dependency, made once in the cache (keyed by its content)."""
    files = module_files()
    target = cache_dir() / "goproxy" / hash1(files)[3:].replace("/", "_")[:16]
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=target.parent))
    versions = staging / MODULE / "@v"
    versions.mkdir(parents=True)
    (versions / "list").write_text(f"{VERSION}\n")
    (versions / f"{VERSION}.info").write_text(json.dumps({"Version": VERSION, "Time": VERSION_TIME}) + "\n")
    (versions / f"{VERSION}.mod").write_bytes(files[f"{MODULE}@{VERSION}/go.mod"])
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        for name, data in sorted(files.items()):
            out.writestr(zipfile.ZipInfo(name, date_time=(2026, 12, 1, 0, 0, 0)), data)
    (versions / f"{VERSION}.zip").write_bytes(archive.getvalue())
    staging.rename(target)
    return target


@dataclass(frozen=True)
class ModuleResult:
    """`builds`: one row per build — Dockerfile (`download first` or `everything first`), repeat, `first build`
    or `after an edit` (one line appended to main.go), wall time (s), whether the log shows ``go mod download``
    `ran` or `cached`, its DONE time (s; empty when cached), the first step that ran, the steps taken from the cache,
    and what the image printed (after an edit only)."""

    builds: pd.DataFrame

    @property
    def recorded(self) -> bool:
        return not self.builds.empty

    def download(self, dockerfile: str, build: str) -> list[str]:
        rows = rows_where(self.builds, dockerfile=dockerfile, build=build)
        return rows["download"].tolist()

    @property
    def kept(self) -> bool:
        """The chapter's order kept the download after every edit, and copying everything first lost it every
        time: the order, not the cache alone, decides."""
        first, everything = self.download("download first", EDITED), self.download("everything first", EDITED)
        return bool(first) and bool(everything) and set(first) == {"cached"} and set(everything) == {"ran"}

    def table(self) -> pd.DataFrame:
        return self.builds.set_index(["dockerfile", "repeat", "build"])[
            ["wall_s", "download", "download_s", "first_executed", "output"]].fillna({"output": ""})

    def conclusion(self) -> str:
        if not self.recorded:
            return ("**Not in this recording**: it was made before this section existed; run the notebook live to "
                    "measure it.")
        edited = self.builds[self.builds["build"] == EDITED]
        parts = [f"with `{dockerfile}`, `go mod download` {_count(rows['download'])} after the edit, the rebuild "
                 f"{measure.summarize(rows['wall_s'].tolist()).median:.1f} s (median of {len(rows)})"
                 for dockerfile, rows in edited.groupby("dockerfile", sort=False)]
        said = set(edited["output"].dropna())
        return (f"**What we measured.** After a one-line edit of main.go, {'; '.join(parts)}. Every rebuilt image "
                f"printed {' / '.join(f'`{s}`' for s in sorted(said)) or 'nothing'}. "
                + ("The chapter's order keeps the download layer across a source edit; copying everything first "
                   "throws it away." if self.kept else
                   "**The download step did not behave as the order predicts** (see the table)."))


def _count(statuses: pd.Series) -> str:
    counts = statuses.value_counts()
    return " and ".join(f"{status} {int(n)}×" for status, n in counts.items())


def _context(folder: Path, dockerfile: str, tags: dict[str, str], stamp: str) -> None:
    folder.mkdir(parents=True)
    for name, text in assets.tree(f"{GO_SERVICE}/service").items():
        (folder / name).write_text(text)
    # A line naming this build in go.mod: its COPY and the download after it run now, not from an earlier run.
    (folder / "go.mod").write_text((folder / "go.mod").read_text() + f"// {stamp}\n")
    (folder / "go.sum").write_text(go_sum())
    shutil.copytree(module_proxy(), folder / "goproxy")
    (folder / "Dockerfile").write_text(assets.text(f"{GO_SERVICE}/{dockerfile}").format(**tags))
    (folder / ".dockerignore").write_text("Dockerfile\n.dockerignore\n")


def _row(dockerfile: str, repeat: int, build: str, made: builds.Build, output: str) -> dict[str, Any]:
    download = next(s for s in made.log.steps if s.instruction == DOWNLOAD_STEP)
    return {"dockerfile": dockerfile, "repeat": repeat, "build": build, "wall_s": made.wall_s,
            "download": "cached" if download.cached else "ran", "download_s": download.seconds,
            "first_executed": made.log.first_executed or "",
            "cached_steps": "; ".join(s.instruction for s in made.log.steps
                                      if s.cached and not s.instruction.startswith("FROM ")),
            "output": output}


def run_module_layer(lab: LabSession, repeats: int = 1) -> ModuleResult:
    """Build the service with each Dockerfile, then again after appending a comment to main.go, `repeats` times
    (the two Dockerfiles taking turns to go first), and run each rebuilt image once."""
    measure.validate_repeats(repeats)
    if (missing := lab.unrecorded("module_builds")) is not None:
        return ModuleResult(missing)

    def experiment() -> pd.DataFrame:
        client = lab.engine
        tags = base_tags(client)
        rows: list[dict[str, Any]] = []
        with lab.scope() as scope, undo.temporary_folder("labkit-04-modules-") as scratch:
            order = list(DOCKERFILES.items())
            for repeat in range(repeats):
                for name, dockerfile in (order if repeat % 2 == 0 else order[::-1]):
                    folder = Path(scratch) / f"{dockerfile}-{repeat}"
                    _context(folder, dockerfile, tags, f"{scope.scope_id}-{repeat}-{dockerfile}")
                    tag = f"labkit-exp/{STEM}-modules:{name.replace(' ', '-')}-{repeat}-{scope.scope_id}"
                    rows.append(_row(name, repeat, FIRST, builds.build(folder, tag, scope), ""))
                    (folder / "main.go").write_text((folder / "main.go").read_text() + "// edited\n")
                    rebuilt = builds.build(folder, tag + "-edited", scope)
                    said = containers.run_once(client, scope, rebuilt.image_id, [], limits=LIMITS,
                                               network_mode="none")
                    rows.append(_row(name, repeat, EDITED, rebuilt, said.decode().strip()))
        return pd.DataFrame(rows, columns=list(MODULE_COLUMNS))

    return ModuleResult(lab.measure("module_builds", experiment, repeats=repeats, proxy=f"file:// ({MODULE})"))
