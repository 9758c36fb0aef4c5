"""Section 4: the chapter's ``-ldflags="-s -w"`` — section 2's Go web service linked with and without it in one
build stage (the second link reuses the first's compiled packages), each binary alone on FROM scratch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from labkit import assets
from labkit.core.session import LabSession
from labkit.instruments import builds, containers, layers, undo
from labkit.labs.multi_stage_builds.declaration import (
    GO_SERVICE,
    LIMITS,
    MB,
    SERVICES,
    STEM,
    STRIPPING_COLUMNS,
    base_tags,
)

VARIANTS = {"unstripped": "none", "stripped": '-ldflags="-s -w"'}  # the Dockerfile's targets and their link flags
BINARY = "server"  # the binary's path in both final images


@dataclass(frozen=True)
class StrippingResult:
    """`sizes`: one row per target — `unstripped` or `stripped`, its link flags, the binary's size (bytes, from the
    image's layer tar), the image's size (bytes, the engine's) and what ``/server --check`` printed."""

    sizes: pd.DataFrame

    @property
    def recorded(self) -> bool:
        return not self.sizes.empty

    def bytes(self, variant: str, column: str = "binary_bytes") -> int:
        return int(self.sizes.set_index("variant").loc[variant, column])

    @property
    def saving(self) -> float:
        """The fraction of the binary ``-s -w`` leaves out (0–1)."""
        return 1 - self.bytes("stripped") / self.bytes("unstripped")

    def table(self) -> pd.DataFrame:
        view = self.sizes.set_index("variant")
        return view.assign(binary_mb=view["binary_bytes"] / MB, image_mb=view["image_bytes"] / MB)[
            ["ldflags", "binary_mb", "image_mb", "output"]]

    def conclusion(self) -> str:
        if not self.recorded:
            return ("**Not in this recording**: it was made before this section existed; run the notebook live to "
                    "measure it.")
        return (f"**What we measured.** Without `-s -w` the binary is {self.bytes('unstripped') / MB:.2f} MB, with "
                f"it {self.bytes('stripped') / MB:.2f} MB: **{self.saving:.0%} smaller**, and the image on scratch "
                f"shrinks from {self.bytes('unstripped', 'image_bytes') / MB:.2f} MB to "
                f"{self.bytes('stripped', 'image_bytes') / MB:.2f} MB. Both answered `--check` with "
                f"{' / '.join(f'`{s}`' for s in sorted(set(self.sizes['output'])))}: the symbol table and the DWARF "
                "debugging information are not needed to run, only to debug (a stripped binary's stack traces "
                "still name their functions: Go keeps its own function table).")


def _binary_bytes(saved: layers.SavedImage) -> int:
    return next(e.size_bytes for layer in saved.layers for e in layer.entries if e.path == BINARY)


def run_stripping(lab: LabSession) -> StrippingResult:
    """Build the stripping Dockerfile's two targets from one context and measure each binary and image (sizes
    are the same on every build of the same source and toolchain: one build each, in quick and full mode)."""
    if (missing := lab.unrecorded("stripping")) is not None:
        return StrippingResult(missing)

    def experiment() -> pd.DataFrame:
        client = lab.engine
        rows: list[dict[str, Any]] = []
        with lab.scope() as scope, undo.temporary_folder("labkit-04-strip-") as scratch:
            folder = Path(scratch)
            for name, text in SERVICES["go"].files.items():
                (folder / name).write_text(text)
            # A line naming this build: the compile and both links run now, not from an earlier run's cache.
            (folder / "main.go").write_text((folder / "main.go").read_text() + f"// {scope.scope_id}\n")
            (folder / "Dockerfile").write_text(
                assets.text(f"{GO_SERVICE}/Dockerfile.stripping").format(**base_tags(client)))
            (folder / ".dockerignore").write_text("Dockerfile\n.dockerignore\n")
            for variant, flags in VARIANTS.items():
                made = builds.build(folder, f"labkit-exp/{STEM}-strip:{variant}-{scope.scope_id}", scope,
                                    target=variant)
                saved = layers.read_saved(layers.save(client, made.image_id, folder / f"{variant}.tar"))
                said = containers.run_once(client, scope, made.image_id, ["--check"], limits=LIMITS,
                                           network_mode="none")
                rows.append({"variant": variant, "ldflags": flags, "binary_bytes": _binary_bytes(saved),
                             "image_bytes": int(client.images.get(made.image_id).attrs["Size"]),
                             "output": said.decode().strip()})
        return pd.DataFrame(rows, columns=list(STRIPPING_COLUMNS))

    return StrippingResult(lab.measure("stripping", experiment, targets=list(VARIANTS)))
