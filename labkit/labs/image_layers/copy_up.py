"""Section 3: the first write to a big file from a lower layer (a copy-up) timed against the second."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from labkit.core.results import rows_where
from labkit.core.session import LabSession
from labkit.instruments import containers, images, measure, undo
from labkit.labs.image_layers.declaration import (
    BASE,
    LAB,
    LAYERED,
    LIMITS,
    MIB,
    build_variant,
    positive_mib,
    require_big_file_space,
)


@dataclass(frozen=True)
class CopyUpResult:
    """`copy_up`: per repeat (a fresh container each), file (big or small, from a lower layer) and write (first or
    second append of one byte), the time the append took inside the container (s)."""

    copy_up: pd.DataFrame

    def median_ms(self, file: str, write: str) -> float:
        rows = rows_where(self.copy_up, file=file, write=write)
        return float(rows["seconds"].median() * 1e3)

    @property
    def big_bytes(self) -> int:
        return int(self.copy_up.loc[self.copy_up["file"] == "big", "file_bytes"].iloc[0])

    def samples_ms(self) -> pd.DataFrame:
        return self.copy_up.assign(method=self.copy_up["file"] + ", " + self.copy_up["write"] + " write",
                                   wall_ms=self.copy_up["seconds"] * 1e3)

    def conclusion(self) -> str:
        first, second = self.median_ms("big", "first"), self.median_ms("big", "second")
        return (f"**What we measured.** The first one-byte append to the {self.big_bytes / MIB:.0f} MiB file took a "
                f"median **{first:.1f} ms**, the second **{second:.2f} ms** ({first / second:.0f}×): the first write "
                f"copies the whole file up from its layer, the second writes to the copy. For the small file the "
                f"first write took {self.median_ms('small', 'first'):.2f} ms: copy-up costs what the file weighs.")


# Inside the container: the time of each append, in ns, measured with date around it (both pay the same fork).
COPY_UP_SCRIPT = ('for f in /data/big.bin /data/small.txt; do a=$(date +%s%N); printf x >> $f; b=$(date +%s%N); '
                  'printf x >> $f; c=$(date +%s%N); echo $f $((b-a)) $((c-b)); done')


def run_copy_up(lab: LabSession, repeats: int = 10, big_mib: int = 64) -> CopyUpResult:
    """In `repeats` fresh containers of the layered image, time the first and second one-byte append to a `big_mib`
    MiB file and to a small file, both from a lower layer."""
    measure.validate_repeats(repeats)
    positive_mib(big_mib, "big_mib")
    require_big_file_space(lab, big_mib)

    def experiment() -> pd.DataFrame:
        client = lab.engine
        base = images.require_base(client, BASE).tag
        rows = []
        with lab.scope() as scope, undo.temporary_folder("labkit-02-") as scratch:
            layered = build_variant(scope, Path(scratch), "layered",
                             LAYERED.format(base=base, blob_mib=1, big_mib=big_mib))
            sizes = {"big": big_mib * MIB, "small": len("small\n")}
            for repeat in range(repeats):
                output = containers.run_once(client, scope, layered.image_id, ["sh", "-c", COPY_UP_SCRIPT],
                                             limits=LIMITS).decode()
                for line in output.splitlines():
                    path, first_ns, second_ns = line.split()
                    file = "big" if path.endswith("big.bin") else "small"
                    for write, ns in (("first", first_ns), ("second", second_ns)):
                        rows.append({"repeat": repeat, "file": file, "file_bytes": sizes[file], "write": write,
                                     "seconds": int(ns) / 1e9})
        return pd.DataFrame(rows, columns=list(LAB.tables["copy_up"]))

    return CopyUpResult(lab.measure("copy_up", experiment, repeats=repeats, big_mib=big_mib, **LIMITS.record()))
