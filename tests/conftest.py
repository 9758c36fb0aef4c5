"""Shared fixtures. Live tests need the engine: in CI (CI=true) a missing engine fails them, never skips."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest

from labkit.core.session import LabSession, open_session
from labkit.instruments import engine, undo

ROOT = Path(__file__).resolve().parent.parent


def default_sigint() -> None:
    """A preexec_fn for a child a test interrupts: a background job of a non-interactive shell (`nohup make test
    &`, a CI step) starts with SIGINT ignored and a child inherits that, so Python would install no
    KeyboardInterrupt handler and the SIGINT would be lost. The child gets the default disposition instead."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def missing(what: str) -> None:
    """A live test cannot run here: a failure in CI (CI=true), where everything must be present; a skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"CI needs {what}")
    pytest.skip(f"needs {what}")


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    try:
        return engine.connect()
    except engine.EngineUnavailable as exc:
        missing(f"a live Docker Engine: {exc}")
        raise


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked `root` (live kernel tests: cgroups, namespaces, mounts) needs uid 0, before any fixture."""
    if item.get_closest_marker("root") and os.geteuid() != 0:
        missing("root: the live tests create cgroups, namespaces and mounts on the real kernel")


@pytest.fixture(scope="session")
def quick_series(docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every notebook executed once, in quick mode against the live engine, as `labkit run` does it; the results
    root (one folder per notebook). Shared by the tests that check what each notebook recorded."""
    results = tmp_path_factory.mktemp("results")
    done = subprocess.run([sys.executable, "-m", "labkit", "run", "--quick", "--mode", "live"], cwd=ROOT,
                          env={**os.environ, "LABKIT_RESULTS_DIR": str(results)}, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=3600, check=False)
    print(done.stdout)
    assert done.returncode == 0, done.stdout
    # Nothing a reader cannot act on: kernels run over Unix sockets, so ipykernel has no TCP warning to print.
    assert "without encryption" not in done.stdout
    return results


@pytest.fixture(scope="module")
def replay(request: pytest.FixtureRequest) -> LabSession:
    """The test module's lab (its module-level ``LAB``) on its recorded results. A replay session hands back the
    recorded tables, so a call fails only where the lab validates its parameters first."""
    return open_session(request.module.LAB, mode="replay")


def leftovers(client: docker.DockerClient, run_id: str | None = None) -> dict[str, list[str]]:
    """labkit-labelled containers, networks and volumes still present (of one run, or of any)."""
    selector = engine.LABEL_RUN if run_id is None else f"{engine.LABEL_RUN}={run_id}"
    filters = {"label": selector}
    return {
        "containers": [c.name for c in client.containers.list(all=True, filters=filters)],
        "networks": [n.name for n in client.networks.list(filters=filters)],
        "volumes": [v.name for v in client.volumes.list(filters=filters)],
    }


SESSION_STARTED = time.time()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Undo host-wide changes a killed labkit process left (a disabled binfmt entry, a throttled engine) before
    any test reads the host: one test's SIGKILL must not break the rest of the run."""
    for line in undo.undo_orphans():
        print(f"\nhost: {line}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say in the log which engine the notebooks ran against, and how each execution went."""
    report = Path(__file__).resolve().parent.parent / "build" / "quick" / "notebooks" / "run-report.json"
    if not report.exists() or report.stat().st_mtime < SESSION_STARTED:
        return
    terminalreporter.section("notebooks executed in this session")
    try:
        details = engine.info(engine.connect())
        terminalreporter.write_line(f"engine: Docker {details.version} (API {details.api_version}, "
                                    f"{details.storage_driver}, cgroup {details.cgroup_version}) "
                                    f"at {engine.engine_address()}")
    except engine.EngineUnavailable as exc:
        terminalreporter.write_line(f"engine: unavailable ({exc})")
    for run in json.loads(report.read_text())["notebooks"]:
        terminalreporter.write_line(f"{run['notebook']}: {run['status']} in {run['wall_s']:.1f} s → {run['output']}")
