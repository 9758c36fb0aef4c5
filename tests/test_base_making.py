"""How `labkit setup` makes many bases (images.make_bases), engine-free: which root filesystems it makes (a base's
root among them), their packages fetched before any base is made (once for each architecture and variant), bases
made side by side, a base made once however many ask, the first failure raised, and an interrupt raised at once
while workers are busy."""

from __future__ import annotations

import _thread
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from labkit.instruments import images

WAIT_S = 10.0  # the longest any test waits for another thread; every wait here ends well before


def _base(name: str) -> images.BaseImage:
    return images.BaseImage(name, f"labkit/{name}:x", "sha256:x", "x", 1_000_000, 1.5)


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path))
    return tmp_path


def _engine_holds(monkeypatch: pytest.MonkeyPatch, held: set[str]) -> None:
    monkeypatch.setattr(images, "find", lambda client, name: _base(name) if name in held else None)


@pytest.fixture()
def making(cache: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[str], object]], None]:
    """No base in the engine and packages fetched at once; the function returned sets what making a base does
    (`act` gets its name, then the base is made)."""
    _engine_holds(monkeypatch, set())
    monkeypatch.setattr(images, "fetch_packages", lambda union: 0.0)

    def install(act: Callable[[str], object]) -> None:
        def make(client: object, name: str) -> images.BaseImage:
            act(name)
            return _base(name)

        monkeypatch.setattr(images, "ensure_base", make)

    return install


def _rootfs_made(name: str) -> None:
    target = images._rootfs_target(name)
    target.mkdir(parents=True)
    (target / ".labkit-complete").write_text(images.recipe(name).digest + "\n")


@pytest.mark.parametrize(("held", "cached", "asked", "needed"), [
    # busybox is no Debian base; python-runtime is a copy of debian-minbase's root, which is made first.
    (set(), set(), ["busybox", "python-runtime"], ["python-runtime", "debian-minbase"]),
    ({"python-runtime"}, set(), ["python-runtime"], []),  # in the engine: nothing to make
    (set(), {"python-runtime"}, ["python-runtime"], []),  # its rootfs cached: imported, its root not needed
    (set(), {"debian-minbase"}, ["python-runtime"], ["python-runtime"]),  # its root cached: copied, not made
    (set(), set(), ["node-full-npm"], ["node-full-npm", "debian-full"]),  # the default variant's root
    (set(), set(), ["c-builder-arm64"], ["c-builder-arm64"]),  # a foreign base: debootstrapped whole
    # A distroless base needs its source's rootfs even when the source's image is in the engine.
    ({"python-slim"}, set(), ["python-distroless"], ["python-slim", "debian-minbase"]),
    ({"python-slim"}, {"python-slim"}, ["python-distroless"], []),
    # A static base needs its builder's image; a builder in the engine needs nothing.
    (set(), set(), ["scratch-static"], ["go-builder", "debian-minbase"]),
    ({"go-builder"}, set(), ["scratch-static"], []),
    (set(), set(), ["node-distroless", "node-slim"], ["node-slim", "debian-minbase"]),  # asked twice, made once
])
def test_the_root_filesystems_a_setup_makes(cache: Path, monkeypatch: pytest.MonkeyPatch, held: set[str],
                                            cached: set[str], asked: list[str], needed: list[str]) -> None:
    _engine_holds(monkeypatch, held)
    for name in cached:
        _rootfs_made(name)
    assert images.roots_needed(None, asked) == needed


def test_one_download_serves_every_base_of_an_architecture_and_variant() -> None:
    sets = images.package_sets(["python-runtime", "c-builder", "node-full", "python-slim", "c-builder-arm64",
                                "node-full-npm"])
    assert {group: union.packages for group, union in sets.items()} == {
        "amd64 minbase": ("python3", "python3-venv", "build-essential"),  # python-slim's python3 once
        "amd64 default": ("nodejs",),  # node-full-npm's npm comes from apt in the finished root, not debootstrap
        "arm64 minbase": ("build-essential",)}
    assert sets["arm64 minbase"].arch == "arm64" and sets["amd64 default"].variant == "default"


def test_fetching_downloads_only_and_never_starts_a_foreign_second_stage(cache: Path) -> None:
    argv = images._debootstrap_argv(images.DEBIAN_BASES["c-builder-arm64"], cache / "t", download_only=True)
    assert "--download-only" in argv and "--foreign" not in argv
    assert f"--cache-dir={images.deb_cache('arm64')}" in argv
    assert "--foreign" in images._debootstrap_argv(images.DEBIAN_BASES["c-builder-arm64"], cache / "t")


