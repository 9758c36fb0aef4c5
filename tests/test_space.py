"""Sizes that would fill the disk or the memory are refused before anything starts, with the largest value that
fits; the arithmetic on given free bytes, the labs through a stand-in session that fails the test if an experiment
starts. None of it needs the engine."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NoReturn, cast

import pytest

from labkit.core.session import LabSession
from labkit.errors import BadParameter
from labkit.instruments import space
from labkit.instruments.limits import MIB
from labkit.instruments.space import GIB, Size
from labkit.labs import arm64_vs_amd64, build_cache, cgroups_and_limits, image_layers, what_a_container_is

FIXTURE_PROC = Path(__file__).parent / "fixtures" / "proc" / "host-v1"
HUGE = 10**9  # MiB: about a PiB, more than any disk or memory


def _disk(total_bytes: int, free_bytes: int) -> Callable[[Path], SimpleNamespace]:
    """A stand-in for shutil.disk_usage: every file system has `total_bytes`, `free_bytes` of them free."""
    return lambda _: SimpleNamespace(total=total_bytes, used=total_bytes - free_bytes, free=free_bytes)


def _fits(demand: dict[Size, int], free_bytes: int, reserve_bytes: int) -> None:
    space.check_fits(demand, free_bytes=free_bytes, reserve_bytes=reserve_bytes, where="on the file system of /x",
                     remedy="make room on /x")


# ---------------------------------------------------------------- the arithmetic


def test_a_size_over_the_limit_is_refused_with_the_largest_that_fits_and_one_under_it_is_accepted() -> None:
    # 10 GiB free, 2 GiB kept: 8192 MiB, written 3 times: 2730 MiB fit
    _fits({Size("blob_mib", 2730): 3}, 10 * GIB, 2 * GIB)
    with pytest.raises(BadParameter) as refused:
        _fits({Size("blob_mib", 2731): 3}, 10 * GIB, 2 * GIB)
    assert refused.value.message == (
        "blob_mib=2731 does not fit: the experiment needs about 8.0 GiB (each MiB of blob_mib counts 3 times) on "
        "the file system of /x, which has 10.0 GiB free; labkit keeps 2.0 GiB of it free. The largest blob_mib that "
        "fits is 2730 (MiB).")
    assert refused.value.hint == "Give blob_mib=2730 or less, or make room on /x."


def test_the_largest_value_leaves_room_for_the_other_sizes_of_the_same_experiment() -> None:
    blob, big = Size("blob_mib", 5000), Size("big_mib", 1024)
    with pytest.raises(BadParameter, match=r"blob_mib=5000 with big_mib=1024 .* The largest blob_mib that fits "
                                           r"is 3072 \(MiB\)"):
        _fits({blob: 1, big: 1}, 6 * GIB, 2 * GIB)
    with pytest.raises(BadParameter, match=r"Not even blob_mib=1 fits") as refused:
        _fits({Size("blob_mib", 5000): 1, Size("big_mib", 4096): 1}, 6 * GIB, 2 * GIB)
    assert refused.value.hint == "Lower big_mib=4096, or make room on /x."


def test_sizes_in_bytes_are_answered_in_bytes() -> None:
    with pytest.raises(BadParameter, match=r"The largest sizes\['hash'\] that fits is 1073741824 \(bytes\)"):
        _fits({Size("sizes['hash']", 2 * GIB, "bytes"): 1}, 3 * GIB, 2 * GIB)


def test_the_reserve_is_a_tenth_of_the_disk_within_two_to_eight_gib_and_a_tenth_of_memory_or_256_mib() -> None:
    assert space.disk_reserve(50 * GIB) == 5 * GIB and space.disk_reserve(8 * GIB) == 2 * GIB
    assert space.disk_reserve(252 * GIB) == 8 * GIB  # this machine's disk: 10 % would be 25 GiB
    assert space.memory_reserve(16 * GIB) == int(1.6 * GIB) and space.memory_reserve(GIB) == 256 * MIB


# ---------------------------------------------------------------- the disk and the memory


def test_folders_on_one_file_system_share_its_free_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 20 GiB free of 60 GiB, 6 GiB kept: 14336 MiB for 2 copies in one folder and 1 in another
    monkeypatch.setattr(space.shutil, "disk_usage", _disk(60 * GIB, 20 * GIB))
    engine, ours = tmp_path / "engine", tmp_path / "not-made-yet" / "scratch"
    engine.mkdir()
    space.require_disk((engine, {Size("blob_mib", 4778): 2}), (ours, {Size("blob_mib", 4778): 1}))
    with pytest.raises(BadParameter, match=rf"on the file system of {engine} and {ours}, which has 20.0 GiB free; "
                                           r"labkit keeps 6.0 GiB of it free. The largest blob_mib that fits is "
                                           r"4778 \(MiB\)"):
        space.require_disk((engine, {Size("blob_mib", 4779): 2}), (ours, {Size("blob_mib", 4779): 1}))


def test_memory_is_checked_against_memavailable_less_the_reserve() -> None:
    # the fixture: MemTotal 24684092 kB, MemAvailable 23289280 kB; 10 % of MemTotal kept
    space.require_memory({Size("memory_limit_mib", 20332): 1}, FIXTURE_PROC)
    with pytest.raises(BadParameter, match=r"memory_limit_mib=20333 does not fit: .* in memory \(MemAvailable\), "
                                           r"which has 22.2 GiB free; labkit keeps 2.4 GiB of it free. The largest "
                                           r"memory_limit_mib that fits is 20332 \(MiB\)"):
        space.require_memory({Size("memory_limit_mib", 20333): 1}, FIXTURE_PROC)


class _InfoOnlyEngine:
    """A docker client that answers `info()` only; anything else fails the test."""

    def __init__(self, root_dir: str) -> None:
        self.root_dir = root_dir

    def info(self) -> dict[str, str]:
        return {"DockerRootDir": self.root_dir}

    def __getattr__(self, name: str) -> NoReturn:
        raise AssertionError(f"the check used the engine's {name!r}: only info() may be read before the experiment")


def test_the_engines_storage_is_its_root_dir_when_this_host_can_read_it_else_the_temp_folder(tmp_path: Path) -> None:
    assert space.engine_storage(cast(Any, _InfoOnlyEngine(str(tmp_path)))) == tmp_path
    remote = space.engine_storage(cast(Any, _InfoOnlyEngine("/var/lib/docker-on-another-machine")))
    assert remote == Path(tempfile.gettempdir())


# ---------------------------------------------------------------- the labs, before anything starts


class _Reached(AssertionError):
    """The lab got past its checks to the experiment: a failure, unless the test expects it."""


class _StandIn:
    """A session that fails the test when an experiment would start: `record`, `measure` and `scope` raise
    AssertionError. Live, its engine answers `info()` only (the engine's root dir, for the disk check); replaying,
    it has no engine."""

    def __init__(self, live: bool, engine_root: Path) -> None:
        self.live = live
        self.engine_root = engine_root

    @property
    def engine(self) -> _InfoOnlyEngine:
        if not self.live:
            raise AssertionError("a replayed session has no engine to ask")
        return _InfoOnlyEngine(str(self.engine_root))

    def require_root(self, why: str) -> None:
        """Root or not, the size checks come before the experiment."""

    def scope(self) -> NoReturn:
        raise AssertionError("a scope was opened: the experiment started")

    def record(self, *_: object, **__: object) -> NoReturn:
        raise _Reached("record was called: the experiment started")

    measure = record


def _session(live: bool, tmp_path: Path) -> LabSession:
    return cast(LabSession, _StandIn(live, tmp_path))


def test_a_blob_larger_than_the_disk_is_refused_before_anything_starts(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(space.shutil, "disk_usage", _disk(60 * GIB, 50 * GIB))
    with pytest.raises(BadParameter) as refused:
        image_layers.run_layers(_session(True, tmp_path), blob_mib=HUGE)
    # 50 GiB free less 6 GiB kept: 45056 MiB, of which big_mib takes 4 × 64; the blob is written 4 times (3 in the
    # engine's storage, 1 saved tarball in the temp folder: one file system here): (45056 - 256) / 4 = 11200
    where = f"{tmp_path} and {tempfile.gettempdir()}"
    assert str(refused.value) == (
        f"blob_mib={HUGE} with big_mib=64 does not fit: the experiment needs about 3.7 PiB (each MiB of blob_mib "
        f"counts 4 times) on the file system of {where}, which has 50.0 GiB free; labkit keeps 6.0 GiB of it free. "
        f"The largest blob_mib that fits is 11200 (MiB).\nGive blob_mib=11200 or less, or make room on {where}.")


def test_a_replayed_session_writes_nothing_so_its_sizes_are_not_checked(tmp_path: Path) -> None:
    with pytest.raises(_Reached):
        image_layers.run_layers(_session(False, tmp_path), blob_mib=HUGE)
    with pytest.raises(BadParameter, match="blob_mib=0"):  # the type check stays
        image_layers.run_layers(_session(False, tmp_path), blob_mib=0)


def test_sizes_that_fit_reach_the_experiment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(space.shutil, "disk_usage", _disk(60 * GIB, 50 * GIB))
    with pytest.raises(_Reached):
        image_layers.run_layers(_session(True, tmp_path), blob_mib=11200)


@pytest.mark.parametrize(("call", "parameter"), [
    (lambda lab: image_layers.run_layers(lab, big_mib=HUGE), "big_mib"),
    (lambda lab: image_layers.run_overlay(lab, big_mib=HUGE), "big_mib"),
    (lambda lab: image_layers.run_copy_up(lab, big_mib=HUGE), "big_mib"),
    (lambda lab: build_cache.run_context(lab, local_data_mib=HUGE), "local_data_mib"),
    (lambda lab: cgroups_and_limits.run_page_cache(lab, file_mib=HUGE), "file_mib"),
    (lambda lab: cgroups_and_limits.run_page_cache(lab, memory_limit_mib=HUGE), "memory_limit_mib"),
    (lambda lab: cgroups_and_limits.run_memory_ramp(lab, memory_limit_mib=HUGE), "memory_limit_mib"),
    (lambda lab: cgroups_and_limits.run_memory_swap(lab, memory_limit_mib=HUGE), "memory_limit_mib"),
    (lambda lab: cgroups_and_limits.run_memory_unlimited(lab, fence_mib=HUGE), "fence_mib"),
    (lambda lab: cgroups_and_limits.run_child_oom(lab, memory_limit_mib=HUGE), "memory_limit_mib"),
    (lambda lab: what_a_container_is.run_namespaces(lab, memory_limit_mib=HUGE), "memory_limit_mib"),
    (lambda lab: what_a_container_is.run_privileges(lab, memory_limit_mib=HUGE), "memory_limit_mib"),
    (lambda lab: what_a_container_is.run_from_scratch(lab, memory_limit_mib=HUGE), "memory_limit_mib"),
    (lambda lab: what_a_container_is.run_startup(lab, memory_limit_mib=HUGE), "memory_limit_mib"),
    (lambda lab: what_a_container_is.run_vm_boot(lab, memory_mib=HUGE), "memory_mib"),
    (lambda lab: arm64_vs_amd64.run_emulation_cost(lab, sizes={arm64_vs_amd64.HASH: HUGE * MIB}),
     f"sizes[{arm64_vs_amd64.HASH!r}]"),
    (lambda lab: arm64_vs_amd64.run_emulation_cost(lab, sizes={arm64_vs_amd64.GZIP: HUGE * MIB}),
     f"sizes[{arm64_vs_amd64.GZIP!r}]"),
])
def test_every_size_a_reader_sets_is_checked_before_anything_starts(
        call: Callable[[LabSession], object], parameter: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABKIT_STATE", str(tmp_path / "state"))  # where the page-cache file would go
    with pytest.raises(BadParameter) as refused:
        call(_session(True, tmp_path))
    assert str(refused.value).startswith(f"{parameter}={HUGE * MIB if 'sizes' in parameter else HUGE}")
    assert " does not fit: the experiment needs about " in str(refused.value)
