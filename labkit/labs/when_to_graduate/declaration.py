"""Notebook 13's declaration: its tables, requirements and the knobs' bounds."""

from __future__ import annotations

from pathlib import Path

from labkit.core.lab import Lab
from labkit.instruments import loadclient
from labkit.instruments.limits import Limits

STEM = "13-when-to-graduate"
APP_BASE, CLIENT_BASE = "busybox", "python-distroless"
APP_PORT = 8080
STACK = "lk13"  # the stack's name: its service is lk13_web, its overlay network lk13_default
SERVICE = f"{STACK}_web"
NETWORK = f"{STACK}_default"
ORDERS = ("stop-first", "start-first")
LOADCLIENT = Path(loadclient.__file__)
CLIENT_LIMITS = Limits.of(memory_mib=128, pids=64, cpus=1.0)
APP_LIMITS = Limits.of(memory_mib=32, pids=32, cpus=0.5)
MAX_REPLICAS = 12
LOAD_CONCURRENCY = 1  # one request at a time: the client must not starve the nodes' daemons of CPU
MAX_REQUESTS_PER_LOAD = 200_000  # the load's count bound; the end of the update (or the window) ends it first
REQUEST_TIMEOUT_S = 2.0  # one request may take this long: an address that went silent fails instead of stalling
VOLUME = "lk13-data"  # the stateful replica's local named volume, and the file it writes there
MARKER = "/data/written-on-the-first-node"
WRITTEN, MOVED, LEFT_BEHIND = "written by the replica", "read by the moved replica", "read on the first node"

LAB = Lab(
    stem=STEM,
    topic="When to graduate",
    bases=(APP_BASE, CLIENT_BASE),
    tables={
        "placement": ("task", "node", "state", "image"),
        "as_stack": ("step", "change", "refused_text", "cli", "exit_code", "message", "asked_ports", "asked_restart",
                     "published", "restart"),
        "healing": ("event", "heartbeat_s", "detected_s", "replaced_s", "replaced", "detail"),
        "rollout": ("case", "order", "round", "from_image", "to_image", "final_image", "state", "duration_s",
                    "requests", "failed", "longest_gap_s", "images_match", "load_covered"),
        "requests": ("case", "round", "index", "started_s", "latency_s", "status", "error"),
        "portability": ("runtime", "version", "config_digest", "output", "repeat", "position", "wall_s", "missing"),
        "stateful": ("step", "node", "marker", "detail"),
    },
)
