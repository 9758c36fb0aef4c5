"""Section 4: the app's image with and without its dev dependencies (the Python twin of ``npm ci --omit=dev``):
image size and cold build time, interleaved."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from labkit.core.session import LabSession
from labkit.instruments import builds, measure, undo
from labkit.instruments.buildlog import BUILDKIT
from labkit.labs.build_cache.declaration import (
    APP_FILES,
    DEV_DOCKERFILE,
    DEV_REQUIREMENTS,
    DEV_REQUIREMENTS_FILE,
    INSTALL_MARK,
    LAB,
    STEM,
    dev_wheelhouse,
    isolated_base,
    packages_installed,
    pip_base,
    validate_builders,
    wheelhouse,
    write_context,
)

# pip's requirement arguments of each variant, filled into the Dockerfile's install step.
REQUIREMENTS = {False: "-r requirements.txt", True: f"-r requirements.txt -r {DEV_REQUIREMENTS_FILE}"}


@dataclass(frozen=True)
class DevResult:
    """`dev`: one row per cold build (``--no-cache``) of the app, with its dev dependencies (`dev` True) or
    without: build wall time (s), the install step's own time (s; BuildKit's log, NaN with the legacy builder),
    packages pip installed, image size (bytes). Empty when replaying a recording made without it."""

    dev: pd.DataFrame

    @property
    def recorded(self) -> bool:
        return not self.dev.empty

    @property
    def builders(self) -> list[str]:
        return list(dict.fromkeys(self.dev["builder"]))

    def _of(self, builder: str, dev: bool) -> pd.DataFrame:
        return self.dev[(self.dev["builder"] == builder) & (self.dev["dev"].astype(bool) == dev)]

    def image_mb(self, builder: str, dev: bool) -> float:
        """Median image size (MB)."""
        return float(self._of(builder, dev)["image_bytes"].median()) / 1e6

    def extra_mb(self, builder: str) -> float:
        """What the dev dependencies add to the image (MB, medians)."""
        return self.image_mb(builder, True) - self.image_mb(builder, False)

    def wall(self, builder: str, dev: bool) -> measure.Summary:
        """Cold build wall time (s): median and interval."""
        return measure.summarize(self._of(builder, dev)["wall_s"].tolist())

    def packages(self, builder: str, dev: bool) -> int:
        return int(self._of(builder, dev)["packages_installed"].max())

    def smaller_without(self, builder: str) -> bool:
        return self.image_mb(builder, False) < self.image_mb(builder, True)

    def faster_without(self, builder: str) -> bool:
        """Faster without them beyond doubt: every build without under every build with (n ≥ 2 each)."""
        without, with_ = self._of(builder, False)["wall_s"], self._of(builder, True)["wall_s"]
        return min(len(without), len(with_)) >= 2 and float(without.max()) < float(with_.min())

    def summary(self) -> pd.DataFrame:
        """Per builder and variant: builds, packages installed, image (MB), median build and install time (s)."""
        grouped = self.dev.groupby(["builder", "dev"], sort=False)
        return pd.DataFrame({"builds": grouped.size(), "packages_installed": grouped["packages_installed"].max(),
                             "image_mb": grouped["image_bytes"].median() / 1e6, "wall_s": grouped["wall_s"].median(),
                             "install_s": grouped["install_s"].median()})

    def conclusion(self) -> str:
        if not self.recorded:
            return ("*The dev dependencies were not measured in the recording this notebook replays (it predates "
                    "this section): a live run measures them.*")
        parts = []
        for builder in self.builders:
            lean, full = self.wall(builder, False), self.wall(builder, True)
            parts.append(
                f"with **{builder}**, the image without them is **{self.image_mb(builder, False):.1f} MB** "
                f"({self.packages(builder, False)} packages) against **{self.image_mb(builder, True):.1f} MB** "
                f"with them ({self.packages(builder, True)}), **{self.extra_mb(builder):.1f} MB** "
                f"more; a cold build took a median **{lean.median:.1f} s** without and **{full.median:.1f} s** with "
                f"them ({lean.n} build{'' if lean.n == 1 else 's'} each"
                + ("; every build without them was faster than every build with them)" if self.faster_without(builder)
                   else "; the builds' times overlap, or one build each: no difference beyond doubt)"))
        text = "; ".join(parts)
        return f"**What we measured.** {text[:1].upper()}{text[1:]}."


def _install_s(made: builds.Build) -> float:
    """The install step's own seconds from BuildKit's log (NaN from the legacy builder's, which has none)."""
    seconds = [s.seconds for s in made.log.steps if INSTALL_MARK in s.instruction and s.seconds is not None]
    return float(seconds[0]) if seconds else float("nan")


def run_dev_dependencies(lab: LabSession, repeats: int = 3, builders: Sequence[str] = (BUILDKIT,)) -> DevResult:
    """Build the app cold (``--no-cache``) `repeats` times per builder with its dev dependencies
    (:data:`DEV_REQUIREMENTS` on top of its own) and without, the two alternating which goes first; both from the
    pip base, with the dev set's wheels in both contexts (the same context, only the install differs)."""
    measure.validate_repeats(repeats)
    validate_builders(builders)
    if (missing := lab.unrecorded("dev")) is not None:
        return DevResult(missing)

    def experiment() -> pd.DataFrame:
        client = lab.engine
        wheels = [wheelhouse(), dev_wheelhouse()]
        files = {**APP_FILES, DEV_REQUIREMENTS_FILE: DEV_REQUIREMENTS}
        rows: list[dict[str, Any]] = []
        with lab.scope() as scope, undo.temporary_folder("labkit-03-dev-") as scratch:
            base = isolated_base(client, scope, Path(scratch) / "base", "dev",
                                 start=pip_base(client, scope, Path(scratch) / "pip"))
            for repeat in range(repeats):
                for builder in builders:
                    for order, dev in enumerate((False, True) if repeat % 2 == 0 else (True, False)):
                        folder = Path(scratch) / f"{builder}-{repeat}-{int(dev)}"
                        folder.mkdir()
                        write_context(folder, files, wheels,
                                      DEV_DOCKERFILE.format(base=base, requirements=REQUIREMENTS[dev]))
                        tag = f"labkit-exp/{STEM}-dev:{builder}-{repeat}-{int(dev)}-{scope.scope_id}"
                        made = builds.build(folder, tag, scope, builder=builder, no_cache=True, inherit_labels=True)
                        rows.append({"repeat": repeat, "order": order, "builder": builder, "dev": dev,
                                     "wall_s": made.wall_s, "install_s": _install_s(made),
                                     "packages_installed": packages_installed(made.text),
                                     "image_bytes": int(client.images.get(made.image_id).attrs["Size"])})
        return pd.DataFrame(rows, columns=list(LAB.tables["dev"]))

    return DevResult(lab.measure("dev", experiment, repeats=repeats, builders=list(builders),
                                 dev_requirements=DEV_REQUIREMENTS.split()))
