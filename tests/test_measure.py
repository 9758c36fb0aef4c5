"""Timing and summaries against known answers: order-statistic intervals from the binomial tables, and the
interleaved order of a comparison read back from a call log."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from labkit.errors import BadParameter
from labkit.instruments import measure


def test_median_interval_at_n5_is_min_to_max_with_its_true_coverage() -> None:
    low, high, coverage = measure.median_interval([3.0, 1.0, 100.0, 2.0, 4.0])
    assert (low, high) == (1.0, 100.0)
    assert coverage == pytest.approx(1 - 2 / 32)  # 93.75 %: below 95 %, and said so


def test_median_interval_at_n30_uses_the_10th_and_21st_values() -> None:
    # The classic table: for n = 30 the 95 % distribution-free interval of the median is [x(10), x(21)].
    low, high, coverage = measure.median_interval([float(i) for i in range(1, 31)])
    assert (low, high) == (10.0, 21.0)
    assert coverage == pytest.approx(0.9572, abs=1e-4)


def test_summary_of_known_samples() -> None:
    summary = measure.summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert (summary.n, summary.median, summary.q1, summary.q3, summary.iqr) == (5, 3.0, 2.0, 4.0, 2.0)


def test_compare_interleaves_and_rotates_the_order() -> None:
    calls: list[str] = []
    methods = {name: (lambda n=name: calls.append(n)) for name in ("a", "b", "c")}
    samples = measure.compare(methods, repeats=3, warmup=1)
    # warm-up round (a b c), then rounds rotated by one place each: a b c, b c a, c a b
    assert calls == ["a", "b", "c", "a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert list(samples["method"]) == calls[3:]
    assert samples.groupby("method")["position"].apply(sorted).tolist() == [[0, 1, 2]] * 3


def test_summary_table_gives_ratios_to_the_floor() -> None:
    samples = pd.DataFrame({"method": ["fast"] * 3 + ["slow"] * 3, "wall_s": [1.0, 1.0, 1.0, 4.0, 5.0, 6.0]})
    table = measure.summary_table(samples, floor="fast")
    assert table.loc["slow", "ratio_to_floor"] == 5.0
    with pytest.raises(BadParameter, match="floor='none'"):
        measure.summary_table(samples, floor="none")


@pytest.mark.parametrize("repeats", [0, -1, 2.5, True])
def test_bad_repeats_are_refused_before_any_call(repeats: object) -> None:
    calls: list[int] = []
    with pytest.raises(BadParameter, match="repeats"):
        measure.compare({"x": lambda: calls.append(1)}, repeats=repeats, warmup=0)  # type: ignore[arg-type]
    assert calls == []


def test_empty_samples_are_refused() -> None:
    with pytest.raises(BadParameter, match="empty"):
        measure.median_interval([])


def test_fingerprint_names_the_machine_and_says_whether_it_is_virtualised() -> None:
    found = measure.fingerprint()
    cpuinfo = Path("/proc/cpuinfo").read_text()
    assert found["host"]["virtualised"] == (" hypervisor" in cpuinfo)
    assert found["cores"] == len([line for line in cpuinfo.splitlines() if line.startswith("processor")])
    assert found["cgroup_version"] in ("v1", "v2")


def test_poll_until_returns_once_the_condition_holds_and_nan_when_it_never_does() -> None:
    looks: list[int] = []

    def third_look() -> bool:
        looks.append(1)
        return len(looks) == 3

    assert measure.poll_until(third_look, 10, poll_s=0.01) < 10 and len(looks) == 3  # it stopped looking then
    assert math.isnan(measure.poll_until(lambda: False, 0.05, poll_s=0.01))


def test_wait_until_names_the_state_it_did_not_reach() -> None:
    assert measure.wait_until(lambda: True, "ready", 1) >= 0
    with pytest.raises(TimeoutError, match="the db healthy: not reached within 0 s"):
        measure.wait_until(lambda: False, "the db healthy", 0.05, poll_s=0.01)


def test_run_together_runs_the_calls_at_once_and_waits_for_every_one_even_after_an_error() -> None:
    started = threading.Barrier(3, timeout=10)  # each call waits until all three have started: at once, or a timeout
    ended: list[str] = []

    def call(name: str, fail: bool = False) -> str:
        started.wait()
        if fail:
            raise ValueError(name)
        time.sleep(0.2)  # the others end after the failure is known
        ended.append(name)
        return name

    assert measure.run_together(lambda: call("a"), lambda: call("b"), lambda: call("c")) == ("a", "b", "c")
    ended.clear()
    started.reset()
    with pytest.raises(ValueError, match="b"):
        measure.run_together(lambda: call("a"), lambda: call("b", fail=True), lambda: call("c"))
    assert sorted(ended) == ["a", "c"]  # both had ended when the error reached the caller
