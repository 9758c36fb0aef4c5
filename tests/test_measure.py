from __future__ import annotations

import pytest

from labkit.instruments import measure


def test_summary_of_known_samples() -> None:
    summary = measure.summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert summary.n == 5
    assert summary.median == 3.0
    assert (summary.q1, summary.q3) == (2.0, 4.0)
    assert summary.iqr == 2.0
    assert summary.ci_low <= summary.median <= summary.ci_high
    assert summary.ci_high <= 100.0


def test_bootstrap_is_reproducible_and_narrows_with_more_samples() -> None:
    few = measure.summarize([1.0, 1.2, 0.8, 1.1, 0.9])
    many = measure.summarize([1.0, 1.2, 0.8, 1.1, 0.9] * 20)
    assert few == measure.summarize([1.0, 1.2, 0.8, 1.1, 0.9])
    assert many.ci_high - many.ci_low < few.ci_high - few.ci_low


def test_time_calls_counts_warmup_separately() -> None:
    calls = []
    samples = measure.time_calls(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(samples) == 3 and len(calls) == 5
    assert all(s >= 0 for s in samples)


@pytest.mark.parametrize("repeats", [0, -1, 2.5])
def test_bad_repeats_are_refused_before_any_call(repeats: object) -> None:
    calls = []
    with pytest.raises(ValueError, match="repeats"):
        measure.time_calls(lambda: calls.append(1), repeats=repeats, warmup=0)  # type: ignore[arg-type]
    assert calls == []


def test_empty_samples_are_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        measure.summarize([])


def test_fingerprint_names_the_machine() -> None:
    found = measure.fingerprint()
    assert found["arch"] and found["kernel"] and found["cores"] >= 1
    assert found["cgroup_version"] in ("v1", "v2")
    assert found["memory_bytes"] > 2**28
