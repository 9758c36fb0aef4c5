"""One limits value for the engine and the cgroup path: validated once, naming the caller's parameter."""

from __future__ import annotations

import pytest

from labkit.errors import BadParameter
from labkit.instruments.limits import MIB, Limits


@pytest.mark.parametrize(("memory", "pids", "cpus", "message"), [
    (0, 32, 0.5, r"memory_limit_mib=0: .*below 6 MiB"),
    (5, 32, 0.5, r"memory_limit_mib=5"),
    (-1, 32, 0.5, r"memory_limit_mib=-1"),
    (6.5, 32, 0.5, r"memory_limit_mib=6.5"),
    (64, 0, 0.5, r"pids_limit=0"),
    (64, True, 0.5, r"pids_limit=True"),
    (64, 32, 0, r"cpus=0"),
    (64, 32, float("nan"), r"cpus=nan"),
])
def test_bad_limits_are_refused_naming_the_callers_parameter(memory: object, pids: object, cpus: object,
                                                             message: str) -> None:
    with pytest.raises(BadParameter, match=message) as refused:
        Limits.of(memory_mib=memory, pids=pids, cpus=cpus, names=("memory_limit_mib", "pids_limit", "cpus"))
    assert refused.value.hint  # says what is allowed


def test_the_same_limits_in_sdk_cli_and_cgroup_form() -> None:
    limits = Limits.of(memory_mib=64, pids=32, cpus=0.5)
    assert limits.sdk_kwargs() == {"mem_limit": 64 * MIB, "pids_limit": 32, "nano_cpus": 500_000_000}
    assert limits.cli_args() == ["--memory", "67108864b", "--pids-limit", "32", "--cpus", "0.5"]
    assert limits.cpu_quota_us == 50_000  # per 100 ms period, what docker writes for --cpus 0.5
    assert limits.record() == {"memory_limit_bytes": 67108864, "pids_limit": 32, "cpus": 0.5}


def test_the_floor_is_the_engines_six_mib_everywhere() -> None:
    assert Limits.of(memory_mib=6, pids=1, cpus=0.01).memory_bytes == 6 * MIB
    with pytest.raises(BadParameter, match="memory_bytes"):
        Limits(4 * MIB, 32, 0.5)
