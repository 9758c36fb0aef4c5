"""Section 6 of notebook 12: the CI variant — the same compose file with an override file (no source bind mount,
the built image, other environment variables), both resolved by ``compose config`` and compared path by path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from labkit.core.session import LabSession
from labkit.instruments import compose
from labkit.labs.compose_and_the_single_box_path.declaration import LAB
from labkit.labs.compose_and_the_single_box_path.stack import CI_FILE, COMPOSE_FILE, image_variables, project_folder

DEV, CI = "dev", "ci"
# Where the chapter says the CI variant differs: env vars, no source bind mount, the real built image.
CHAPTER_DIFFERENCES = ("services.app.environment", "services.app.volumes", "services.app.image")


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """A resolved compose document as dotted paths (``services.app.volumes[0].source``) to their values (text)."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flatten(item, f"{prefix}.{key}" if prefix
                                                                          else str(key)).items()}
    if isinstance(value, list):
        return {k: v for index, item in enumerate(value) for k, v in flatten(item, f"{prefix}[{index}]").items()}
    return {prefix: str(value)}


def differences(dev: dict[str, Any], ci: dict[str, Any], folder: str = "") -> pd.DataFrame:
    """Every path whose value differs between the two resolved documents (missing: ''), the project `folder`
    written as ``.``."""
    left, right = ({k: v.replace(folder, ".") if folder else v for k, v in flatten(d).items()} for d in (dev, ci))
    rows = [{"path": path, DEV: left.get(path, ""), CI: right.get(path, "")}
            for path in sorted(set(left) | set(right)) if left.get(path) != right.get(path)]
    return pd.DataFrame(rows, columns=LAB.tables["ci_config"])


@dataclass(frozen=True)
class CiResult:
    """`differences`: path, dev, ci — each path of the resolved configuration that the CI override changes."""

    differences: pd.DataFrame

    @property
    def outside_the_chapters(self) -> list[str]:
        """Differing paths that are not under the three the chapter names."""
        return [p for p in self.differences["path"] if not str(p).startswith(CHAPTER_DIFFERENCES)]

    def changed(self, prefix: str) -> bool:
        return any(str(p).startswith(prefix) for p in self.differences["path"])

    @property
    def as_the_chapter_says(self) -> bool:
        return all(self.changed(prefix) for prefix in CHAPTER_DIFFERENCES) and not self.outside_the_chapters

    def conclusion(self) -> str:
        return (f"`compose config` of the two differs in **{len(self.differences)}** paths, under "
                f"{', '.join(f'`{p}`' for p in CHAPTER_DIFFERENCES if self.changed(p))}; outside the "
                f"{len(CHAPTER_DIFFERENCES)} the chapter names: **{', '.join(self.outside_the_chapters) or 'none'}**.")


def _ci(lab: LabSession) -> dict[str, pd.DataFrame]:
    with lab.scope() as scope, project_folder(scope) as folder:
        dev = compose.Project("labkit-config", folder, (COMPOSE_FILE,), image_variables(lab.engine))
        ci = compose.Project("labkit-config", folder, (COMPOSE_FILE, CI_FILE), dev.variables)
        return {"ci_config": differences(dev.config(), ci.config(), str(folder))}


def run_ci_variant(lab: LabSession) -> CiResult:
    """Resolve compose.yaml alone and with compose.ci.yaml (``config --format json``, nothing started)."""
    return CiResult(lab.measure("ci_config", lambda: _ci(lab)["ci_config"]))
