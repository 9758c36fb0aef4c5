"""labkit.instruments.registry: a real docker-registry on 127.0.0.1, refused on a port in use, stopped and its
storage removed after the block, after an error and after Ctrl-C; an image pushed to it pulls back."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import docker
import pytest

from labkit.errors import BadParameter
from labkit.instruments import images, registry, undo
from labkit.instruments.engine import docker_cli
from labkit.instruments.shell import run
from tests.conftest import missing

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("port", [0, 80, 70000, "5000", True])
def test_a_port_outside_the_user_range_is_refused(port: object) -> None:
    with pytest.raises(BadParameter, match=r"(?s)port=.*1024 to 65535.*port=None"):
        registry.validate_port(port)  # type: ignore[arg-type]


def test_a_port_in_use_is_refused_with_the_fix() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BadParameter, match=rf"(?s)port={port}: something already listens.*ss -ltnp"), \
                registry.running(port):
            pass


@pytest.fixture
def needs_registry() -> None:
    if not os.path.exists("/usr/bin/docker-registry"):
        missing("docker-registry (`apt-get install docker-registry`, or `labkit setup 11`)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): read its state from ps.
    return run(["ps", "-o", "stat=", "-p", str(pid)], 10, check=False).stdout.strip()[:1] not in ("", "Z")


def test_registry_answers_on_loopback_and_is_gone_after_the_block(needs_registry: None) -> None:
    with registry.running() as reg:
        with urllib.request.urlopen(f"http://{reg.address}/v2/", timeout=5) as response:
            assert response.status == 200
            assert response.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
        assert reg.address.startswith("127.0.0.1:") and reg.storage.is_dir() and _alive(reg.pid)
        assert registry.port_in_use(reg.port)
    assert not _alive(reg.pid) and not reg.storage.exists() and not registry.port_in_use(reg.port)


def test_registry_is_stopped_and_removed_after_an_error(needs_registry: None) -> None:
    with pytest.raises(RuntimeError, match="in the middle"), registry.running() as reg:
        raise RuntimeError("in the middle")
    assert not _alive(reg.pid) and not reg.storage.exists()


CHILD = """
import time
from labkit.instruments import registry
with registry.running() as reg:
    print(reg.pid, reg.storage, flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_registry_does_not_outlive_an_interrupted_run(needs_registry: None, signum: signal.Signals) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    try:
        assert child.stdout is not None
        pid_text, storage = child.stdout.readline().split()
        os.kill(child.pid, signum)
        child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    pid = int(pid_text)
    for _ in range(100):  # the registry gets its SIGTERM from the kernel when the child dies
        if not _alive(pid):
            break
        run(["sleep", "0.1"], 5)
    assert not _alive(pid)
    if signum == signal.SIGKILL:  # no cleanup ran: the storage is the next labkit command's to remove
        assert Path(storage).is_dir()
        assert any(f"temporary folder {storage}" in done for done in undo.undo_orphans())
    assert not Path(storage).exists()


@pytest.mark.docker
def test_an_image_pushed_to_the_registry_pulls_back(needs_registry: None,
                                                    docker_client: docker.DockerClient) -> None:
    base = images.require_base(docker_client, "busybox")
    with registry.running() as reg:
        ref = reg.reference("labkit-test/busybox", "1.0")
        run([docker_cli(), "tag", base.tag, ref], 30)
        try:
            run([docker_cli(), "push", ref], 120)
            assert reg.tags("labkit-test/busybox") == ["1.0"]
            pushed = reg.manifest("labkit-test/busybox", "1.0")
            run([docker_cli(), "rmi", ref], 30)
            run([docker_cli(), "pull", ref], 120)
            assert docker_client.images.get(ref).id == base.image_id
            assert pushed["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
            # A tag re-pointed in the registry by copying the manifest: the same digest, and the engine not told.
            digest = reg.get("labkit-test/busybox/manifests/1.0", registry.MANIFEST_TYPES)[0]["Docker-Content-Digest"]
            assert reg.point_tag("labkit-test/busybox", "stable", "1.0") == digest
            assert sorted(reg.tags("labkit-test/busybox")) == ["1.0", "stable"]
        finally:
            run([docker_cli(), "rmi", ref], 30, check=False)


@pytest.fixture
def needs_htpasswd(needs_registry: None) -> None:
    if not os.path.exists("/usr/bin/htpasswd"):
        missing("htpasswd (`apt-get install apache2-utils`, or `labkit setup 06`)")


def _basic(address: str, user: str, password: str) -> int:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(f"http://{address}/v2/", headers={"Authorization": f"Basic {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as answer:
        return int(answer.code)


def test_a_registry_with_a_password_file_answers_only_that_password(needs_htpasswd: None) -> None:
    entry = registry.htpasswd_entry("ci", "correct horse")
    assert entry.startswith("ci:$2y$")  # htpasswd -B: bcrypt, the only hash the registry reads
    with registry.running(htpasswd=entry) as reg:
        status, headers = reg.status("GET", "")
        assert (status, headers["www-authenticate"]) == (401, 'Basic realm="labkit"')
        assert reg.status("POST", "lab/app/blobs/uploads/")[0] == 401  # where a push starts
        assert _basic(reg.address, "ci", "correct horse") == 200
        assert _basic(reg.address, "ci", "correct horse!") == 401
        assert _basic(reg.address, "root", "correct horse") == 401
    assert not reg.storage.exists()
