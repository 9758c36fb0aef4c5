"""Notebook 08, networking: who can reach a published port, names between containers, outbound NAT, and what
each path costs.

A neighbour host (:mod:`labkit.instruments.netns`: a network namespace joined to this host by a veth pair) stands
in for another machine on the LAN; a bounded load client (:mod:`labkit.instruments.loadclient`) measures each path;
host firewall rules (:mod:`labkit.instruments.firewall`) are narrow, journalled and removed. Servers are busybox
``httpd`` in labkit's busybox base. Every ``run_*`` takes the notebook's session and returns a frozen result whose
numbers and sentences are computed from its tables.

The package follows the notebook's sections: :mod:`.declaration` (the lab's tables, requirements and limits),
:mod:`.rig` (parameter checks, load clients, containers, the neighbour's server), :mod:`.exposure` (1),
:mod:`.names` (2 and 3), :mod:`.paths` (4) and :mod:`.claims` (5). The names the notebook and the tests use are
re-exported here.
"""

from labkit.labs.networking.claims import check_claims
from labkit.labs.networking.declaration import LAB, PORTS_USED, STEM
from labkit.labs.networking.exposure import DOCKER_USER_RULE, INPUT_RULE, NO_RULE, ExposureResult, run_exposure
from labkit.labs.networking.names import (
    BRIDGE_ADDRESS,
    BRIDGE_NAME,
    BY_NAME,
    INTERNAL_OUT,
    NONE,
    OTHER_NETWORK,
    RESOLVER,
    USER_OUT,
    NamesResult,
    NatResult,
    run_names,
    run_outbound_nat,
)
from labkit.labs.networking.paths import (
    BY_NAME_PATH,
    DNAT,
    HOST_NETWORK,
    LOOPBACK,
    NGINX,
    PATHS,
    PROXY,
    PathsResult,
    run_paths,
)
from labkit.labs.networking.rig import check_port, free_port_above
