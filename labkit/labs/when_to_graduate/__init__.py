"""Notebook 13, when to graduate: what a real orchestrator adds, measured on a three-node Swarm on one machine.

The cluster is :mod:`labkit.instruments.swarm` (three extra daemons in network namespaces on one bridge); the load
is :mod:`labkit.instruments.loadclient`. :mod:`.declaration` holds the tables and bounds, :mod:`.orchestrator` the
swarm's live experiments, :mod:`.single_box` the same app under Compose on one engine, :mod:`.under_load` the load
client beside an update, :mod:`.stateful` a replica's volume moved, :mod:`.portability` the image under other
runtimes, :mod:`.result` what they mean (computed from the tables) and :mod:`.claims` the ledger rows.
"""

from labkit.labs.when_to_graduate.claims import check_claims
from labkit.labs.when_to_graduate.declaration import LAB, STEM
from labkit.labs.when_to_graduate.orchestrator import Knobs, check, run_orchestrator, stack_file
from labkit.labs.when_to_graduate.portability import PortabilityResult, run_portability
from labkit.labs.when_to_graduate.result import OrchestratorResult, StatefulResult, gaps_and_failures
