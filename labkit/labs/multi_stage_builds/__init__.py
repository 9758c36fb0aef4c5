"""Notebook 04, multi-stage builds: what a builder stage leaves behind, and what the chapter's Go Dockerfile does.

The package follows the notebook's sections: :mod:`.declaration` (the services, their Dockerfiles, the tables,
syft; section 1), :mod:`.stages` (2: single-stage against multi-stage), :mod:`.module_layer` (3: the Go module
download as its own layer), :mod:`.stripping` (4: ``-ldflags="-s -w"``), :mod:`.runtime_bases` (5: scratch against
a distroless-style static base) and :mod:`.claims` (6). The names the notebook and the tests use are re-exported
here.
"""

from labkit.labs.multi_stage_builds.claims import CHAPTER_GO, COMPILED, MUCH_SMALLER, STRIPPED_AT_LEAST, check_claims
from labkit.labs.multi_stage_builds.declaration import (
    BUILD_COLUMNS,
    COLD,
    COLUMNS,
    EDITED,
    LAB,
    MODULE_COLUMNS,
    MULTI,
    RUNTIME_COLUMNS,
    SERVICES,
    SINGLE,
    STEM,
    STRIPPING_COLUMNS,
    Service,
    sbom_packages,
    syft,
    validate_services,
)
from labkit.labs.multi_stage_builds.module_layer import ModuleResult, go_sum, hash1, module_proxy, run_module_layer
from labkit.labs.multi_stage_builds.runtime_bases import RuntimeResult, parse_probe, run_runtime_bases
from labkit.labs.multi_stage_builds.stages import MultiStageResult, _copies, run_images
from labkit.labs.multi_stage_builds.stripping import StrippingResult, run_stripping
