"""Notebook 01, what a container actually is: namespaces, privileges, a container from scratch, start-up cost.

Every ``run_*`` takes the notebook's :class:`~labkit.core.session.LabSession`, measures live (or replays the
recorded tables) and returns a frozen result holding tidy DataFrames; the numbers and sentences the notebook
quotes are properties and methods of those results, computed from the frames.

The package follows the notebook's sections: :mod:`.declaration` (the lab's tables, requirements and the budget
every container runs under), :mod:`.namespaces` (1, with the clock), :mod:`.privileges` (2, with AppArmor),
:mod:`.from_scratch` (3), :mod:`.startup` (4), :mod:`.vm_boot` (5) and :mod:`.claims` (6). The names the notebook
and the tests use are re-exported here.
"""

from labkit.labs.what_a_container_is.claims import check_claims
from labkit.labs.what_a_container_is.declaration import (
    DEFAULT,
    DOCKER_SDK,
    HOST,
    HOST_NETWORK,
    LAB,
    NET_RAW,
    STARTUP_METHODS,
    STEM,
)
from labkit.labs.what_a_container_is.from_scratch import ScratchResult, run_from_scratch
from labkit.labs.what_a_container_is.namespaces import ClockResult, NamespaceResult, run_clock, run_namespaces
from labkit.labs.what_a_container_is.privileges import (
    ConfinementResult,
    PrivilegeResult,
    run_confinement,
    run_privileges,
)
from labkit.labs.what_a_container_is.startup import StartupResult, run_startup
from labkit.labs.what_a_container_is.vm_boot import VmBootResult, run_vm_boot
