"""Sections 1 and 4: one image taken apart two ways (the engine's history, the layer tars of ``docker save``), and
a file deleted in a later layer."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from labkit.core.results import rows_where
from labkit.core.session import LabSession
from labkit.instruments import builds, images, layers, space, undo
from labkit.labs.image_layers.declaration import (
    BASE,
    LAB,
    LAYERED,
    MIB,
    ONE_LAYER,
    build_variant,
    cached_steps,
    instruction,
    positive_mib,
    require_dive,
    size_in_engine,
)

CONFIG_ONLY = ("ENV", "WORKDIR", "CMD")  # instructions that, as the builders document them, set the image's config
FILE_SYSTEM = ("RUN", "COPY")  # instructions that change the file system


@dataclass(frozen=True)
class LayerResult:
    """`layers`: one row per history entry of the BuildKit image (oldest first): the engine's history size, the
    layer tar's regular-file bytes, symlink-target bytes and tar size (bytes), files, whiteouts, the bytes of lower
    layers its whiteouts hide, and whether the history size equals the files' plus the symlinks' bytes (`agree`).
    `images`: the image with the blob deleted in a later layer against the one that deletes it in the same RUN
    (bytes). `instructions`: the same Dockerfile's history as each builder wrote it (labkit's own --label steps left
    out): the instruction, whether it made a layer, the layer tar's bytes and entries. `builds`: per build, the
    steps its log marks executed and cached (FROM not counted) and which were cached. `dive`: one row, what dive
    (a second witness, on the same saved tarball) reports: image and wasted bytes, efficiency, and the paths more
    than one layer holds (``path×layers=bytes``, ``;``-joined)."""

    layers: pd.DataFrame
    images: pd.DataFrame
    instructions: pd.DataFrame
    builds: pd.DataFrame
    dive: pd.DataFrame

    def table(self) -> pd.DataFrame:
        """The layer table as the notebook shows it: one row per instruction, indexed ``<step> <instruction>``
        (shortened), sizes in MB: the history's, the files' and symlinks' in the tar (`content`) and the tar's."""
        view = self.layers.copy()
        text = (view["created_by"].fillna("").str.replace("/bin/sh -c ", "", regex=False)
                .str.replace(" # buildkit", "", regex=False))
        view.index = pd.Index([f"{step} {t[:40] or '(the base, docker import)'}"
                               for step, t in zip(view["step"], text, strict=True)], name="instruction")
        view["history_mb"] = view["history_bytes"] / 1e6
        view["content_mb"] = (view["content_bytes"] + view["symlink_bytes"]) / 1e6
        view["tar_mb"] = view["tar_bytes"] / 1e6
        return view[["history_mb", "content_mb", "tar_mb", "files", "whiteouts", "agree"]]

    def per_builder(self) -> pd.DataFrame:
        """instruction (as the Dockerfile has it, oldest first) × builder: 'layer: <tar bytes> B tar, <n> entries'
        or 'none' (the config alone changed)."""
        rows = self.instructions.assign(
            made=[f"layer: {int(t):,} B tar, {int(e)} entries" if not empty else "none"
                  for t, e, empty in zip(self.instructions["tar_bytes"], self.instructions["entries"],
                                         self.instructions["empty_layer"], strict=True)])
        return rows.pivot_table(index=["step", "instruction"], columns="builder", values="made", aggfunc="first")

    def made_layer(self, keyword: str, builder: str) -> list[bool]:
        """Whether each `keyword` instruction of the Dockerfile made a layer with `builder`."""
        rows = rows_where(self.instructions, builder=builder, instruction=keyword)
        return [not bool(e) for e in rows["empty_layer"]]

    @property
    def config_layers(self) -> list[str]:
        """'<instruction> (<builder>)' for each config-only instruction that made a layer anyway."""
        return [f"{k} ({b})" for b in sorted(self.instructions["builder"].unique()) for k in CONFIG_ONLY
                if any(self.made_layer(k, b))]

    @property
    def file_system_layers(self) -> bool:
        """Every RUN and COPY made a layer with every builder (and the Dockerfile has some)."""
        made = [m for b in self.instructions["builder"].unique() for k in FILE_SYSTEM for m in self.made_layer(k, b)]
        return bool(made) and all(made)

    @property
    def all_agree(self) -> bool:
        return bool(self.layers["agree"].all())

    @property
    def largest_tar_overhead(self) -> pd.Series:
        """The layer whose tar is largest against its contents: step, created_by, tar_bytes, content bytes."""
        made = self.layers[~self.layers["empty_layer"]]
        return made.loc[(made["tar_bytes"] - made["content_bytes"] - made["symlink_bytes"]).idxmax()]

    @property
    def wasted_bytes(self) -> int:
        return int(self.layers["hidden_bytes"].sum())

    def image_bytes(self, variant: str) -> int:
        return int(self.images.set_index("variant").loc[variant, "image_bytes"])

    @property
    def blob_bytes(self) -> int:
        return int(self.images["blob_bytes"].iloc[0])

    def cold(self, builder: str) -> bool:
        """The layered image's build with `builder` took no instruction from the cache (read from its log)."""
        row = rows_where(self.builds, variant="layered", builder=builder).iloc[0]
        return int(row["cached"]) == 0

    def dive_conclusion(self) -> str:
        """dive's wasted bytes and efficiency beside the bytes the whiteout hides, and why they differ."""
        row = self.dive.iloc[0]
        wasted, hidden = int(row["wasted_bytes"]), self.wasted_bytes
        paths = [p for p in str(row["duplicated"] if isinstance(row["duplicated"], str) else "").split(";") if p]
        files_bytes = int((self.layers["content_bytes"]).sum())
        weighty = [p for p in paths if not p.endswith("=0")]
        why = (f"the same bytes: the only path with content that more than one layer holds is "
               f"{', '.join(f'`{p}`' for p in weighty) or 'none'}"
               if wasted == hidden else
               f"they differ by {wasted - hidden:+,} bytes: dive counts every copy of each path that more than one "
               "layer holds (a file rewritten in a later layer counts twice, the copy the image uses included)"
               if wasted > hidden else
               f"they differ by {wasted - hidden:+,} bytes: dive counts a path only when a later layer names it "
               "again, so the files under a directory a later layer replaces whole (an opaque directory, "
               "`rm -rf` then `mkdir`) escape it, while the whiteout figure counts every byte hidden")
        empty = [p for p in paths if p.endswith("=0")]
        return (f"**A second witness.** dive (`--ci` on the same `docker save` tarball, offline) calls "
                f"**{wasted:,} bytes** wasted (efficiency {float(row['efficiency']):.2%}); the whiteout hides "
                f"**{hidden:,}**: {why}."
                + (f" dive also lists {', '.join(f'`{p}`' for p in empty)}: entries that several layers carry, "
                   "0 bytes each." if empty else "")
                + f" dive sizes the image at {int(row['image_bytes']):,} bytes, the regular files "
                f"of every layer ({files_bytes:,} in our reading), without the base's "
                f"{int(self.layers['symlink_bytes'].sum()):,} bytes of symlink targets that the engine counts.")

    def conclusion(self) -> str:
        kept = self.image_bytes("deleted in a later layer") - self.image_bytes("deleted in the same RUN")
        whiteout = self.layers[self.layers["whiteouts"] > 0].iloc[0]
        base = self.layers.iloc[0]
        symlinks = int(base["symlink_bytes"])
        workdir = {b: any(self.made_layer("WORKDIR", b)) for b in sorted(self.instructions["builder"].unique())}
        rows = self.instructions
        layer = rows[(rows["instruction"] == "WORKDIR") & ~rows["empty_layer"].astype(bool)]
        workdir_text = "; ".join(f"{b}: {'a layer' if made else 'no layer'}" for b, made in workdir.items())
        if len(layer):
            workdir_text += (f" ({layer['builder'].iloc[0]}'s is a {int(layer['tar_bytes'].iloc[0]):,}-byte tar "
                             f"with {int(layer['entries'].iloc[0])} entries: `/app` already existed, so nothing "
                             "changed, yet the builder committed a layer)")
        cold = ", ".join(f"{b} {'cold' if self.cold(b) else '**not** cold'}" for b in sorted(workdir))
        one = self.builds[self.builds["variant"] == "one-layer"].iloc[0]
        return (f"**What we measured.** Built with `--no-cache` ({cold}: the log marks no instruction CACHED, only "
                f"`FROM`, the base already in the engine; the one-RUN variant, whose size alone is used, took "
                f"{int(one['cached'])} of its {int(one['cached']) + int(one['executed'])} steps from the builder's "
                f"cache). "
                f"Every `RUN` and `COPY` made a layer with both builders"
                f"{'' if self.file_system_layers else ' — **not** so here'}; "
                f"config-only instructions that made a layer anyway: "
                f"{', '.join(self.config_layers) or 'none'}. `WORKDIR /app` — {workdir_text}. "
                f"The engine's history size of each layer {'equals' if self.all_agree else 'does **not** equal'} "
                f"the bytes of the files in its tar plus its symlinks' targets (the imported base holds "
                f"{symlinks:,} bytes of symlinks, the built layers none); the tar itself is larger, by its headers "
                f"and 512-byte blocks: the base's {int(base['tar_bytes']):,}-byte tar against "
                f"{int(base['history_bytes']):,} in the history "
                f"(+{int(base['tar_bytes']) / int(base['history_bytes']) - 1:.1%}). "
                f"The `rm` layer holds {int(whiteout['whiteouts'])} whiteout(s) and "
                f"{int(whiteout['content_bytes'])} bytes, and hides **{self.wasted_bytes / MIB:.1f} MiB** that the "
                f"image still carries: it is {kept / MIB:.1f} MiB larger than the same blob written and deleted in "
                f"one RUN (the blob: {self.blob_bytes / MIB:.0f} MiB).")


