"""Section 5: the same Dockerfile built twice with ``--no-cache``, as is and normalised: which layers come out
byte-identical."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from labkit.core.results import rows_where
from labkit.core.session import LabSession
from labkit.instruments import builds, images, layers, undo
from labkit.labs.image_layers.declaration import (
    BASE,
    LAB,
    REPRODUCIBLE,
    SOURCE_DATE_EPOCH,
    STEM,
    build_context,
    cached_steps,
)


@dataclass(frozen=True)
class ReproducibleResult:
    """`reproducible`: per variant, build (0 or 1, each --no-cache, from the same folder) and Dockerfile step (the
    base's own steps left out), the layer's diff id ('' for a config-only step) and the image id; on the second
    build's rows, how many of the layer's paths carry another mtime than in the first, and up to three of them;
    `cached_steps`, the instructions the build's log marks CACHED besides FROM ('' when it ran them all)."""

    reproducible: pd.DataFrame

    def comparison(self) -> pd.DataFrame:
        """variant × step: whether the two builds made the same layer ('same', 'differs', or 'no layer'), and the
        paths whose mtime differed."""
        frame = self.reproducible.fillna({"diff_id": "", "example_paths": ""})
        first = frame[frame["build"] == 0].set_index(["variant", "step"])
        second = frame[frame["build"] == 1].set_index(["variant", "step"])
        outcome = (first["diff_id"] == second["diff_id"]).map({True: "same", False: "differs"})
        table = pd.DataFrame({"created_by": first["created_by"],
                              "layer": outcome.where(first["diff_id"] != "", "no layer"),
                              "other_mtimes": second["other_mtimes"], "example_paths": second["example_paths"]})
        return table.reset_index()

    def _differing_layers(self, variant: str) -> pd.DataFrame:
        """`variant`'s rows of :meth:`comparison` whose layer differed between the two builds."""
        return rows_where(self.comparison(), variant=variant, layer="differs")

    def differing(self, variant: str) -> list[str]:
        return [str(c) for c in self._differing_layers(variant)["created_by"]]

    def layers_made(self, variant: str) -> int:
        table = self.comparison()
        return int(((table["variant"] == variant) & (table["layer"] != "no layer")).sum())

    def same_image(self, variant: str) -> bool:
        ids = self.reproducible[self.reproducible["variant"] == variant].groupby("build")["image_id"].first()
        return bool(ids.nunique() == 1)

    def reasons(self, variant: str) -> list[str]:
        """Paths whose recorded mtime differed between the two builds, over the layers that differed."""
        rows = self._differing_layers(variant)
        return sorted({path for paths in rows["example_paths"] for path in str(paths).split()})

    @property
    def cached(self) -> set[str]:
        """Instructions some build's log marked CACHED (FROM aside); a CSV gives back '' as NaN."""
        return {str(steps) for steps in self.reproducible["cached_steps"].dropna() if str(steps)}

    @property
    def cold(self) -> bool:
        """Every build ran every instruction (its log marks none CACHED but FROM, the base in the engine)."""
        return not self.cached

    def conclusion(self) -> str:
        as_is, normalised = self.differing("as is"), self.differing("normalised")
        cold = ("every build's log marks no instruction CACHED but `FROM` (the base, already in the engine)"
                if self.cold else "**some steps came from the cache**: " + "; ".join(sorted(self.cached)))
        paths = ", ".join(f"`/{p}`" for p in self.reasons("as is")) or "none"
        left = (f": {', '.join(f'`{s[:50]}`' for s in normalised)}, at {', '.join(self.reasons('normalised'))}"
                if normalised else "")
        return (f"**What we measured.** The builds were cold: {cold}. "
                f"Built twice as is, **{len(as_is)} of {self.layers_made('as is')}** layers "
                f"differed. Each time the recorded modification times differed ({paths} among them), besides the "
                f"clock written into `built-at.txt`: the directories `COPY` creates, what a `RUN` makes, and `/etc`, "
                f"where the builder creates and removes a mount point for `/etc/hosts` in every `RUN`. Normalised — "
                f"the source in a tar whose entries carry `SOURCE_DATE_EPOCH`, the time of everything a `RUN` made "
                f"set to it, the clock replaced by it, and an `/etc/hosts` of the image's own — **{len(normalised)} "
                f"of {self.layers_made('normalised')}** differed{left}. The image ids were "
                f"{'the same' if self.same_image('normalised') else '**still different**'}: the image's config "
                f"records when each step ran, which this engine's builder (BuildKit v0.8) does not take from "
                f"`SOURCE_DATE_EPOCH`.")


def _mtime_differences(first: layers.Layer, second: layers.Layer) -> list[str]:
    """Paths both layers hold whose recorded modification times differ."""
    times = {e.path: e.mtime for e in first.entries}
    return [e.path for e in second.entries if e.path in times and times[e.path] != e.mtime]


def run_reproducible(lab: LabSession) -> ReproducibleResult:
    """Build each Dockerfile of :data:`REPRODUCIBLE` twice from the same folder with --no-cache (BuildKit); read each
    layer's diff id, and for a layer of the second build the paths whose recorded mtime differs from the first's."""

    def experiment() -> pd.DataFrame:
        client = lab.engine
        base = images.require_base(client, BASE).tag
        base_steps = len(client.api.history(base))
        rows: list[dict[str, Any]] = []
        with lab.scope() as scope, undo.temporary_folder("labkit-02-") as scratch:
            for variant, dockerfile in REPRODUCIBLE.items():
                folder = build_context(Path(scratch) / f"repro-{variant.replace(' ', '-')}",
                                       dockerfile.format(base=base))
                saved: list[layers.SavedImage] = []
                for build in (0, 1):
                    made = builds.build(folder, f"labkit-exp/{STEM}-repro:{len(rows)}-{scope.scope_id}", scope,
                                        no_cache=True, build_args={"SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH})
                    saved.append(layers.read_saved(layers.save(client, made.image_id, Path(scratch) / "image.tar")))
                    for row in saved[build].frame().itertuples():
                        if row.step < base_steps:
                            continue  # the base's own layers: the same image both times
                        changed = (_mtime_differences(saved[0].layers[row.layer], saved[1].layers[row.layer])
                                   if build == 1 and row.layer >= 0 else [])
                        rows.append({"variant": variant, "build": build, "step": row.step,
                                     "created_by": row.created_by,
                                     "diff_id": saved[build].layers[row.layer].diff_id if row.layer >= 0 else "",
                                     "image_id": made.image_id, "other_mtimes": len(changed),
                                     "example_paths": " ".join(changed[:3]), "cached_steps": cached_steps(made)})
        return pd.DataFrame(rows, columns=list(LAB.tables["reproducible"]))

    return ReproducibleResult(lab.measure("reproducible", experiment, base=BASE,
                                          source_date_epoch=SOURCE_DATE_EPOCH))
