"""Notebook 12's declaration: its tables, requirements, sections, the service images it makes at setup, and the
knobs every experiment shares."""

from __future__ import annotations

from labkit.core.lab import Lab
from labkit.labs.compose_and_the_single_box_path.service_images import APP_BASE, CACHE_BASE, DB_BASE, prepare

STEM = "12-compose-and-the-single-box-path"

SERVICES = ("app", "db", "cache")
VOLUMES = ("db_data",)
APP_CONTAINER_PORT = 3000
PORTS_USED = 1
CHAPTER_INTERVAL_S = 5  # the chapter's db healthcheck: interval 5s, retries 10
WAIT_TIMEOUT_S = 120  # `up --wait`: every service running (and healthy where it has a check) within this
PROBE_TIMEOUT_S = 2.0
# Conditions of `depends_on` the notebook compares for the db: the chapter's, and the one its cache gets.
HEALTHY, STARTED = "service_healthy", "service_started"


LAB = Lab(
    stem=STEM,
    topic="The local stack with Compose, and the single-box path",
    bases=(DB_BASE, CACHE_BASE, APP_BASE),
    tables={
        "bringup": ("variant", "condition", "interval_s", "repeat", "up_s", "db_ready_s", "db_healthy_s",
                    "app_started_s", "app_healthy_s", "connect_failures", "left_after_down"),
        "timeline": ("variant", "repeat", "service", "event", "t_s"),
        "persistence": ("step", "count", "source", "volume_kept"),
        "exposure": ("client", "target", "reachable", "status", "error"),
        "restarts": ("policy", "state_after", "restart_count", "back_s", "answering_s", "watched_s"),
        "unhealthy": ("health", "same_container", "running", "restart_count", "unhealthy_after_s", "watched_s"),
        "scale": ("port", "exit_code", "running", "error"),
        "ci_config": ("path", "dev", "ci"),
        "limits": ("compose", "version", "memory_bytes", "cpus", "pids", "error"),
        "deploy_requests": ("t_s", "latency_s", "status", "version", "error"),
        "deploy": ("up_start_s", "up_end_s", "requests", "failed", "longest_gap_s", "first_new_s", "compose_version"),
        "rollout": ("replica", "stopped_s", "started_s"),
        "unit": ("step", "command", "exit_code", "output", "answered_s", "pid1"),
    },
    prepare=prepare,
)
