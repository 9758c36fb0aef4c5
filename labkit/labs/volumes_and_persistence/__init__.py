"""Notebook 09, volumes and persistence: what survives what, where it lives, what each storage path costs, backup
and restore, and ownership on bind mounts.

Every ``run_*`` takes the notebook's :class:`~labkit.core.session.LabSession`, measures live (or replays the
recorded tables) and returns a frozen result holding tidy DataFrames; the numbers and sentences the notebook quotes
are properties and methods of those results.

The package follows the notebook's sections: :mod:`.declaration` (the tables, requirements and the rig every
experiment runs in), :mod:`.survival` (1, 2), :mod:`.costs` (3), :mod:`.backup` (4, 5), :mod:`.portable` (4: the
volume taken to another engine) and :mod:`.claims` (6).
"""

from labkit.labs.volumes_and_persistence.backup import BackupResult, OwnershipResult, run_backup, run_ownership
from labkit.labs.volumes_and_persistence.claims import check_claims
from labkit.labs.volumes_and_persistence.costs import CopyUpResult, CostResult, run_copy_up, run_costs
from labkit.labs.volumes_and_persistence.declaration import DOCKERFILE, HOST, LAB, STEM
from labkit.labs.volumes_and_persistence.portable import MovedResult, run_moved
from labkit.labs.volumes_and_persistence.survival import (
    BindEditResult,
    SurvivalResult,
    run_bind_edits,
    run_survival,
)
