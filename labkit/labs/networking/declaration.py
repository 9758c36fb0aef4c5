"""Notebook 08's declaration: its tables, requirements, sections and the limits every container runs under."""

from __future__ import annotations

from pathlib import Path

from labkit.core.lab import Lab
from labkit.instruments import loadclient
from labkit.instruments.limits import Limits

STEM = "08-networking"
SERVER_BASE, CLIENT_BASE = "busybox", "python-slim"
LIMITS = Limits.of(memory_mib=128, pids=64, cpus=1.0)
CONTAINER_PORT = 80
NEIGHBOUR_PORT = 8000  # the neighbour's own server (a fresh namespace: nothing else listens there)
PROBE_TIMEOUT_S = 2.0
READY_TIMEOUT_S = 30.0
LOADCLIENT = Path(loadclient.__file__)
HOST_FASTER = 0.9  # host networking counts as faster when its median latency is at most 0.9× the published port's
MAX_BULK_MIB = 512
# The experiments publish at most this many ports from `port` upwards.
PORTS_USED = 4


def httpd_script(bulk_mib: int, port: int = CONTAINER_PORT) -> str:
    """A shell line for busybox: a small page, a `bulk_mib` MiB file of zeros, then httpd in the foreground."""
    return (f"mkdir -p /www && echo ok > /www/index.html && dd if=/dev/zero of=/www/bulk bs=1048576 "
            f"count={bulk_mib} 2>/dev/null && exec httpd -f -p {port} -h /www")


LAB = Lab(
    stem=STEM,
    topic="Networking",
    bases=(SERVER_BASE, CLIENT_BASE),
    tables={
        "exposure": ("mode", "firewall", "client", "target", "reachable", "status", "error"),
        "listening": ("mode", "family", "address", "port"),
        "names": ("case", "network", "target", "ok", "output"),
        "host_namespaces": ("kind", "host_inode", "container_inode", "shared"),
        "nat": ("network", "container_address", "seen_source", "host_address"),
        "latency": ("path", "round", "index", "latency_s", "status", "bytes", "error"),
        "throughput": ("path", "round", "bytes", "seconds", "bytes_per_s", "error"),
    },
)


