"""`labkit lab`: JupyterLab on 127.0.0.1 over readers' copies of the notebooks, with the project's settings.

The tracked notebooks stay as they are stored (without outputs): the launcher opens copies under
``build/lab/``, and JupyterLab's autosave writes there. A copy is made once and then belongs to the reader;
when the tracked notebook changes later, the launcher says so and leaves the reader's copy alone.
The server runs in a session of its own, so Ctrl-C reaches only the launcher, which stops it (its kernels
with it) and then removes whatever docker objects and cgroups those kernels' runs left behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import nbformat

from labkit import paths
from labkit.app import runner
from labkit.app.kernels import kernel_transport, runtime_dir
from labkit.errors import LabkitError
from labkit.instruments import shell

log = logging.getLogger("labkit.jupyter")

SOURCE_KEY = "labkit_source_sha256"  # notebook metadata: the tracked notebook a copy was made from
START_TIMEOUT_S = 60.0  # JupyterLab takes a few seconds to start; more means it failed
STOP_TIMEOUT_S = 30.0  # after SIGTERM the server shuts its kernels down; then it is killed


def settings_dir() -> Path:
    """The project's JupyterLab settings (overrides.json: no news pop-up, no update check, no extension manager)."""
    return paths.project_root() / "jupyter-settings"


def readers_dir() -> Path:
    """Where readers' copies of the notebooks live: build/lab/."""
    return paths.build_dir() / "lab"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reader_copies(source_dir: Path, target_dir: Path, stems: Collection[str] | None = None
                  ) -> tuple[list[Path], list[Path]]:
    """Copy each ``NN-*.ipynb`` of `source_dir` (only those named in `stems`, when given) that `target_dir` lacks;
    return (made, stale).

    `stale` are the reader's copies whose tracked notebook changed since they were made: they are kept (they may
    hold the reader's edits); deleting one makes the next start copy the new version.
    """
    target_dir.mkdir(parents=True, exist_ok=True)
    made, stale = [], []
    for source in sorted(source_dir.glob("[0-9][0-9]-*.ipynb")):
        if stems is not None and source.stem not in stems:
            continue
        target = target_dir / source.name
        digest = _digest(source)
        if target.exists():
            recorded = nbformat.read(target, as_version=4).metadata.get(SOURCE_KEY)
            if recorded != digest:
                stale.append(target)
            continue
        notebook = nbformat.read(source, as_version=4)
        notebook.metadata.update(_kernel_metadata(notebook.metadata.get("kernelspec", {}).get("name", "python3")))
        notebook.metadata[SOURCE_KEY] = digest
        nbformat.write(notebook, target)
        made.append(target)
    return made, stale


def _kernel_metadata(kernel_name: str) -> dict[str, object]:
    """The kernelspec and language_info JupyterLab writes into a notebook when its kernel starts.

    A copy that already carries them opens unmodified; one without them is marked unsaved before any edit.
    """
    from ipykernel.ipkernel import IPythonKernel
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec(kernel_name)
    return {"kernelspec": {"name": kernel_name, "display_name": spec.display_name, "language": spec.language},
            "language_info": dict(IPythonKernel.language_info)}


@dataclass(frozen=True)
class LabServer:
    """A running JupyterLab: its process, the URL of its root (with the token) and its log file."""

    process: shell.Process[str]
    url: str
    log: Path

    def notebook_url(self, name: str) -> str:
        return self.url.replace("/lab?", f"/lab/tree/{name}?", 1)

    def stop(self) -> int:
        """Stop the server (SIGTERM: it shuts its kernels down), killing it if it does not end in time."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except shell.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


def server_argv(root: Path, port: int, token: str, ip: str = "127.0.0.1") -> list[str]:
    """JupyterLab on `ip`:`port` (0: any free port) over `root`, with the project's settings."""
    return [sys.executable, "-m", "jupyterlab", "--no-browser", f"--ip={ip}", f"--port={port}",
            "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
            f"--LabApp.app_settings_dir={settings_dir()}", "--LabApp.extension_manager=readonly",
            f"--KernelManager.transport={kernel_transport()}",
            # The series runs as root (the labs need it), and JupyterLab refuses root without this flag.
            *(["--allow-root"] if os.geteuid() == 0 else [])]


def start(port: int = 8888, root: Path | None = None, env: dict[str, str] | None = None) -> LabServer:
    """Start JupyterLab over `root` (default: the readers' copies folder) and wait until it has written where it
    listens; its log goes to ``build/lab-server.log``."""
    root = root or readers_dir()
    token = secrets.token_hex(24)
    log_file = paths.build_dir() / "lab-server.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("wb") as sink:
        process = shell.spawn(server_argv(root, port, token), stdout=sink, stderr=shell.STDOUT, stdin=shell.DEVNULL,
                              start_new_session=True, env={**os.environ, **(env or {})})
    info = _server_info(process, log_file)
    return LabServer(process, f"http://127.0.0.1:{info['port']}/lab?token={token}", log_file)


def _server_info(process: shell.Process[str], log_file: Path) -> dict[str, object]:
    """The server's own record of where it listens (jpserver-<pid>.json in Jupyter's runtime folder)."""
    record = runtime_dir() / f"jpserver-{process.pid}.json"
    deadline = time.monotonic() + START_TIMEOUT_S
    while not record.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-15:])
            raise LabkitError(f"JupyterLab did not start (exit {process.poll()}):\n{tail}",
                              f"The whole log is {log_file}; `--port N` picks another port if this one is taken.")
        time.sleep(0.1)
    info: dict[str, object] = json.loads(record.read_text())
    return info


def serve(port: int, copies: Path | None = None) -> int:
    """`labkit lab`: make the readers' copies (in `copies`, default build/lab), start JupyterLab over them,
    print its URL, and stop it on Ctrl-C."""
    from labkit.instruments import engine

    copies = copies or readers_dir()
    made, stale = reader_copies(paths.notebooks_dir(), copies)
    for copy in made:
        print(f"copied {copy.name} → {copy}")
    for copy in stale:
        print(f"note: notebooks/{copy.name} changed since your copy {copy} was made; your copy is kept "
              "(delete it to get the new version).")
    run_id = engine.new_run_id()
    server = start(port, copies, env={"LABKIT_RUN_ID": run_id})
    try:  # from here on, whatever happens (even a closed stdout) stops the server
        first = sorted(copies.glob("[0-9][0-9]-*.ipynb"))
        print(f"JupyterLab on {server.url}")
        if first:
            print(f"  first notebook: {server.notebook_url(first[0].name)}")
        print(f"  notebooks: {copies} (your copies; notebooks/ in git is not touched)\n"
              f"  log: {server.log}\nCtrl-C stops it.", flush=True)
        server.process.wait()
        print(f"JupyterLab ended by itself (exit {server.process.returncode}); see {server.log}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping JupyterLab and its kernels …", flush=True)
        return 0
    finally:
        server.stop()
        runner.sweep_run(run_id)
