"""Notebook 11, arm64 against amd64: exec format error, the cost of emulation, cross-building, one tag for two.

Every ``run_*`` takes the notebook's :class:`~labkit.core.session.LabSession`, measures live (or replays the
recorded tables) and returns a frozen result holding tidy DataFrames; the numbers and sentences the notebook
quotes are properties and methods of those results. "Native" is this host's platform and "foreign" the other
one (arm64 on an amd64 host, amd64 on an arm64 host), so the notebook runs in both directions.

The package follows the notebook's sections: :mod:`.declaration` (the lab's names, limits, bases and tables),
:mod:`.exec_format` (1), :mod:`.emulation` (2), :mod:`.builds` (3), :mod:`.manifest` (4) and :mod:`.claims` (5).
The names the notebook and the tests use are re-exported here.
"""

from labkit.labs.arm64_vs_amd64.builds import BuildResult, program_source, run_builds
from labkit.labs.arm64_vs_amd64.claims import check_claims
from labkit.labs.arm64_vs_amd64.declaration import (
    BUILD_METHODS,
    CPU_BOUND,
    CROSS_BUILD,
    DEFAULT_PLATFORM,
    EMULATED_BUILD,
    GZIP,
    HASH,
    LAB,
    LOOP,
    NATIVE_BUILD,
    START,
    STEM,
    WORKLOADS,
    builder_base,
    cross_compiler,
)
from labkit.labs.arm64_vs_amd64.emulation import FULL_SIZES, QUICK_SIZES, EmulationResult, run_emulation_cost
from labkit.labs.arm64_vs_amd64.exec_format import ExecFormatResult, run_exec_format
from labkit.labs.arm64_vs_amd64.manifest import run_manifest_list
