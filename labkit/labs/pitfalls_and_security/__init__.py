"""Notebook 10, the pitfalls and the security defaults: each pitfall made to happen on the real engine, measured,
and then fixed the way the chapter says, with what the fix changes measured too.

Every ``run_*`` takes the notebook's :class:`~labkit.core.session.LabSession`, measures live (or replays the
recorded tables) and returns a frozen result holding tidy DataFrames; the numbers and sentences the notebook
quotes are properties and methods of those results.

The package follows the notebook's sections: :mod:`.declaration` (tables, requirements, the budget and the probe
image every experiment runs, ``labkit/assets/pitfalls/``), :mod:`.zombies` (1), :mod:`.stopping` (2),
:mod:`.users` (3), :mod:`.logs` (4), :mod:`.clock` (5), :mod:`.defaults` (6), :mod:`.secrets` (7) and
:mod:`.claims` (8).
"""

from labkit.labs.pitfalls_and_security.claims import check_claims
from labkit.labs.pitfalls_and_security.clock import ClockResult, run_clock
from labkit.labs.pitfalls_and_security.declaration import LAB, STEM
from labkit.labs.pitfalls_and_security.defaults import DefaultsResult, run_defaults
from labkit.labs.pitfalls_and_security.logs import LogGrowthResult, LogPlacesResult, run_log_growth, run_log_places
from labkit.labs.pitfalls_and_security.secrets import SecretResult, run_secrets
from labkit.labs.pitfalls_and_security.stopping import FORMS, StopResult, run_stop
from labkit.labs.pitfalls_and_security.users import UserResult, run_users
from labkit.labs.pitfalls_and_security.zombies import VARIANTS, ZombieResult, run_zombies
