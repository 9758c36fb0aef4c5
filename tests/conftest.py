"""Shared fixtures. Live tests need the engine: in CI (CI=true) a missing engine fails them, never skips."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

import docker
import pytest

from labkit.app import runner
from labkit.core.lab import Lab
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


def open_live(lab: Lab, results: Path) -> LabSession:
    """`lab` live in quick mode, its results written under `results` rather than the checkout's build folder. The
    variable that says so is set only while the session opens: a notebook run later in the same pytest must still
    write where `make test` reads."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LABKIT_RESULTS_DIR", str(results))
        return open_session(lab, mode="live", quick=True)


@pytest.fixture(scope="module")
def live(docker_client: docker.DockerClient, request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> LabSession:
    """The test module's lab (its module-level ``LAB``) live in quick mode, one session for the module."""
    return open_live(request.module.LAB, tmp_path_factory.mktemp("results"))


EXPERIMENT_CHILD = """
import signal
from labkit.core.session import open_session
from labkit.errors import Terminated
from labkit.labs import {module} as lab_module

def terminated(signum, frame):
    raise Terminated(f"signal {{signum}}")  # as the labkit command does

signal.signal(signal.SIGTERM, terminated)
lab = open_session(lab_module.LAB, mode="live", quick=True)
print(lab.run_id, flush=True)
lab_module.{call}
"""


def interrupt_experiment(module: str, call: str, results: Path, signum: int, reached: Callable[[str], bool],
                         moment: str, within_s: float = 240) -> tuple[str, subprocess.Popen[str]]:
    """Run `lab_module.<call>` (`lab` is a live quick session of ``labkit.labs.<module>``) in a process of its own,
    send it `signum` once `reached(run_id)` is true (polled; `moment` names it for the failure message), and
    return its run id and the ended process.

    As a reader presses Ctrl-C again when the first goes unanswered: an interrupt that lands while Python forks can
    be lost (its at-fork handlers swallow it; see shell.HELD_WHILE_FORKING), so one more is sent after 30 s. A child
    that finished its experiment before the interrupt took effect ends 0; either way nothing may be left behind.
    A child that outlives the test is killed and its run swept, so that no later test finds its objects."""
    child = subprocess.Popen([sys.executable, "-c", EXPERIMENT_CHILD.format(module=module, call=call)], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "LABKIT_RESULTS_DIR": str(results)},
                             preexec_fn=default_sigint)
    run_id = ""
    try:
        assert child.stdout is not None
        run_id = child.stdout.readline().strip()
        deadline = time.monotonic() + within_s
        while not reached(run_id):
            assert time.monotonic() < deadline and child.poll() is None, f"the experiment never got to: {moment}"
            time.sleep(0.05)  # polling for the moment to interrupt at
        child.send_signal(signum)
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.send_signal(signum)
            child.wait(timeout=120)
    finally:
        if killed_if_running(child) and run_id:
            runner.sweep(run_id)
    return run_id, child


def killed_if_running(child: subprocess.Popen[Any]) -> bool:
    """Kill `child` if it is still running (a test that failed before it ended) and reap it; whether it had to."""
    if child.poll() is not None:
        return False
    child.kill()
    child.wait(timeout=30)
    return True


def interrupted_run(number: str, results: Path, signum: int, ready: Callable[[], bool],
                    moment: str) -> tuple[int, str]:
    """`labkit run --quick --mode live <number>` in a session of its own, sent `signum` to its whole process group
    (as Ctrl-C in a terminal does) once `ready()` (polled; `moment` names it); its exit status and output."""
    proc = subprocess.Popen([sys.executable, "-m", "labkit", "run", "--quick", "--mode", "live", number, "--output",
                             str(results)], cwd=ROOT, env={**os.environ, "LABKIT_RESULTS_DIR": str(results)},
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=default_sigint)
    deadline = time.monotonic() + 300
    while not ready():
        assert proc.poll() is None, f"the run ended before {moment}"
        assert time.monotonic() < deadline, f"the run never got to: {moment}"
        time.sleep(0.05)
    os.killpg(proc.pid, signum)
    output, _ = proc.communicate(timeout=180)
    return proc.returncode, output


def interrupted_run_leaves_nothing(client: docker.DockerClient, stem: str, number: str, results: Path,
                                   signum: int, made: str, temp_glob: str) -> None:
    """:func:`interrupted_run` of notebook `stem` once it has made its first object of kind `made` ("containers"
    or "images"): it must end non-zero and leave no container, image or temporary folder (`temp_glob` in the temp
    folder) behind."""
    def temp_folders() -> set[Path]:
        return set(Path(tempfile.gettempdir()).glob(temp_glob))

    assert lab_objects(client, stem) == {"containers": [], "images": []}, "clean before the test"
    before = temp_folders()
    status, output = interrupted_run(number, results, signum, lambda: bool(lab_objects(client, stem)[made]),
                                     f"it made any {made}")
    assert status != 0, output
    assert lab_objects(client, stem) == {"containers": [], "images": []}, output
    assert temp_folders() - before == set(), output


def lab_objects(client: docker.DockerClient, stem: str) -> dict[str, list[str]]:
    """Containers and images of notebook `stem` still present, from any run."""
    filters = {"label": f"labkit.lab={stem}"}
    return {"containers": [c.name for c in client.containers.list(all=True, filters=filters, ignore_removed=True)],
            "images": [i.short_id for i in client.images.list(all=True, filters=filters)]}


def leftovers(client: docker.DockerClient, run_id: str | None = None) -> dict[str, list[str]]:
    """labkit-labelled containers, networks and volumes still present (of one run, or of any)."""
    selector = engine.LABEL_RUN if run_id is None else f"{engine.LABEL_RUN}={run_id}"
    filters = {"label": selector}
    return {
        "containers": [c.name for c in client.containers.list(all=True, filters=filters, ignore_removed=True)],
        "networks": [n.name for n in client.networks.list(filters=filters)],
        "volumes": [v.name for v in client.volumes.list(filters=filters)],
    }


SESSION_STARTED = time.time()


BUILD_CACHE = ExitStack()  # the build cache the tests add, removed when the session ends


def pytest_sessionstart(session: pytest.Session) -> None:
    """Undo host-wide changes a killed labkit process left (a disabled binfmt entry, a throttled engine) before
    any test reads the host: one test's SIGKILL must not break the rest of the run. Note the engine's build cache,
    so that what the tests' builds add to it is removed at the end as `labkit run` does."""
    for line in undo.undo_orphans():
        print(f"\nhost: {line}")
    with suppress(engine.EngineUnavailable):  # without an engine, the live tests say so themselves
        BUILD_CACHE.enter_context(engine.build_cache_as_found(engine.connect()))


def pytest_sessionfinish(session: pytest.Session) -> None:
    BUILD_CACHE.close()


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
