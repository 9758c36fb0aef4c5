"""Base recipes as data: what each stands in for, digests that change only with their inputs, names refused early."""

from __future__ import annotations

import pytest

from labkit.instruments import images

NEW_BASES = {"python-runtime": "python:3.11-slim", "c-builder": "gcc:12", "go-builder": "golang:1.19"}


@pytest.mark.parametrize(("name", "stands_in_for"), NEW_BASES.items())
def test_each_new_base_says_what_it_stands_in_for_and_what_it_installs(name: str, stands_in_for: str) -> None:
    recipe = images.recipe(name)
    assert f"stands in for {stands_in_for}" in recipe.description
    assert all(package in recipe.description for package in images.DEBIAN_BASES[name].packages)
    assert recipe.tag == f"labkit/{name}:{recipe.digest}"


def test_debian_minbase_keeps_the_digest_it_had_before_recipes_were_data() -> None:
    # Its cached rootfs and image stay valid: the digest of suite, variant and arch only.
    assert images.recipe("debian-minbase").digest == "71199159248f3845"


def test_digests_differ_between_bases_and_follow_the_packages() -> None:
    digests = {name: images.recipe(name).digest for name in images.DEBIAN_BASES}
    assert len(set(digests.values())) == len(digests)
    changed = images.DebianBase(("python3",), "python:3.11-slim").recipe("python-runtime")
    assert changed.digest != digests["python-runtime"]


def test_an_unknown_base_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"(?s)base='alpine'.*python-runtime"):
        images.validate_base("alpine")
