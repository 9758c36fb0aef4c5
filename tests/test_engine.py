from __future__ import annotations

import docker
import pytest

from labkit.instruments import engine, images
from tests.conftest import leftovers


def test_unreachable_engine_says_how_to_start_one(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing.sock")
    with pytest.raises(engine.EngineUnavailable) as caught:
        engine.connect(timeout_s=2)
    message = str(caught.value)
    assert f"unix://{tmp_path}/nothing.sock" in message
    assert "make lab" in message and "DOCKER_HOST" in message and "replay" in message


def test_ensure_does_not_start_a_daemon_for_a_foreign_docker_host(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing.sock")
    with pytest.raises(engine.EngineUnavailable):
        engine.ensure(timeout_s=1)


def test_unknown_base_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"(?s)base='alpine'.*busybox.*debian-minbase"):
        images.validate_base("alpine")


def test_recipe_digest_is_stable_and_input_sensitive() -> None:
    first = images.recipe("debian-minbase")
    assert first.digest == images.recipe("debian-minbase").digest
    assert first.digest != images.recipe("busybox").digest
    assert first.tag == f"labkit/debian-minbase:{first.digest}"


@pytest.mark.docker
def test_scope_removes_its_objects_even_when_the_block_raises(docker_client: docker.DockerClient) -> None:
    busybox = images.ensure_base(docker_client, "busybox")
    run_id = engine.new_run_id()
    with pytest.raises(RuntimeError, match="boom"), engine.Scope(docker_client, run_id, lab="tests") as scope:
        docker_client.containers.run(busybox.tag, ["sleep", "60"], detach=True, labels=scope.labels,
                                     mem_limit="16m", pids_limit=8, network_mode="none")
        docker_client.networks.create(scope.name("net"), labels=scope.labels, internal=True)
        docker_client.volumes.create(scope.name("vol"), labels=scope.labels)
        assert len(leftovers(docker_client, run_id)["containers"]) == 1
        raise RuntimeError("boom")
    assert leftovers(docker_client, run_id) == {"containers": [], "networks": [], "volumes": []}
    assert scope.report.total == 3


@pytest.mark.docker
def test_bases_are_reused_not_rebuilt(docker_client: docker.DockerClient) -> None:
    first = images.ensure_base(docker_client, "busybox")
    again = images.ensure_base(docker_client, "busybox")
    assert again.image_id == first.image_id and again.made_s == 0.0
    labels = docker_client.images.get(first.tag).labels
    assert labels[engine.LABEL_RECIPE] == first.recipe_digest


@pytest.mark.docker
def test_busybox_base_runs_the_hosts_static_binary(docker_client: docker.DockerClient) -> None:
    base = images.ensure_base(docker_client, "busybox")
    output = docker_client.containers.run(base.tag, ["sh", "-c", "echo $((6*7))"], remove=True,
                                          network_mode="none", mem_limit="16m")
    assert output == b"42\n"


@pytest.mark.docker
def test_labkit_clean_removes_every_run_object_and_says_what(docker_client: docker.DockerClient) -> None:
    import subprocess
    import sys

    busybox = images.ensure_base(docker_client, "busybox")
    labels = {engine.LABEL_RUN: "r-clean-test", engine.LABEL_SCOPE: "s-clean-test"}
    container = docker_client.containers.create(busybox.tag, ["true"], labels=labels, name="labkit-clean-test",
                                                network_mode="none")
    docker_client.networks.create("labkit-clean-test-net", labels=labels, internal=True)
    docker_client.volumes.create("labkit-clean-test-vol", labels=labels)
    done = subprocess.run([sys.executable, "-m", "labkit", "clean"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for name in ("labkit-clean-test", "labkit-clean-test-net", "labkit-clean-test-vol"):
        assert name in done.stdout
    assert leftovers(docker_client) == {"containers": [], "networks": [], "volumes": []}
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(container.id)
    assert images.find(docker_client, "busybox") is not None, "bases are kept unless --bases is given"
