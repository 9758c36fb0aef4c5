"""Without an engine (Binder), notebooks replay the committed results and say so; doctor says what is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
RECORDED = sorted(p.parent for p in (ROOT / "data" / "results").glob("*/provenance.json"))


@pytest.fixture
def no_engine(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}


def test_every_notebook_has_recorded_results_with_provenance() -> None:
    notebooks = {p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb")}
    assert {p.name for p in RECORDED} == notebooks
    for folder in RECORDED:
        provenance = json.loads((folder / "provenance.json").read_text())
        assert provenance["quick"] is False, f"{folder.name}: record a full-mode run"
        assert provenance["fingerprint"]["engine_version"] and provenance["ended_utc"]


@pytest.mark.parametrize("recorded", RECORDED, ids=lambda p: p.name)
def test_notebook_replays_without_an_engine_under_a_banner(recorded: Path, no_engine: dict[str, str],
                                                            tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "labkit", "run", recorded.name, "--mode", "auto",
                           "--output", str(tmp_path)], cwd=ROOT, env=no_engine, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    nb = nbformat.read(tmp_path / f"{recorded.name}.ipynb", as_version=4)
    shown = "\n".join(str(o.get("data", {}).get("text/markdown", "")) for c in nb.cells if c.cell_type == "code"
                      for o in c.outputs)
    assert "REPLAYED RESULTS" in shown
    provenance = json.loads((recorded / "provenance.json").read_text())
    assert provenance["started_utc"] in shown and provenance["run_id"] in shown


def test_live_mode_without_an_engine_fails_saying_how_to_start_one(no_engine: dict[str, str], tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "labkit", "run", "01", "--mode", "live", "--output", str(tmp_path)],
                          cwd=ROOT, env=no_engine, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1
    assert "EngineUnavailable" in done.stdout + done.stderr
    executed = nbformat.read(next(tmp_path.glob("01-*.ipynb")), as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors and "make lab" in "\n".join(errors[0]["traceback"])


def test_doctor_exits_non_zero_and_names_the_fix_when_the_engine_is_missing(no_engine: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-m", "labkit", "doctor"], cwd=ROOT, env=no_engine, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1
    assert "[MISS] Docker Engine" in done.stdout
    assert "fix: make lab" in done.stdout
    assert "missing (required): Docker Engine" in done.stdout
