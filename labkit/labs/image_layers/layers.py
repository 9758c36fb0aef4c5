"""Sections 1 and 4: one image taken apart two ways (the engine's history, the layer tars of ``docker save``), and
a file deleted in a later layer."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from labkit.core.session import LabSession
from labkit.instruments import images, layers, space
from labkit.labs.image_layers.declaration import (
    BASE,
    LAB,
    LAYERED,
    MIB,
    ONE_LAYER,
    SIZE_TOLERANCE,
    build_variant,
    positive_mib,
    size_in_engine,
)


@dataclass(frozen=True)
class LayerResult:
    """`layers`: one row per Dockerfile instruction of the image (oldest first): the engine's history size
    (bytes), the layer tar's regular-file bytes, symlink bytes and tar size, files, whiteouts, the bytes of lower
    layers its whiteouts hide, and whether the two sizes agree. `images`: the image with the blob deleted in a later
    layer against the one that deletes it in the same RUN (bytes)."""

    layers: pd.DataFrame
    images: pd.DataFrame

    def table(self) -> pd.DataFrame:
        """The layer table as the notebook shows it: one row per instruction, indexed ``<step> <instruction>``
        (shortened), sizes in MB."""
        view = self.layers[["step", "created_by", "history_bytes", "content_bytes", "files", "whiteouts",
                            "agree"]].copy()
        instruction = (view["created_by"].fillna("").str.replace("/bin/sh -c ", "", regex=False)
                       .str.replace(" # buildkit", "", regex=False))
        view.index = pd.Index([f"{step} {text[:40] or '(the base, docker import)'}"
                               for step, text in zip(view["step"], instruction, strict=True)],
                              name="instruction")
        for column in ("history_bytes", "content_bytes"):
            view[column.replace("_bytes", "_mb")] = view.pop(column) / 1e6
        return view[["history_mb", "content_mb", "files", "whiteouts", "agree"]]

    @property
    def all_agree(self) -> bool:
        return bool(self.layers["agree"].all())

    @property
    def largest_gap_bytes(self) -> int:
        return int((self.layers["history_bytes"] - self.layers["content_bytes"]).abs().max())

    @property
    def wasted_bytes(self) -> int:
        return int(self.layers["hidden_bytes"].sum())

    def image_bytes(self, variant: str) -> int:
        return int(self.images.set_index("variant").loc[variant, "image_bytes"])

    @property
    def blob_bytes(self) -> int:
        return int(self.images["blob_bytes"].iloc[0])

    def conclusion(self) -> str:
        kept = self.image_bytes("deleted in a later layer") - self.image_bytes("deleted in the same RUN")
        whiteout = self.layers[self.layers["whiteouts"] > 0].iloc[0]
        config_only = ", ".join(f"`{c}`" for c in self.layers.loc[self.layers["empty_layer"], "created_by"]) or "none"
        return (f"**What we measured.** {int((~self.layers['empty_layer']).sum())} of the {len(self.layers)} "
                f"history entries (the imported base and each instruction) made a layer; only {config_only} changed "
                f"the image's config alone. The history and the "
                f"layer tars {'agree on every layer' if self.all_agree else 'do **not** agree'} (largest gap "
                f"{self.largest_gap_bytes:,} bytes: the symlinks of the imported base, which the engine counts "
                f"there and nowhere else). The `rm` layer holds {int(whiteout['whiteouts'])} whiteout(s) and "
                f"{int(whiteout['content_bytes'])} bytes, and hides **{self.wasted_bytes / MIB:.1f} MiB** that the "
                f"image still carries: it is {kept / MIB:.1f} MiB larger than the same blob written and deleted in "
                f"one RUN (the blob: {self.blob_bytes / MIB:.0f} MiB).")


def run_layers(lab: LabSession, blob_mib: int = 32, big_mib: int = 64) -> LayerResult:
    """Build the layered image (a `blob_mib` MiB blob deleted a layer later, a `big_mib` MiB file) and the one-RUN
    variant; read its layers from the engine's history and from `docker save`."""
    images.validate_base(BASE)
    positive_mib(blob_mib, "blob_mib")
    positive_mib(big_mib, "big_mib")
    if lab.live:
        blob, big = space.Size("blob_mib", blob_mib), space.Size("big_mib", big_mib)
        # In the engine at once, at most: each file's layer (the one-RUN variant shares big.bin's through the cache)
        # and one more of each, either the one-RUN variant's blob before its `rm` or the copy `docker save` stages in
        # the engine's temp folder; and the saved tarball in ours.
        space.require_disk((space.engine_storage(lab.engine), {blob: 2, big: 2}),
                           (Path(tempfile.gettempdir()), {blob: 1, big: 1}))

    def experiment() -> dict[str, pd.DataFrame]:
        client = lab.engine
        base = images.require_base(client, BASE).tag
        with lab.scope() as scope, tempfile.TemporaryDirectory(prefix="labkit-02-") as scratch:
            layered = build_variant(scope, Path(scratch), "layered",
                             LAYERED.format(base=base, blob_mib=blob_mib, big_mib=big_mib))
            one = build_variant(scope, Path(scratch), "one-layer",
                         ONE_LAYER.format(base=base, blob_mib=blob_mib, big_mib=big_mib))
            saved = layers.read_saved(layers.save(client, layered.image_id, Path(scratch) / "image.tar"))
            history = layers.engine_history(client, layered.image_id)
            sizes = {"deleted in a later layer": size_in_engine(client, layered.image_id),
                     "deleted in the same RUN": size_in_engine(client, one.image_id)}
        frame = saved.frame()
        frame["history_bytes"] = history["size_bytes"]
        frame["hidden_bytes"] = [saved.hidden_bytes(saved.layers[i]) if i >= 0 else 0 for i in frame["layer"]]
        gap = (frame["history_bytes"] - frame["content_bytes"]).abs()
        frame["agree"] = gap <= (frame["history_bytes"] * SIZE_TOLERANCE).clip(lower=0)
        image_rows = pd.DataFrame([{"variant": v, "image_bytes": b, "blob_bytes": blob_mib * MIB}
                                   for v, b in sizes.items()])
        return {"layers": frame[list(LAB.tables["layers"])], "images": image_rows}

    tables = lab.record("layers", ("layers", "images"), experiment, base=BASE, blob_mib=blob_mib, big_mib=big_mib)
    return LayerResult(tables["layers"], tables["images"])
