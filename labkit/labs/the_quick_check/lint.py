"""Section 3: hadolint's findings on each step's Dockerfile (offline; no engine needed)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from labkit.core.session import LabSession
from labkit.instruments import hadolint, images
from labkit.labs.the_quick_check.declaration import BASES, STEP_NAMES, fill, steps_of

CACHE_IMAGE_NAME = "labkit-quick-check-npm-cache:scope"  # the cache image's tag as a run names it (its scope id)


@dataclass(frozen=True)
class LintResult:
    """`lint`: one row per finding — step, line, code, level, message; `steps`: the steps linted, in order."""

    lint: pd.DataFrame
    steps: tuple[str, ...]

    def codes(self, step: str) -> list[str]:
        return sorted(set(self.lint[self.lint["step"] == step]["code"]))

    def table(self) -> pd.DataFrame:
        """Per step: how many findings and which rules."""
        return pd.DataFrame([{"step": step, "findings": int((self.lint["step"] == step).sum()),
                              "rules": ", ".join(self.codes(step)) or "none"} for step in self.steps]).set_index("step")

    def conclusion(self) -> str:
        first, final = self.steps[0], self.steps[-1]
        gone = sorted(set(self.codes(first)) - set(self.codes(final)))
        left = self.codes(final)
        return (f"**What we measured.** hadolint reports {', '.join(self.codes(first)) or 'nothing'} on the "
                f"teammate's Dockerfile and {', '.join(left) or 'nothing'} on the last one; the fixes removed "
                f"{', '.join(gone) or 'no rule'}.")


def run_lint(lab: LabSession, steps: tuple[str, ...] = STEP_NAMES) -> LintResult:
    """hadolint on each of `steps`' Dockerfiles, their placeholders filled with the bases' tags as a run fills them."""
    chosen = steps_of(steps)

    def experiment() -> pd.DataFrame:
        tags = {name: images.recipe(name).tag for name in BASES}
        frames = [hadolint.findings(fill(step.template, CACHE_IMAGE_NAME, tags)).assign(step=step.name)
                  for step in chosen]
        return pd.concat(frames, ignore_index=True)[["step", *hadolint.FINDING_COLUMNS]]

    return LintResult(lab.measure("lint", experiment, steps=list(steps)), tuple(s.name for s in chosen))