def history_matches_contents(frame: pd.DataFrame) -> pd.Series:
    """Per layer: whether the engine's history size (`history_bytes`) is exactly the bytes of the regular files
    in its tar plus its symlinks' targets (`content_bytes` + `symlink_bytes`), which is how the engine sizes a layer;
    the tar's own size (headers, 512-byte blocks) is not what it counts."""
    return frame["history_bytes"] == frame["content_bytes"] + frame["symlink_bytes"]


def _instructions(builder: str, saved: layers.SavedImage) -> list[dict[str, object]]:
    """The saved image's history as the Dockerfile's instructions, with the layer each made (or none)."""
    rows = []
    for row in saved.frame().itertuples():
        keyword = instruction(row.created_by)
        if keyword == "LABEL":
            continue  # the legacy builder's LABEL step per labkit --label; the Dockerfile has no LABEL
        rows.append({"builder": builder, "step": row.step, "instruction": keyword, "created_by": row.created_by,
                     "empty_layer": row.empty_layer, "tar_bytes": row.tar_bytes,
                     "entries": len(saved.layers[row.layer].entries) if row.layer >= 0 else 0})
    return rows


def _build_row(variant: str, build: builds.Build, no_cache: bool) -> dict[str, object]:
    return {"variant": variant, "builder": build.builder, "no_cache": no_cache, "executed": build.log.executed,
            "cached": build.log.cached, "cached_steps": cached_steps(build)}


