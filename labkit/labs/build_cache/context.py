"""Section 3: the build context with and without a ``.dockerignore``, and a fake secret looked for in the layers."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from labkit.core.results import rows_where
from labkit.core.session import LabSession
from labkit.errors import BadParameter
from labkit.instruments import builds, layers, measure, space, undo
from labkit.instruments.buildlog import BUILDERS, BUILDKIT, LEGACY
from labkit.labs.build_cache.declaration import (
    APP_FILES,
    CONTEXT_DOCKERFILE,
    EMPTY_BASE,
    IGNORE_FILE,
    LAB,
    SECRET_FILE,
    STEM,
    isolated_base,
    validate_builders,
    wheelhouse,
    write_context,
)


@dataclass(frozen=True)
class ContextResult:
    """`context`: one row per build of a context (``COPY . .`` only) holding a fake secret `.env` and `local-data/`,
    without and with a `.dockerignore`: context bytes sent, BuildKit's transfer time (s), build wall time (s),
    image size (bytes), and whether the secret was found in a layer tar (and which, and where)."""

    context: pd.DataFrame

    def median(self, column: str, builder: str, ignored: bool) -> float:
        rows = rows_where(self.context, builder=builder, dockerignore=ignored)
        return float(rows[column].median())

    def secret_found(self, ignored: bool) -> bool:
        """Found in every build of that variant (True), or in none (False); mixed results raise."""
        found = set(self.context.loc[self.context["dockerignore"] == ignored, "secret_found"].astype(bool))
        if len(found) != 1:
            raise ValueError(f"the secret was found in some builds with dockerignore={ignored} and not in others")
        return found.pop()

    def secret_where(self) -> str:
        rows = self.context[self.context["secret_found"].astype(bool)]
        return f"layer {int(rows['secret_layer'].iloc[0])} at /{rows['secret_path'].iloc[0]}" if len(rows) else ""

    def summary(self) -> pd.DataFrame:
        """Per builder and variant: median context (MB), transfer (s), build (s), image (MB); secret found in all."""
        grouped = self.context.groupby(["builder", "dockerignore"])
        return pd.DataFrame({"context_mb": grouped["context_bytes"].median() / 1e6,
                             "context_s": grouped["context_s"].median(), "wall_s": grouped["wall_s"].median(),
                             "image_mb": grouped["image_bytes"].median() / 1e6,
                             "secret_found": grouped["secret_found"].all(), "builds": grouped.size()})

    def conclusion(self) -> str:
        parts = []
        for builder in dict.fromkeys(self.context["builder"]):
            without, with_ = (self.median("context_bytes", builder, flag) for flag in (False, True))
            wall_without, wall_with = (self.median("wall_s", builder, flag) for flag in (False, True))
            parts.append(f"{builder} sent **{without / 1e6:.1f} MB** of context without it and "
                         f"**{with_ / 1e6:.3f} MB** with it, and built in {wall_without:.1f} s against "
                         f"{wall_with:.1f} s")
        found = self.secret_found(False)
        return ("**What we measured.** " + "; ".join(parts) + ". Without `.dockerignore` the fake secret "
                + (f"**is in the image**: {self.secret_where()}, readable by anyone who pulls it"
                   if found else "was not found in any layer") + "; with it, it is "
                + ("absent from every layer." if not self.secret_found(True) else "**still found**."))


def _local_data_copies_in_engine(repeats: int, builders: Sequence[str]) -> int:
    """The most copies of the local data the engine holds at once in :func:`run_context`: every build without a
    .dockerignore keeps one in its image until the scope ends and, with BuildKit, one more in BuildKit's cache of
    the context it received (each build's folder is new, so none is reused); on top of those, while a legacy
    build's ``COPY`` is committed, the context the daemon unpacked and the step container's layer (2), else the
    copy ``docker save`` stages (1)."""
    kept = repeats * sum(2 if builder == BUILDKIT else 1 for builder in builders)
    return kept + (2 if LEGACY in builders else 1)


def run_context(lab: LabSession, local_data_mib: int = 32, repeats: int = 3,
                builders: Sequence[str] = BUILDERS) -> ContextResult:
    """Build the app's context with `local_data_mib` MiB of incompressible local data and a fake `.env` in it, with
    ``COPY . .`` only, without and with a `.dockerignore`, `repeats` times per builder (interleaved); each image's
    layer tars are scanned for `.env`.

    Every build starts from a fresh copy of the context, so BuildKit's context cache cannot shorten a transfer.
    The image is built on an empty base (:data:`EMPTY_BASE` plus a boundary file): its size is the context's, and
    ``docker save`` has nothing else to write and scan."""
    measure.validate_repeats(repeats)
    validate_builders(builders)
    if not isinstance(local_data_mib, int) or local_data_mib < 1:
        raise BadParameter(f"local_data_mib={local_data_mib!r}: need a whole number of MiB >= 1.",
                           "E.g. 8 (quick) or 32 (full).")
    if lab.live:
        data = space.Size("local_data_mib", local_data_mib)
        space.require_memory({data: 1})  # made once, held while the builds run
        # in our temp folder: the context's copy and the `docker save` tarball (each build's replace the last's)
        space.require_disk((space.engine_storage(lab.engine), {data: _local_data_copies_in_engine(repeats, builders)}),
                           (Path(tempfile.gettempdir()), {data: 2}))

    def experiment() -> pd.DataFrame:
        client = lab.engine
        wheels = wheelhouse()
        secret = f"API_TOKEN=labkit-fake-{secrets.token_hex(8)}\n"
        data = secrets.token_bytes(local_data_mib * 2**20)  # random bytes: nothing compresses them away
        rows = []
        with lab.scope() as scope, undo.temporary_folder("labkit-03-ctx-") as scratch:
            base = isolated_base(client, scope, Path(scratch) / "base", start=EMPTY_BASE)
            for repeat in range(repeats):
                for builder in builders:
                    for ignored in ((False, True) if repeat % 2 == 0 else (True, False)):
                        folder = Path(scratch) / f"{builder}-{repeat}-{int(ignored)}"
                        folder.mkdir()
                        write_context(folder, APP_FILES, wheels, CONTEXT_DOCKERFILE.format(base=base))
                        (folder / SECRET_FILE).write_text(secret)
                        (folder / "local-data").mkdir()
                        (folder / "local-data" / "dump.bin").write_bytes(data)
                        (folder / ".dockerignore").write_text(IGNORE_FILE if ignored else "")
                        tag = f"labkit-exp/{STEM}-ctx:{builder}-{repeat}-{int(ignored)}-{scope.scope_id}"
                        made = builds.build(folder, tag, scope, builder=builder, no_cache=True, inherit_labels=True)
                        saved = layers.read_saved(layers.save(client, made.image_id, Path(scratch) / "image.tar"))
                        hits = saved.find(SECRET_FILE)
                        hits = hits[hits["kind"] == "file"]
                        rows.append({"builder": builder, "dockerignore": ignored, "repeat": repeat,
                                     "context_bytes": made.log.context_bytes, "context_s": made.log.context_s,
                                     "wall_s": made.wall_s,
                                     "image_bytes": int(client.images.get(made.image_id).attrs["Size"]),
                                     "secret_found": not hits.empty,
                                     "secret_layer": int(hits["layer"].iloc[0]) if len(hits) else -1,
                                     "secret_path": str(hits["path"].iloc[0]) if len(hits) else ""})
                        shutil.rmtree(folder)
        return pd.DataFrame(rows, columns=list(LAB.tables["context"]))

    return ContextResult(lab.measure("context", experiment, local_data_mib=local_data_mib, repeats=repeats,
                                     builders=list(builders), base=f"{EMPTY_BASE} plus a boundary file"))
