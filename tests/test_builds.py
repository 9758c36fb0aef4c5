"""labkit.instruments.builds: a build ends with the Python process that started it, however that process ends —
a `docker build` left running would go on holding the engine, the disk and the CPU after a timeout, a SIGTERM
or a SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from labkit.instruments import images, procfs
from labkit.instruments.buildlog import BUILDERS

ROOT = Path(__file__).resolve().parent.parent

# A build whose RUN step sleeps for a marker number of seconds: its `sleep` is found on the host by that number.
CHILD = """
import sys
from pathlib import Path
from labkit.instruments import builds, engine, images
client = engine.connect()
base = images.require_base(client, "busybox").tag
context = Path(sys.argv[2])
(context / "Dockerfile").write_text(f"FROM {base}\\nRUN sleep {sys.argv[3]}\\n")
with engine.Scope(client, engine.new_run_id(), lab="tests") as scope:
    builds.build(context, "labkit-test/orphan-build", scope, builder=sys.argv[1], no_cache=True)
"""


def _poll(condition: Callable[[], object], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.docker
@pytest.mark.root
@pytest.mark.parametrize("builder", BUILDERS)
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_build_ends_with_the_process_that_started_it(docker_client: docker.DockerClient, builder: str,
                                                       how: signal.Signals, tmp_path: Path) -> None:
    images.ensure_base(docker_client, "busybox")
    marker = str(3000 + os.getpid() % 1000 + len(builder) + how)  # unique enough on this host for one test
    child = subprocess.Popen([sys.executable, "-c", CHILD, builder, str(tmp_path), marker], cwd=ROOT)
    try:
        assert _poll(lambda: procfs.running(["sleep", marker]), 120), "the build's RUN step never started"
        child.send_signal(how)
        child.wait(timeout=60)
        ended = _poll(lambda: not procfs.running(["sleep", marker]), 60)
    finally:
        if child.poll() is None:
            child.kill()
        for pid in procfs.running(["sleep", marker]):  # leave nothing behind, whatever the verdict
            os.kill(pid, signal.SIGKILL)
    assert ended, f"the RUN step of a {builder} build outlived the Python process that started it ({how.name})"
    # The engine removes the cancelled step's container itself (--force-rm): at once here, some seconds later on
    # a slowed engine. Nothing labels that container, so nothing else would remove it.
    assert _poll(lambda: not _step_containers(docker_client, marker), 60), \
        f"the cancelled {builder} build left its step's container behind"


def _step_containers(client: docker.DockerClient, marker: str) -> list[str]:
    """Containers of any state whose command is the marked RUN step. Sparse: the listing alone, without inspecting
    each container, which fails when another test's container is removed between the two."""
    return [c.id for c in client.containers.list(all=True, sparse=True)
            if f"sleep {marker}" in str(c.attrs.get("Command", ""))]


@pytest.mark.docker
def test_the_build_cache_a_block_adds_is_removed_and_what_was_there_stays(docker_client: docker.DockerClient,
                                                                           tmp_path: Path) -> None:
    from labkit.instruments import builds, engine

    def build(name: str) -> None:  # a context no build has sent before: new cache records
        folder = tmp_path / name
        folder.mkdir()
        (folder / "marker").write_text(f"{name} {time.time_ns()}\n")
        (folder / "Dockerfile").write_text("FROM scratch\nCOPY marker /marker\n")
        builds.build(folder, f"labkit-test-cache-{name}:{time.time_ns()}", scope)

    with engine.Scope(docker_client, "test-build-cache") as scope:
        build("kept")
        kept = engine.build_cache_records(docker_client)
        with engine.build_cache_as_found(docker_client):
            build("added")
            during = engine.build_cache_records(docker_client)
        after = engine.build_cache_records(docker_client)
    assert during.keys() - kept.keys(), "the build inside the block added no cache record: nothing was tested"
    assert after.keys() == kept.keys()
