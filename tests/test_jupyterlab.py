"""A reader's JupyterLab: `labkit lab` started as the README says, notebook 01 run in quick mode in Chromium.

The browser sets quick mode in the parameters cell and runs all cells through the menu, as a reader would.
Then: the live banner, the namespace and claims tables (whole, not cut with "…"), the four figures, no error,
nothing left in the engine, the tracked notebook byte-for-byte unchanged, and Ctrl-C stops the server.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker
import nbformat
import pandas as pd
import pytest

from tests.browser import chromium
from tests.conftest import leftovers

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = "01-what-a-container-is.ipynb"
RUN_TIMEOUT_MS = 300_000  # quick mode takes about 20 s here; this only bounds a hang

# True once the notebook's kernel has been idle with no cell queued for 2 s (between cells of "Run All" it is
# idle only for milliseconds); prompts of collapsed inputs are empty, the others read [n]: when done.
SETTLED = """() => {
  const indicator = document.querySelector('.jp-Notebook-ExecutionIndicator');
  const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')].map(p => p.textContent);
  const idle = indicator && indicator.dataset.status === 'idle' && !prompts.some(p => p.includes('*'));
  window.__idleSince = idle ? (window.__idleSince || Date.now()) : 0;
  return idle && Date.now() - window.__idleSince > 2000;
}"""


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def runtime_dir() -> Iterator[Path]:
    """Jupyter's runtime folder, holding the kernels' Unix sockets: its path must stay short (see
    kernel_transport), which pytest's tmp_path is not."""
    folder = Path(tempfile.mkdtemp(prefix="jr-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _launch(tmp_path: Path, runtime: Path) -> tuple[subprocess.Popen[str], str]:
    """`labkit lab` in a session of its own (so the test can send it Ctrl-C), with Jupyter's per-user folders in
    `tmp_path`; returns the process and the notebook's URL it printed."""
    jupyter = {name: str(tmp_path / name.lower()) for name in (
        "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTERLAB_SETTINGS_DIR", "JUPYTERLAB_WORKSPACES_DIR")}
    env = {**os.environ, **jupyter, "JUPYTER_RUNTIME_DIR": str(runtime),
           "LABKIT_RESULTS_DIR": str(tmp_path / "results")}
    argv = [sys.executable, "-m", "labkit", "lab", "--port", "0", "--dir", str(tmp_path / "copies")]
    launcher = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    assert launcher.stdout is not None
    for line in launcher.stdout:
        print(line, end="")
        if line.startswith("JupyterLab on "):
            return launcher, line.removeprefix("JupyterLab on ").strip().replace("/lab?", f"/lab/tree/{NOTEBOOK}?")
    raise AssertionError(f"labkit lab ended (exit {launcher.wait()}) without printing its URL")


@pytest.mark.docker
@pytest.mark.notebooks
def test_notebook_01_runs_in_jupyterlab_through_the_launcher(docker_client: docker.DockerClient,
                                                             tmp_path: Path, runtime_dir: Path) -> None:
    tracked = ROOT / "notebooks" / NOTEBOOK
    before = _digest(tracked)
    started = time.perf_counter()
    launcher, url = _launch(tmp_path, runtime_dir)
    try:
        with chromium(tmp_path / "profile") as browser:
            page = browser.page()
            page.goto(url)
            # The kernel has started and the first cell's text is in its editor.
            page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=60_000)
            parameters = page.locator(".jp-Notebook .jp-CodeCell").first.locator(".cm-content")
            parameters.get_by_text("quick: bool = False").wait_for(timeout=30_000)
            assert page.locator(".jp-Dialog").all_inner_texts() == []
            assert page.locator(".jp-mod-dirty").count() == 0, "the notebook is marked unsaved before any edit"
            parameters.click()
            page.keyboard.press("Control+a")
            page.keyboard.insert_text('quick: bool = True\nmode: str = "live"\n')
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
            page.wait_for_function(SETTLED, timeout=RUN_TIMEOUT_MS, polling=200)
            ran_s = time.perf_counter() - started
            page.keyboard.press("Control+s")
            page.wait_for_function("() => !document.querySelector('.jp-mod-dirty')", timeout=30_000)
            page.screenshot(path=str(_shot_path()))
            text = page.locator(".jp-Notebook").text_content() or ""
            images = page.evaluate("() => [...document.querySelectorAll('.jp-OutputArea-output img')]"
                                   ".map(i => i.naturalWidth * i.naturalHeight)")
            cells = page.evaluate("() => [...document.querySelectorAll('.jp-OutputArea-output table td')]"
                                  ".map(td => td.textContent.trim())")
            dialogs = page.locator(".jp-Dialog").count()
            toasts = page.locator(".Toastify__toast").all_inner_texts()  # the news prompt would be one
            outside = list(browser.outside)
    finally:
        os.killpg(launcher.pid, signal.SIGINT)  # Ctrl-C, as a reader stops it
        output, _ = launcher.communicate(timeout=60)
    print(output, f"\nnotebook 01 ran in JupyterLab: {ran_s:.1f} s from `labkit lab` to the last cell")
    assert launcher.returncode == 0, output
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=5)  # the server is gone with the launcher

    assert "Live run" in text and "quick mode" in text, text[:2000]
    assert len(images) == 4 and all(area > 0 for area in images), images
    assert dialogs == 0 and toasts == [], "no pop-up (news, kernel choice, …) stands in the reader's way"
    assert outside == []
    # The saved copy is the ground truth of what ran: every code cell executed, none failed.
    saved = nbformat.read(tmp_path / "copies" / NOTEBOOK, as_version=4)
    code = [c for c in saved.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code)
    assert [o.ename for c in code for o in c.outputs if o.output_type == "error"] == []
    # The namespace table and the claims table appear, each cell whole.
    results = tmp_path / "results" / NOTEBOOK.removesuffix(".ipynb")
    inside = pd.read_csv(results / "inside.csv", dtype=str)
    claims = pd.read_csv(results / "claims.csv", keep_default_na=False)
    for expected in [*inside["check"], *claims["id"], *claims["measured"], *(c for c in claims["caveat"] if c)]:
        assert expected in cells, f"{expected!r} is not shown whole in a table"
    assert not [c for c in cells if c.endswith(("...", "…"))]
    assert _digest(tracked) == before, "the tracked notebook was written"
    assert leftovers(docker_client) == {"containers": [], "networks": [], "volumes": []}


