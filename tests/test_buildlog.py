"""Cache-hit accounting read from recorded build logs of both builders (tests/fixtures/buildlog/)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from labkit.instruments import buildlog

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "buildlog"
EXPECTED = pd.read_csv(FIXTURES / "expected.csv")


def _read(name: str) -> buildlog.BuildLog:
    text = (FIXTURES / name).read_text()
    # The legacy builder turns each --label of the recording into a LABEL step; the recording's labels are in it.
    labels = dict(re.findall(r"^Step \d+/\d+ : LABEL (labkit\.\w+)=(\S+)$", text, flags=re.MULTILINE))
    return buildlog.parse(text).without_labels(labels)


@pytest.mark.parametrize("row", list(EXPECTED.itertuples()), ids=list(EXPECTED["log"]))
def test_cached_and_executed_steps_match_the_counts_taken_by_grep(row: pd.Series) -> None:
    log = _read(row.log)
    assert log.builder == row.log.split("-")[0]
    assert (log.cached, log.executed) == (row.cached, row.executed)


def test_buildkit_steps_keep_their_instruction_status_and_time() -> None:
    log = _read("buildkit-A-1.log")  # a source-only edit with dependencies first
    statuses = {s.instruction.split()[0] + " " + s.instruction.split()[1]: s.status for s in log.steps}
    assert statuses == {"FROM docker.io/labkit-exp/03-build-cache-base:351d30b93728": "base", "WORKDIR /app": "cached",
                        "COPY requirements.txt": "cached", "COPY wheels/": "cached", "RUN python3": "cached",
                        "COPY .": "executed", "RUN /venv/bin/python": "executed"}
    assert all(s.seconds is None for s in log.steps if s.cached)
    assert all(s.seconds is not None and s.seconds >= 0 for s in log.steps if s.status == "executed")
    assert log.first_executed == "COPY . ."
    assert [s.index for s in sorted(log.steps, key=lambda s: s.index)] == list(range(1, 8))


def test_the_install_step_is_what_a_dependency_edit_reruns_in_a_and_every_edit_in_b() -> None:
    for name in ("buildkit-A-2.log", "legacy-A-2.log", "buildkit-B-1.log", "buildkit-B-3.log", "legacy-B-3.log"):
        assert any("pip install" in s.instruction and not s.cached for s in _read(name).steps), name
    for name in ("buildkit-A-1.log", "buildkit-A-3.log", "legacy-A-1.log", "legacy-A-3.log"):
        assert all(s.cached for s in _read(name).steps if "pip install" in s.instruction), name


def test_context_size_and_transfer_time_are_read_from_the_log() -> None:
    kit = _read("buildkit-A-0.log")
    legacy = _read("legacy-A-0.log")
    assert kit.context_bytes is not None and legacy.context_bytes is not None
    # The same context: ~0.9 MB of wheels and sources, within what rounding to three digits loses.
    assert kit.context_bytes == pytest.approx(legacy.context_bytes, rel=0.05)
    assert kit.context_s is not None and legacy.context_s is None
    # BuildKit sends only what changed since the last build of the same folder.
    assert (_read("buildkit-A-1.log").context_bytes or 0) < 10_000 < kit.context_bytes


def test_legacy_steps_carry_no_time_and_label_steps_are_dropped() -> None:
    text = (FIXTURES / "legacy-B-4.log").read_text()
    assert "LABEL labkit.scope=" in text
    log = _read("legacy-B-4.log")
    assert all(s.seconds is None for s in log.steps)
    assert not any(s.instruction.startswith("LABEL labkit.") for s in log.steps)
    assert log.first_executed is None  # nothing changed: every step a hit


@pytest.mark.parametrize(("text", "expected"), [("882kB", 882_000), ("1.23MB", 1_230_000), ("2B", 2),
                                                ("9.27 MB", 9_270_000), ("1.5KiB", 1536), ("1GB", 10**9)])
def test_sizes_are_decimal_unless_binary(text: str, expected: int) -> None:
    assert buildlog.size_bytes(text) == expected


def test_a_size_that_is_not_one_is_refused() -> None:
    with pytest.raises(ValueError, match="not a size"):
        buildlog.size_bytes("lots")


def test_multi_stage_legacy_steps_carry_their_stage() -> None:
    text = ("Sending build context to Docker daemon  3.072kB\r\r\n"
            "Step 1/4 : FROM labkit/go-builder:1 AS build\n ---> 1\n"
            "Step 2/4 : RUN go build\n ---> Using cache\n ---> 2\n"
            "Step 3/4 : FROM scratch\n ---> \n"
            "Step 4/4 : COPY --from=build /out /app\n ---> 3\n")
    log = buildlog.parse(text)
    assert [(s.stage, s.status) for s in log.steps] == [("build", "base"), ("build", "cached"), ("", "base"),
                                                         ("", "executed")]
    assert log.context_bytes == 3072