def run_layers(lab: LabSession, blob_mib: int = 32, big_mib: int = 64) -> LayerResult:
    """Build the layered image (a `blob_mib` MiB blob deleted a layer later, a `big_mib` MiB file) cold with each
    builder, and the one-RUN variant; read the BuildKit image's layers from the engine's history and from
    `docker save`, and each builder's instructions and layers from its saved image."""
    images.validate_base(BASE)
    positive_mib(blob_mib, "blob_mib")
    positive_mib(big_mib, "big_mib")
    if lab.live:
        dive_program = require_dive()
        blob, big = space.Size("blob_mib", blob_mib), space.Size("big_mib", big_mib)
        # In the engine at once, at most: each file's layer per builder (the one-RUN variant shares big.bin's
        # through the cache) and one more of each, either the one-RUN variant's blob before its `rm` or the copy
        # `docker save` stages in the engine's temp folder; and one saved tarball at a time in ours.
        space.require_disk((space.engine_storage(lab.engine), {blob: 3, big: 3}),
                           (Path(tempfile.gettempdir()), {blob: 1, big: 1}))

    def experiment() -> dict[str, pd.DataFrame]:
        client = lab.engine
        base = images.require_base(client, BASE).tag
        layered_file = LAYERED.format(base=base, blob_mib=blob_mib, big_mib=big_mib)
        with lab.scope() as scope, undo.temporary_folder("labkit-02-") as scratch:
            made, rows = {}, []
            for builder in builds.BUILDERS:
                made[builder] = build_variant(scope, Path(scratch), f"layered-{builder}", layered_file,
                                              builder=builder, no_cache=True)
                saved = layers.read_saved(layers.save(client, made[builder].image_id, Path(scratch) / "image.tar"))
                rows += _instructions(builder, saved)
                if builder == builds.BUILDKIT:
                    layered, history = saved, layers.engine_history(client, made[builder].image_id)
                    seen = layers.dive(dive_program, Path(scratch) / "image.tar")
            one = build_variant(scope, Path(scratch), "one-layer",
                                ONE_LAYER.format(base=base, blob_mib=blob_mib, big_mib=big_mib))
            sizes = {"deleted in a later layer": size_in_engine(client, made[builds.BUILDKIT].image_id),
                     "deleted in the same RUN": size_in_engine(client, one.image_id)}
        frame = layered.frame()
        frame["history_bytes"] = history["size_bytes"]
        frame["hidden_bytes"] = [layered.hidden_bytes(layered.layers[i]) if i >= 0 else 0 for i in frame["layer"]]
        frame["agree"] = history_matches_contents(frame)
        image_rows = pd.DataFrame([{"variant": v, "image_bytes": b, "blob_bytes": blob_mib * MIB}
                                   for v, b in sizes.items()])
        build_rows = [_build_row("layered", b, True) for b in made.values()] + [_build_row("one-layer", one, False)]
        return {"layers": frame[list(LAB.tables["layers"])], "images": image_rows,
                "instructions": pd.DataFrame(rows, columns=list(LAB.tables["instructions"])),
                "builds": pd.DataFrame(build_rows, columns=list(LAB.tables["builds"])),
                "dive": pd.DataFrame([{"image_bytes": seen.image_bytes, "wasted_bytes": seen.wasted_bytes,
                                       "efficiency": seen.efficiency,
                                       "duplicated": ";".join(f"{path}×{count}={size}" for path, (count, size)
                                                              in seen.duplicated.items())}])}

    names = ("layers", "images", "instructions", "builds", "dive")
    tables = lab.record("layers", names, experiment, base=BASE, blob_mib=blob_mib, big_mib=big_mib)
    return LayerResult(*(tables[n] for n in names))