def _shot_path() -> Path:
    shot = ROOT / "build" / "screenshots" / "jupyterlab-01.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    return shot


def test_reader_copies_are_made_once_and_then_left_to_the_reader(tmp_path: Path) -> None:
    from labkit.app import jupyter

    source, copies = tmp_path / "notebooks", tmp_path / "copies"
    source.mkdir()
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    nbformat.write(notebook, source / "01-a.ipynb")
    assert jupyter.reader_copies(source, copies) == ([copies / "01-a.ipynb"], [])
    edited = nbformat.read(copies / "01-a.ipynb", as_version=4)
    edited.cells[0].source = "x = 2  # the reader's edit"
    nbformat.write(edited, copies / "01-a.ipynb")
    assert jupyter.reader_copies(source, copies) == ([], [])
    notebook.cells[0].source = "x = 3  # a new version in git"
    nbformat.write(notebook, source / "01-a.ipynb")
    assert jupyter.reader_copies(source, copies) == ([], [copies / "01-a.ipynb"])
    assert "reader's edit" in nbformat.read(copies / "01-a.ipynb", as_version=4).cells[0].source


def test_kernels_use_unix_sockets_unless_their_paths_would_be_too_long(monkeypatch: pytest.MonkeyPatch) -> None:
    from labkit.app import kernels

    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", "/run/user/0/jupyter")
    assert kernels.kernel_transport() == "ipc"
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", "/tmp/" + "deep/" * 16)
    assert kernels.kernel_transport() == "tcp"


@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb")), ids=lambda p: p.stem)
def test_inputs_hidden_in_the_book_are_collapsed_in_jupyterlab(notebook: Path) -> None:
    cells = nbformat.read(notebook, as_version=4).cells
    hidden = [i for i, c in enumerate(cells) if "hide-input" in c.metadata.get("tags", [])]
    collapsed = [i for i, c in enumerate(cells) if c.metadata.get("jupyter", {}).get("source_hidden")]
    assert hidden == collapsed, "tag a cell hide-input (the book) and set jupyter.source_hidden (JupyterLab) together"


def test_a_papermill_kernel_talks_over_unix_sockets_that_leave_no_file_behind(
        tmp_path: Path, runtime_dir: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    import papermill

    from labkit.app import kernels

    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime_dir))
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import os; print(os.getcwd())")],
                                        metadata={"kernelspec": {"name": "python3", "language": "python",
                                                                 "display_name": "Python 3"}})
    nbformat.write(notebook, tmp_path / "in.ipynb")
    folder = tmp_path / "cwd"
    folder.mkdir()
    config = kernels.kernel_config()
    assert config.KernelManager.transport == "ipc"
    assert Path(config.KernelManager.connection_file).parent == runtime_dir
    papermill.execute_notebook(str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"), kernel_name="python3",
                               cwd=str(folder), execution_timeout=60, progress_bar=False, config=config)
    assert nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[0].outputs[0].text.strip() == str(folder)
    assert list(folder.iterdir()) == [] and list(runtime_dir.iterdir()) == []
    assert "without encryption" not in capfd.readouterr().err


def test_a_taken_port_is_refused_with_what_to_do(tmp_path: Path, runtime_dir: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "labkit", "lab", "--port", str(port), "--dir",
                               str(tmp_path / "copies")], cwd=ROOT, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime_dir)})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "JupyterLab did not start" in done.stderr and "--port N" in done.stderr
