"""TCP ports on this host: whether something already listens on one."""

from __future__ import annotations

import socket

EVERY_ADDRESS = "0.0.0.0"  # for probing only: a port free here is free on every IPv4 address
LOOPBACK = "127.0.0.1"


def port_free(port: int, address: str = LOOPBACK) -> bool:
    """Whether TCP `port` can be bound on `address` (:data:`EVERY_ADDRESS`: on every IPv4 address of this host),
    i.e. nothing listens on it there."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is no owner
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True
