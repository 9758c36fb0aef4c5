"""Debian bases made as copies of their variant's root plus apt-get hold what a debootstrap of their own held.

Known answers: tests/fixtures/bases/<base>.packages lists the packages (names, not versions, which move with
Debian's point releases) of each base as `debootstrap --include` made it, read from the images of dd1c053 with
`dpkg-query -W`."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from labkit.instruments import images, shell

FIXTURES = Path(__file__).parent / "fixtures" / "bases"
DERIVED = sorted(path.stem for path in FIXTURES.glob("*.packages"))
# Empty transitional packages that only debootstrap installs: its resolver does not follow Provides:, where apt-get
# takes sysvinit-utils, which provides lsb-base (lsb-base 11.6's own description says so).
DEBOOTSTRAP_ONLY = {"lsb-base"}


def test_every_base_with_packages_of_its_own_is_a_copy_of_its_variants_root() -> None:
    derived = {name: images.root_of(name) for name in images.DEBIAN_BASES if images.root_of(name) is not None}
    assert sorted(derived) == DERIVED  # each has its known answer, and no other base is made this way
    assert derived["python-runtime"] == derived["redis-7"] == "debian-minbase"
    assert derived["node-full"] == derived["node-full-npm"] == "debian-full"
    assert images.root_of("debian-minbase") is None and images.root_of("c-builder-arm64") is None


def test_a_copy_is_made_again_when_its_root_changes() -> None:
    before = images.recipe("python-runtime")
    assert dict(before.inputs)["root"] == images.recipe("debian-minbase").digest
    assert "a copy of debian-minbase's root" in before.description and "by apt-get" in before.description
    another_root = images.Recipe("debian-minbase", "another root", (("suite", "trixie"),))
    assert images.DEBIAN_BASES["python-runtime"].recipe("python-runtime", another_root).digest != before.digest


@pytest.mark.root
def test_the_package_lists_cross_the_network_once(tmp_path: Path) -> None:
    """An update in a fresh copy of the root, after one in another copy, fetches none of the lists again: apt's
    ``Get:`` lines name what it downloaded, at most the mirror's signed Release file (InRelease, about 150 kB)."""
    copies = [tmp_path / "first", tmp_path / "second"]
    for copy in copies:
        shell.run(["cp", "-a", str(images.rootfs_dir("debian-minbase")), str(copy)], 600)
    images.apt_update(copies[0], "amd64")
    fetched = [line for line in images.apt_update(copies[1], "amd64").splitlines() if line.startswith("Get:")]
    assert [line for line in fetched if " InRelease " not in line] == []
    lists = [sorted(path.name for path in (copy / "var/lib/apt/lists").glob("*_Packages")) for copy in copies]
    assert lists[0] == lists[1] and lists[0]  # the second copy holds the lists it did not fetch


def _installed(client: docker.DockerClient, name: str, *command: str) -> str:
    base = images.require_base(client, name)
    output: bytes = client.containers.run(base.tag, list(command), remove=True, network_mode="none", entrypoint=[],
                                          user="0", mem_limit="64m")
    return output.decode()


@pytest.mark.docker
@pytest.mark.parametrize("name", DERIVED)
def test_a_copy_holds_the_packages_its_own_debootstrap_held(docker_client: docker.DockerClient, name: str) -> None:
    packages = sorted(_installed(docker_client, name, "dpkg-query", "-W", "-f", "${Package}\\n").split())
    assert packages == [package for package in (FIXTURES / f"{name}.packages").read_text().split()
                        if package not in DEBOOTSTRAP_ONLY]


@pytest.mark.docker
@pytest.mark.parametrize("name", DERIVED)
def test_a_copy_carries_nothing_apt_left_behind(docker_client: docker.DockerClient, name: str) -> None:
    patterns = " ".join(f"/{pattern}" for pattern in images.APT_LEFTOVERS)
    script = f'for f in {patterns}; do [ -f "$f" ] && echo "$f"; done; true'
    left = _installed(docker_client, name, "sh", "-c", script)
    assert left == ""
