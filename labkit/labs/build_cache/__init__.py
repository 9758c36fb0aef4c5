"""Notebook 03, the build cache and COPY order: a real Python app rebuilt over a history of edits.

Two Dockerfiles build the same app: A copies the dependency manifest and installs the dependencies before it
copies the source; B copies everything first. Each edit of a scripted history is applied to both and both are
rebuilt, with BuildKit and with the legacy builder, interleaved per edit; each build's own log says which steps
came from the cache. A second experiment sends the build context with and without a ``.dockerignore`` and scans
the image's layer tars for a fake secret ``.env``; a third builds the app with and without its dev dependencies;
a fourth writes the same patterns to ``.gitignore`` and ``.dockerignore`` and compares what git ignores with
what lands in the layer.

The package follows the notebook's sections: :mod:`.declaration` (the app, its Dockerfiles, the history, the
tables, the base and context every build uses; section 1), :mod:`.rebuilds` (2), :mod:`.context` (3),
:mod:`.dev_dependencies` (4), :mod:`.ignore_patterns` (5) and :mod:`.claims` (6). The names the notebook and the
tests use are re-exported here.
"""

from labkit.labs.build_cache.claims import CHAPTER_RATIO, check_claims
from labkit.labs.build_cache.context import ContextResult, run_context
from labkit.labs.build_cache.declaration import (
    DOCKERFILE_MEANING,
    DOCKERFILES,
    EDIT_KINDS,
    HISTORY,
    LAB,
    PIP_BASE_DOCKERFILE,
    STEM,
    Edit,
    dev_wheelhouse,
    dockerfiles_markdown,
    history_table,
    packages_installed,
    validate_history,
)
from labkit.labs.build_cache.dev_dependencies import DevResult, run_dev_dependencies
from labkit.labs.build_cache.ignore_patterns import ANY_DEPTH, IGNORED, SAME, IgnoreResult, run_ignore_patterns
from labkit.labs.build_cache.rebuilds import RebuildResult, build_order, run_rebuilds