def test_packages_are_fetched_once_before_any_base_is_made(making: Callable[[Callable[[str], object]], None],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []

    def fetch(union: images.DebianBase) -> float:
        events.append(f"fetch {union.arch} {union.variant} {','.join(union.packages)}")
        return 2.0

    monkeypatch.setattr(images, "fetch_packages", fetch)
    making(lambda name: events.append(f"make {name}"))
    made = images.make_bases(None, ["python-runtime", "c-builder", "busybox"], lambda line: None)
    assert events[0] == "fetch amd64 minbase python3,python3-venv,build-essential"  # one download for both
    assert sorted(events[1:]) == ["make busybox", "make c-builder", "make python-runtime"]
    assert list(made.bases) == ["python-runtime", "c-builder", "busybox"]  # in the order asked
    assert made.fetched_s == {"amd64 minbase": 2.0}


def test_two_bases_are_made_at_the_same_time(making: Callable[[Callable[[str], object]], None]) -> None:
    both_started = threading.Barrier(2, timeout=WAIT_S)  # broken (an error) unless two makers wait here at once
    making(lambda name: both_started.wait())
    lines: list[str] = []
    images.make_bases(None, ["busybox", "busybox-amd64"], lines.append, workers=2)
    assert any(line.startswith("base busybox: making it") for line in lines)
    assert "base busybox-amd64: labkit/busybox-amd64:x (1.0 MB, made in 1.5 s)" in lines


def test_a_base_asked_for_by_two_workers_is_made_once(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    together = threading.Barrier(2, timeout=WAIT_S)

    def make(name: str, target: Path) -> None:
        calls.append(name)
        time.sleep(0.2)  # a slow maker: the second worker must find the lock held, then the rootfs made
        target.mkdir(parents=True)
        (target / ".labkit-complete").write_text("x\n")

    monkeypatch.setattr(images, "_make_rootfs", make)
    found: list[Path] = []

    def ask() -> None:
        together.wait()
        found.append(images.rootfs_dir("debian-minbase"))

    workers = [threading.Thread(target=ask) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(WAIT_S)
    assert calls == ["debian-minbase"] and len(found) == 2 and found[0] == found[1]


def test_the_slowest_bases_are_handed_out_first(making: Callable[[Callable[[str], object]], None]) -> None:
    order: list[str] = []
    making(order.append)
    images.make_bases(None, ["busybox", "node-slim-npm", "python-runtime", "c-builder-arm64", "debian-minbase"],
                      lambda line: None, workers=1)
    assert order == ["c-builder-arm64", "debian-minbase", "busybox", "node-slim-npm", "python-runtime"]


def test_the_first_failure_stops_new_work_and_is_raised(making: Callable[[Callable[[str], object]], None]) -> None:
    started: list[str] = []

    def fail(name: str) -> None:
        started.append(name)
        raise RuntimeError(f"debootstrap of {name} failed")

    making(fail)
    with pytest.raises(RuntimeError, match="debootstrap of busybox failed"):
        images.make_bases(None, ["busybox", "busybox-amd64", "busybox-arm64"], lambda line: None,
                          workers=1)
    assert started == ["busybox"]


def test_an_unknown_base_is_refused_before_anything_is_fetched(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "fetch_packages", lambda union: pytest.fail("fetched"))
    with pytest.raises(ValueError, match="alpine"):
        images.make_bases(None, ["busybox", "alpine"], lambda line: None)


def test_an_interrupt_is_raised_at_once_while_the_workers_are_busy(
        making: Callable[[Callable[[str], object]], None]) -> None:
    busy, release = threading.Event(), threading.Event()

    def hold(name: str) -> None:
        busy.set()
        release.wait(WAIT_S)

    making(hold)

    def interrupt_once_busy() -> None:
        if busy.wait(WAIT_S):
            # By 1 s after a worker is busy the main thread waits for the workers: an interrupt raised before
            # that would not show whether the wait itself can be interrupted.
            time.sleep(1.0)
            _thread.interrupt_main()  # as Ctrl-C does: KeyboardInterrupt in the main thread

    # A background job (`nohup make test &`, a CI step) starts with SIGINT ignored, and interrupt_main() then does
    # nothing: Python's own handler is put back for this test.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=interrupt_once_busy, daemon=True).start()
    started = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            images.make_bases(None, ["busybox", "busybox-amd64"], lambda line: None)
        assert time.perf_counter() - started < WAIT_S / 2  # not after the workers' release
    finally:
        release.set()
        signal.signal(signal.SIGINT, previous)
