"""`labkit bench`'s cold phases: measured on an engine and a cache of their own, the reader's left as they were."""

from __future__ import annotations

import os
from pathlib import Path

import docker
import pytest

from labkit import paths
from labkit.app import bench
from labkit.instruments import daemons, images, shell


def test_the_environment_is_restored_after_the_block() -> None:
    os.environ.pop("LABKIT_BENCH_TEST_UNSET", None)
    os.environ["LABKIT_BENCH_TEST_SET"] = "before"
    try:
        with shell.environment(LABKIT_BENCH_TEST_UNSET="x", LABKIT_BENCH_TEST_SET="during"):
            assert os.environ["LABKIT_BENCH_TEST_UNSET"] == "x" and os.environ["LABKIT_BENCH_TEST_SET"] == "during"
        assert "LABKIT_BENCH_TEST_UNSET" not in os.environ and os.environ["LABKIT_BENCH_TEST_SET"] == "before"
    finally:
        os.environ.pop("LABKIT_BENCH_TEST_SET", None)


@pytest.mark.docker
@pytest.mark.root
def test_cold_phases_use_a_fresh_engine_and_cache_and_leave_the_readers_alone(
        docker_client: docker.DockerClient) -> None:
    before = images.require_base(docker_client, "busybox").image_id
    environment = {name: os.environ.get(name) for name in ("DOCKER_HOST", "LABKIT_CACHE")}
    cache_entries = sorted(paths.cache_dir().iterdir())
    measured = bench.Bench()
    bench.cold_phases(measured, ("busybox",), lab_machine=False)
    rows = measured.frame().set_index(["group", "item", "condition"])["value"]
    assert rows[("make lab", "engine", "cold")] > 0
    assert 0 < rows[("cold bases", "busybox", "cold")] <= rows[("make lab", "bases", "cold")]  # the base, then all
    assert {name: os.environ.get(name) for name in environment} == environment
    assert sorted(paths.cache_dir().iterdir()) == cache_entries  # nothing made in the reader's cache
    assert images.require_base(docker_client, "busybox").image_id == before  # the reader's engine untouched
    assert not list(daemons.state_parent().glob("*")) and not Path(daemons.RUNTIME_PARENT).exists()
