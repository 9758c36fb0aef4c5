"""Notebook 06, tags, digests and registries: a moved tag against a pinned digest, `latest` as just a tag, one tag
for two architectures, and the series' own Dockerfiles linted.

Everything is pushed to and pulled from Debian's docker-registry on 127.0.0.1 for the run only; no outside
registry is contacted. What needs online databases or keys (vulnerability scanning, signing) is shown as the
exact commands, never simulated. Every ``run_*`` takes the notebook's :class:`~labkit.core.session.LabSession`
and returns a frozen result whose numbers and sentences are computed from its tables.

The package follows the notebook's sections: :mod:`.declaration` (the lab's tables, requirements and the app),
:mod:`.moved_tag` (1), :mod:`.latest` (2 and 3), :mod:`.linting` (4), :mod:`.release` (5 and 6), :mod:`.login` (7)
and :mod:`.claims` (8). The names the notebook and the tests use are re-exported here.
"""

from labkit.labs.tags_digests_and_registries.claims import check_claims
from labkit.labs.tags_digests_and_registries.declaration import LAB, STEM
from labkit.labs.tags_digests_and_registries.latest import LatestResult, run_latest, run_manifest_list
from labkit.labs.tags_digests_and_registries.linting import (
    BLIND_SPOT,
    BLIND_SPOTS,
    MISTAKE,
    PIP_BY_PATH,
    PLANTED_MISTAKES,
    LintResult,
    dockerfile_sources,
    fill_placeholders,
    lint,
    run_lint,
    series_dockerfiles,
)
from labkit.labs.tags_digests_and_registries.login import LoginResult, run_login
from labkit.labs.tags_digests_and_registries.moved_tag import MovedTagResult, run_moved_tag
from labkit.labs.tags_digests_and_registries.release import ReleaseResult, RollbackResult, run_release, run_rollback
