"""Binder, checked the way Binder uses the repository: an environment made only from `binder/`'s files, no engine.

A fresh virtual environment gets binder/environment.yml's packages (conda names mapped to PyPI's) and runs
binder/postBuild; then every notebook executes in its default mode ("auto") with DOCKER_HOST pointing at a
socket that does not exist, and each must show the replay banner and no error.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tests.test_project import CONDA_NAMES

ROOT = Path(__file__).resolve().parent.parent
BINDER = ROOT / "binder"
REPLAY_BANNER = "REPLAYED RESULTS"  # what LabSession.banner says when nothing was measured in the execution


def binder_requirements(environment: Path) -> list[str]:
    """binder/environment.yml's conda dependencies as pip requirements (python and pip themselves excluded)."""
    dependencies = environment.read_text().split("\ndependencies:\n", 1)[1]
    requirements = []
    for line in dependencies.splitlines():
        match = re.match(r"^  - ([A-Za-z0-9_.-]+)(.*)$", line)
        if match and match.group(1) not in ("python", "pip"):
            requirements.append(CONDA_NAMES.get(match.group(1), match.group(1)) + match.group(2).strip())
    return requirements


def test_binder_requirements_map_conda_names_to_pypi() -> None:
    requirements = binder_requirements(BINDER / "environment.yml")
    assert "docker>=7.0" in requirements and not any(r.startswith(("python", "pip", "docker-py")) for r in requirements)


@pytest.mark.notebooks
def test_binder_environment_replays_every_notebook_without_an_engine(tmp_path: Path) -> None:
    venv = tmp_path / "binder-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "VIRTUAL_ENV": str(venv),
           "DOCKER_HOST": f"unix://{tmp_path / 'no-engine.sock'}", "LABKIT_RESULTS_DIR": str(tmp_path / "results")}
    env.pop("PYTHONPATH", None)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                          *binder_requirements(BINDER / "environment.yml")], env=env, capture_output=True, text=True)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    post = subprocess.run(["bash", str(BINDER / "postBuild")], cwd=ROOT, env=env, capture_output=True, text=True)
    assert post.returncode == 0, post.stdout + post.stderr
    assert (venv / "share" / "jupyter" / "lab" / "settings" / "overrides.json").exists()

    executed = tmp_path / "executed"
    run = subprocess.run([str(venv / "bin" / "labkit"), "run", "--mode", "auto", "--output", str(executed)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    print(run.stdout, run.stderr)
    assert run.returncode == 0, run.stdout + run.stderr
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))
    assert sorted(p.name for p in executed.glob("*.ipynb")) == [p.name for p in notebooks]
    for notebook in notebooks:
        cells = nbformat.read(executed / notebook.name, as_version=4).cells
        shown = [str(o.get("data", {}).get("text/markdown", "")) for c in cells for o in c.get("outputs", [])]
        assert any(REPLAY_BANNER in text for text in shown), f"{notebook.name} shows no replay banner"
        assert not [o for c in cells for o in c.get("outputs", []) if o.output_type == "error"], notebook.name
