"""Notebook 14, the quick check: the chapter's bad Node Dockerfile fixed one step at a time, each step measured.

Every ``run_*`` takes the notebook's :class:`~labkit.core.session.LabSession`, measures live (or replays the
recorded tables) and returns a frozen result holding tidy DataFrames; the numbers and sentences the notebook
quotes are properties and methods of those results.

The package follows the notebook's sections: :mod:`.declaration` (the app, the steps and their Dockerfiles, the
teammate's checkout, the npm cache, the tables), :mod:`.waterfall` (1 and 2: cold builds and the images, code-only
and dependency rebuilds), :mod:`.lint` (3), :mod:`.node_env` (4) and :mod:`.claims` (5).
"""

from labkit.labs.the_quick_check.claims import check_claims
from labkit.labs.the_quick_check.declaration import (
    LAB,
    QUICK_STEPS,
    STEM,
    STEP_NAMES,
    STEPS,
    fix_diff,
    steps_markdown,
    steps_of,
)
from labkit.labs.the_quick_check.lint import LintResult, run_lint
from labkit.labs.the_quick_check.node_env import NodeEnvResult, run_node_env
from labkit.labs.the_quick_check.waterfall import (
    CHAPTER_TARGET_BYTES,
    CHAPTER_TARGET_S,
    WaterfallResult,
    run_waterfall,
)
