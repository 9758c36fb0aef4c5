"""Section 2: a running container's overlayfs directories, read from the host."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from labkit.core.session import LabSession
from labkit.instruments import containers, images, undo
from labkit.labs.image_layers.declaration import (
    BASE,
    LAB,
    LAYERED,
    LIMITS,
    SLEEP_ARGV,
    build_variant,
    positive_mib,
    require_big_file_space,
)


@dataclass(frozen=True)
class OverlayResult:
    """`overlay`: per case, a path inside the container and whether it is in the container's UpperDir (and as
    what), in any LowerDir, and in the MergedDir the container sees, with sizes (bytes) in upper and lower."""

    overlay: pd.DataFrame

    def row(self, case: str) -> pd.Series:
        return self.overlay.set_index("case").loc[case]

    def conclusion(self) -> str:
        written, read = self.row("written inside"), self.row("only read")
        appended, deleted = self.row("appended to"), self.row("deleted inside")
        return (f"**What we measured.** The file written inside is in the upper directory "
                f"({'yes' if written['in_upper'] else 'no'}) and in no lower one "
                f"({'none' if not written['in_lower'] else 'found!'}). The file only read stays in the image's "
                f"layers (upper: {'yes' if read['in_upper'] else 'no'}). Appending one byte to "
                f"`{appended['path']}` put a whole copy of it in the upper directory: "
                f"{int(appended['upper_bytes']):,} bytes against {int(appended['lower_bytes']):,} below. Deleting "
                f"`{deleted['path']}` left a `{deleted['upper_kind']}` in the upper directory; the merged view "
                f"{'still shows it' if deleted['in_merged'] else 'no longer shows it'}, the lower layer still has it.")


def _kind(path: Path) -> str:
    if not os.path.lexists(path):
        return ""
    mode = path.lstat().st_mode
    if (mode & 0o170000) == 0o020000 and path.lstat().st_rdev == 0:
        return "whiteout (char device 0/0)"
    return "directory" if path.is_dir() else "file"


def _size(path: Path) -> int:
    return path.lstat().st_size if _kind(path) == "file" else 0


def run_overlay(lab: LabSession, big_mib: int = 64) -> OverlayResult:
    """Start a container of the layered image; inside it write a new file, append to the big file, delete a file;
    then read the container's overlayfs directories (from `docker inspect`) on the host."""
    positive_mib(big_mib, "big_mib")
    lab.require_root("reading the engine's overlayfs directories")
    require_big_file_space(lab, big_mib)

    def experiment() -> pd.DataFrame:
        client = lab.engine
        base = images.require_base(client, BASE).tag
        cases = {"written inside": "tmp/written-inside.txt", "only read": "app/greeting.py",
                 "appended to": "data/big.bin", "deleted inside": "app/README.md"}
        with lab.scope() as scope, undo.temporary_folder("labkit-02-") as scratch:
            layered = build_variant(scope, Path(scratch), "layered",
                             LAYERED.format(base=base, blob_mib=1, big_mib=big_mib))
            with containers.running(client, scope, layered.image_id, SLEEP_ARGV, stem="overlay",
                                    limits=LIMITS) as container:
                containers.exec_text(container, ["sh", "-c", "echo inside > /tmp/written-inside.txt && "
                                                 "cat /app/greeting.py && printf x >> /data/big.bin && "
                                                 "rm /app/README.md"])
                data = client.api.inspect_container(container.id)["GraphDriver"]["Data"]
                upper, merged = Path(data["UpperDir"]), Path(data["MergedDir"])
                lowers = [Path(p) for p in data["LowerDir"].split(":")]
                rows = []
                for case, path in cases.items():
                    below = next((lower / path for lower in lowers if os.path.lexists(lower / path)), None)
                    rows.append({"case": case, "path": "/" + path, "in_upper": os.path.lexists(upper / path),
                                 "upper_kind": _kind(upper / path), "in_lower": below is not None,
                                 "in_merged": os.path.lexists(merged / path), "upper_bytes": _size(upper / path),
                                 "lower_bytes": _size(below) if below is not None else 0})
        return pd.DataFrame(rows, columns=list(LAB.tables["overlay"]))

    return OverlayResult(lab.measure("overlay", experiment, base=BASE, big_mib=big_mib, **LIMITS.record()))
