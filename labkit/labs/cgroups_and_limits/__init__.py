"""Notebook 07, kernel resources: cgroup memory and the OOM killer, CPU and pids limits, graphed over time.

Every stress container runs labkit's static ``stress`` program (:mod:`labkit.instruments.stress`) under memory,
pids and CPU limits, inside a *fence*: a cgroup labkit makes per experiment (``labkit/<run_id>/<experiment>``,
itself limited) and names as the container's ``--cgroup-parent``. The fence is what keeps the host safe when an
experiment takes a container's own limit away, and it outlives the container, so its counters can be read after
the container's own group is gone. A :class:`~labkit.instruments.sampler.CgroupSampler` reads the container's
own group (found from its PID, never guessed) until the group disappears.

Every ``run_*`` takes the notebook's :class:`~labkit.core.session.LabSession`, measures live (or replays the
recorded tables) and returns a frozen result whose properties and ``conclusion()`` are computed from the tables.

The package follows the notebook's sections: :mod:`.declaration` (the lab's tables and requirements), :mod:`.rig`
(the fenced stress rig every experiment stands on), :mod:`.memory` (1, 4, 7), :mod:`.page_cache` (2),
:mod:`.child_oom` (3), :mod:`.cpu`, :mod:`.memory_neighbour` and :mod:`.io` (5), :mod:`.pids` (6) and
:mod:`.claims` (8). The names the notebook and the tests use are re-exported here.
"""

from labkit.labs.cgroups_and_limits.child_oom import ChildOomResult, run_child_oom
from labkit.labs.cgroups_and_limits.claims import check_claims
from labkit.labs.cgroups_and_limits.cpu import (
    CpuQuotaResult,
    NeighbourResult,
    SharesResult,
    run_cpu_quota,
    run_cpu_shares,
    run_noisy_neighbour,
)
from labkit.labs.cgroups_and_limits.declaration import CPU_TOLERANCE, DRIVERS, LAB, NEIGHBOUR_TOLERANCE, STEM
from labkit.labs.cgroups_and_limits.io import IoResult, run_io
from labkit.labs.cgroups_and_limits.memory import MemoryRun, run_memory_ramp, run_memory_swap, run_memory_unlimited
from labkit.labs.cgroups_and_limits.memory_neighbour import MemoryNeighbourResult, run_memory_neighbour
from labkit.labs.cgroups_and_limits.page_cache import PageCacheResult, run_page_cache
from labkit.labs.cgroups_and_limits.pids import PidsNeighbourResult, PidsResult, run_pids, run_pids_neighbour
