"""Section 5: ``.dockerignore`` is not ``.gitignore``: the same patterns in both files, each matching a path at
the context's root and the same name in a nested folder; what ``git check-ignore`` leaves out of a commit against
what lands in the image's layer tar."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from labkit.core.session import LabSession
from labkit.instruments import builds, layers, undo
from labkit.instruments.buildlog import BUILDERS
from labkit.instruments.shell import run
from labkit.labs.build_cache.declaration import (
    APP_FILES,
    LAB,
    SCRATCH_COPY_DOCKERFILE,
    STEM,
    validate_builders,
)

# Each pattern a Python or Node project's .gitignore holds, with a file it should keep out at the context's root
# and one in the app's folder.
IGNORED = {
    "node_modules": ("node_modules/left-pad/index.js", "app/node_modules/left-pad/index.js"),
    "__pycache__/": ("__pycache__/conftest.cpython-311.pyc", "app/__pycache__/main.cpython-311.pyc"),
    "*.log": ("debug.log", "app/debug.log"),
    ".env": (".env", "app/.env"),
}
PLANTED = {path: f"ignored by {pattern!r}\n" for pattern, pair in IGNORED.items() for path in pair}
LAYER_ROOT = "context"  # where the Dockerfile copies the context (SCRATCH_COPY_DOCKERFILE)
SAME = "same as .gitignore"
ANY_DEPTH = "each pattern prefixed with **/"
VARIANTS = {SAME: "".join(f"{p}\n" for p in IGNORED), ANY_DEPTH: "".join(f"**/{p}\n" for p in IGNORED)}
GIT_IGNORE = VARIANTS[SAME]


@dataclass(frozen=True)
class IgnoreResult:
    """`ignore`: one row per builder, .dockerignore variant, pattern and path: whether ``git check-ignore``
    (with the patterns as .gitignore) ignores the path, and whether the path is in the image's layer tar. Empty
    when replaying a recording made without it."""

    ignore: pd.DataFrame

    @property
    def recorded(self) -> bool:
        return not self.ignore.empty

    def leaked(self, variant: str) -> pd.DataFrame:
        """Rows of `variant` whose path git ignores and the layer holds."""
        rows = self.ignore[self.ignore["variant"] == variant]
        return rows[rows["git_ignored"].astype(bool) & rows["in_layer"].astype(bool)]

    def leaked_paths(self, variant: str) -> list[str]:
        return sorted(set(self.leaked(variant)["path"]))

    def git_ignored(self) -> int:
        """Paths git ignores (out of every path tried)."""
        first = self.ignore.drop_duplicates("path")
        return int(first["git_ignored"].astype(bool).sum())

    def matrix(self) -> pd.DataFrame:
        """Per pattern and path: git check-ignore's answer, and per builder and variant whether the path is in the
        layer ("in layer" / "left out")."""
        table = self.ignore.assign(in_layer=self.ignore["in_layer"].map({True: "in layer", False: "left out"}),
                                   git=self.ignore["git_ignored"].map({True: "ignored", False: "tracked"}))
        wide = table.pivot_table(index=["pattern", "path", "git"], columns=["builder", "variant"],
                                 values="in_layer", aggfunc="first", sort=False)
        return wide.rename_axis(index={"git": "git check-ignore"})

    def conclusion(self) -> str:
        if not self.recorded:
            return ("*The patterns were not measured in the recording this notebook replays (it predates this "
                    "section): a live run measures them.*")
        same, fixed = self.leaked_paths(SAME), self.leaked_paths(ANY_DEPTH)
        return (f"**What we measured.** git ignores **{self.git_ignored()} of {self.ignore['path'].nunique()}** "
                f"paths. With the same patterns in `.dockerignore`, **{len(same)}** of them still landed in the "
                f"layer with at least one builder" + (f": {', '.join(f'`{p}`' for p in same)}" if same else "")
                + f". With every pattern prefixed by `**/`, {len(fixed)} did"
                + (f" ({', '.join(f'`{p}`' for p in fixed)})." if fixed else "."))


def _git_ignored(folder: Path, paths: Sequence[str]) -> set[str]:
    """The paths ``git check-ignore`` says the folder's .gitignore ignores (in a repository made for the
    question and removed after, so no .git/ reaches the build)."""
    run(["git", "-C", str(folder), "init", "--quiet"], 30)
    try:
        done = run(["git", "-C", str(folder), "check-ignore", *paths], 30, check=False)
        if done.exit_code not in (0, 1):  # 1: none ignored
            raise RuntimeError(f"git check-ignore failed ({done.exit_code}): {done.stderr}")
        return set(done.stdout.split())
    finally:
        shutil.rmtree(folder / ".git")


def run_ignore_patterns(lab: LabSession, builders: Sequence[str] = BUILDERS) -> IgnoreResult:
    """For each .dockerignore variant and builder: a context of the app plus a file at the root and one nested for
    each pattern of :data:`IGNORED`, the patterns written as .gitignore and (as the variant says) as
    .dockerignore, asked of ``git check-ignore``, then copied into an image FROM scratch (its layer holds the
    context and nothing else) whose layer tar is read back."""
    validate_builders(builders)
    if (missing := lab.unrecorded("ignore")) is not None:
        return IgnoreResult(missing)

    def experiment() -> pd.DataFrame:
        client = lab.engine
        rows: list[dict[str, object]] = []
        with lab.scope() as scope, undo.temporary_folder("labkit-03-ignore-") as scratch:
            for variant, dockerignore in VARIANTS.items():
                for builder in builders:
                    folder = Path(scratch) / f"{builder}-{len(rows)}"
                    files = {**APP_FILES, ".gitignore": GIT_IGNORE, ".dockerignore": dockerignore,
                             "Dockerfile": SCRATCH_COPY_DOCKERFILE,
                             **PLANTED}
                    for name, text in files.items():
                        (folder / name).parent.mkdir(parents=True, exist_ok=True)
                        (folder / name).write_text(text)
                    ignored = _git_ignored(folder, list(PLANTED))
                    tag = f"labkit-exp/{STEM}-ignore:{builder}-{len(rows)}-{scope.scope_id}"
                    made = builds.build(folder, tag, scope, builder=builder, no_cache=True)
                    saved = layers.read_saved(layers.save(client, made.image_id, Path(scratch) / "image.tar"))
                    rows += [{"builder": builder, "variant": variant, "pattern": pattern, "path": path,
                              "git_ignored": path in ignored, "in_layer": f"{LAYER_ROOT}/{path}" in saved.paths}
                             for pattern, pair in IGNORED.items() for path in pair]
        return pd.DataFrame(rows, columns=list(LAB.tables["ignore"]))

    return IgnoreResult(lab.measure("ignore", experiment, builders=list(builders), patterns=list(IGNORED),
                                    variants=VARIANTS))
