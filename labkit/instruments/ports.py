"""TCP ports on this host: whether something already listens on one."""

from __future__ import annotations

import socket

from labkit.errors import BadParameter

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


def free_port() -> int:
    """A loopback port nothing listens on now (the kernel's choice)."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def check_port(port: object, name: str, example: int, *, live: bool = True) -> int:
    """`port` when it is an unprivileged TCP port and (when `live`) nothing listens on 127.0.0.1:`port`; else
    BadParameter, the port shown as the reader gave it (`name`: ``port=`` in a notebook, ``--port `` on the command
    line) and `example` in the hint."""
    if not isinstance(port, int) or isinstance(port, bool) or not 1024 <= port <= 65535:
        raise BadParameter(f"{name}{port!r}: need a whole number from 1024 to 65535.", f"E.g. {name}{example}.")
    if live and not port_free(port):
        raise BadParameter(f"{name}{port}: something on this host already listens on {LOOPBACK}:{port}.",
                           f"Choose another port, e.g. {name}{example + 1} (`ss -ltn` lists the ones in use).")
    return port
