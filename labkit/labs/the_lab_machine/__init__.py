"""Notebook 15, the lab machine: a Debian guest with systemd, cgroup v2 and Docker's systemd driver, booted by
labkit under QEMU, timed, and probed beside the host (whichever cgroup version it has) with the same program.

:mod:`.declaration` (the lab's tables, requirements and limits), :mod:`.machine` (sections 1–4: the boots and the
probe on both machines) and :mod:`.claims` (5). The names the notebook and the tests use are re-exported here.
"""

from labkit.labs.the_lab_machine.claims import check_claims
from labkit.labs.the_lab_machine.declaration import GUEST, HOST, LAB, MARKS, STEM
from labkit.labs.the_lab_machine.machine import MachineResult, run_machine
