"""JupyterLab served from inside the lab machine (`labkit guest lab`): bad input refused before anything boots; the
network that forwards one port and lets the guest reach nothing; the job's script; and, live, a kernel started in
the guest through the host's 127.0.0.1, a file saved there kept on the host, and nothing left after Ctrl-C, or after
a signal in the middle of a boot of `guest lab` or `guest run`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labkit import paths
from labkit.app import guest_lab, guest_run
from labkit.errors import BadParameter, LabkitError
from labkit.instruments import ports
from labkit.instruments.vm import guest

ROOT = Path(__file__).resolve().parent.parent


def _never(*args: object, **kwargs: object) -> Any:
    pytest.fail("something started before the input was checked")


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


# ---------------------------------------------------------------- refused before anything starts


@pytest.mark.parametrize("port", [80, 70000, True])
def test_a_port_out_of_range_is_refused_before_anything_boots(monkeypatch: pytest.MonkeyPatch, port: object) -> None:
    monkeypatch.setattr(guest_run, "prepare", _never)
    with pytest.raises(BadParameter, match="need a whole number from 1024 to 65535") as refused:
        guest_lab.serve([], port, 60.0)  # type: ignore[arg-type]
    assert "--port" in refused.value.hint


def test_a_port_in_use_is_refused_before_anything_boots(monkeypatch: pytest.MonkeyPatch, busy_port: int) -> None:
    monkeypatch.setattr(guest_run, "prepare", _never)
    with pytest.raises(BadParameter, match=f"already listens on 127.0.0.1:{busy_port}") as refused:
        guest_lab.serve([], busy_port, 60.0)
    assert "ss -ltn" in refused.value.hint


def test_the_lab_machine_itself_is_refused_before_anything_boots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guest, "ensure_guest", _never)
    monkeypatch.setattr(guest, "run_job", _never)
    with pytest.raises(BadParameter, match="15-the-lab-machine does not run in the lab machine"):
        guest_lab.serve(["15"], ports.free_port(), 60.0)


# ---------------------------------------------------------------- the network and the job, without booting


def test_one_port_is_forwarded_from_127_0_0_1_and_the_guest_reaches_nothing(tmp_path: Path) -> None:
    made = guest.GuestImage(tmp_path, tmp_path / "disk.img", tmp_path / "k", tmp_path / "i", {})
    plain = guest.qemu_argv(made, tmp_path / "share", "tcg", 3072, 2)
    assert plain[plain.index("-nic") + 1] == "none"  # a job without a forwarded port has no network at all
    argv = guest.qemu_argv(made, tmp_path / "share", "tcg", 3072, 2, read_write={"lab": tmp_path / "copies"},
                           forward=(18889, 8888))
    assert argv[argv.index("-nic") + 1] == "user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:18889-:8888"
    assert f"local,path={tmp_path / 'copies'},mount_tag=lab,security_model=none" in argv  # writable: no readonly


def _setting(tmp_path: Path) -> guest_run.GuestSetting:
    made = guest.GuestImage(tmp_path, tmp_path / "disk.img", tmp_path / "k", tmp_path / "i", {})
    notebooks = [paths.notebooks_dir() / "07-cgroups-and-limits.ipynb"]
    return guest_run.GuestSetting(notebooks, made, ["lk/busybox"], {"base-busybox.tar": b"tar"},
                                  {"project": paths.project_root()}, guest.MARK_FUNCTION + "mark bases\n")


def _boot(marks: dict[str, float], lines: tuple[str, ...] = ()) -> guest.GuestRun:
    return guest.GuestRun("tcg", marks, {}, "job-done" in marks, 0 if "job-done" in marks else None, {}, lines)


def test_the_job_mounts_the_copies_writable_brings_the_network_up_and_serves_on_the_guests_address(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(guest_run, "prepare", lambda selection, timeout_s: _setting(tmp_path))
    monkeypatch.setattr(guest_lab, "copies_dir", lambda: tmp_path / "copies")
    reached: list[int] = []
    monkeypatch.setattr(guest_lab, "reach", lambda port, token: reached.append(port))
    booted: dict[str, Any] = {}

    def boot(made: guest.GuestImage, script: str, files: dict[str, bytes], **options: Any) -> guest.GuestRun:
        booted.update(script=script, files=files, **options)
        options["on_mark"]("docker-ready", 31.0)
        options["on_mark"](guest_lab.READY, 62.4)
        raise KeyboardInterrupt  # the reader's Ctrl-C, while the guest serves

    monkeypatch.setattr(guest, "run_job", boot)
    port = ports.free_port()
    assert guest_lab.serve(["07"], port, 600.0) == 0

    assert [p.name for p in (tmp_path / "copies").iterdir()] == ["07-cgroups-and-limits.ipynb"]  # only those asked
    assert booted["read_write"] == {"lab": tmp_path / "copies"} and booted["forward"] == (port, guest_lab.GUEST_PORT)
    assert booted["files"] == {"base-busybox.tar": b"tar"} and booted["timeout_s"] == 600.0
    script = booted["script"]
    assert script.startswith(guest.MARK_FUNCTION + "mark bases\n")  # the shares and bases of `guest run` first
    assert f"mount -t 9p -o {guest.NINE_P_OPTIONS} lab {tmp_path / 'copies'}" in script  # no ro: saves come back
    assert guest.NETWORK_UP in script and f"--ip={guest.GUEST_ADDRESS}" in script and "--port=8888" in script
    assert f"mark {guest_lab.READY}\nwait $server" in script
    assert reached == [port]  # the host checks the forwarded port once, when the guest says its server answers
    out = capsys.readouterr().out
    assert f"ready after 62 s:\n  http://127.0.0.1:{port}/lab?token=" in out and "the lab machine is off" in out


def test_a_server_that_never_answered_is_an_error_with_the_guests_last_lines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guest_run, "prepare", lambda selection, timeout_s: _setting(tmp_path))
    monkeypatch.setattr(guest_lab, "copies_dir", lambda: tmp_path / "copies")
    lines = ("LABKIT mark docker-ready 30.1", "ModuleNotFoundError: No module named 'jupyterlab'",
             "JupyterLab did not answer within 300 s", "LABKIT mark job-done 41.0")
    monkeypatch.setattr(guest, "run_job", lambda *args, **options: _boot({"job-done": 44.0, "off": 45.2}, lines))
    with pytest.raises(LabkitError, match=r"did not start in the lab machine \(the guest powered off, its job's "
                                          r"status: 0\)[\s\S]*No module named 'jupyterlab'"):
        guest_lab.serve([], ports.free_port(), 600.0)


def test_a_guest_that_stalls_twice_is_an_error_that_shows_its_console_and_a_short_timeout_is_no_stall(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(guest_run, "prepare", lambda selection, timeout_s: _setting(tmp_path))
    monkeypatch.setattr(guest_lab, "copies_dir", lambda: tmp_path / "copies")
    asked: dict[str, Any] = {}

    def stalled(*args: object, **options: Any) -> guest.GuestRun:
        asked.update(options)
        for _ in range(guest.STALL_BOOTS if options["ready"] else 1):
            options["on_mark"]("docker-ready", 31.0)
            if options["ready"]:
                options["on_mark"]("stalled", options["ready"][1])
        return dataclasses.replace(_boot({"kernel": 1.2, "docker-ready": 31.0},
                                         ("[  31.5] rcu: INFO: rcu_sched self-detected stall",)),
                                   stalls=0 if options["ready"] is None else guest.STALL_BOOTS)

    monkeypatch.setattr(guest, "run_job", stalled)
    with pytest.raises(LabkitError, match=r"stalled in each of 2 boots: not serving 480 s after QEMU started"
                                          r"[\s\S]*rcu_sched") as error:
        guest_lab.serve([], ports.free_port(), 28800.0)
    assert asked["ready"] == (guest_lab.READY, 480.0) and asked["console_log"] == guest_lab.console_log()
    assert str(guest_lab.console_log()) in str(error.value) and "labkit guest lab` again" in error.value.hint
    out = capsys.readouterr().out
    assert "  docker-ready after 31.0 s" in out  # each mark shown as it arrives
    assert "stalled: JupyterLab not serving 480 s after QEMU started; booting it again" in out
    with pytest.raises(LabkitError, match=r"its time ran out, --timeout 60 s"):  # no stall, the reader's bound
        guest_lab.serve([], ports.free_port(), 60.0)
    assert asked["ready"] is None


# ---------------------------------------------------------------- live: the lab machine serving JupyterLab


class _Launcher:
    """`labkit guest …` as a reader starts it (`args` after `labkit guest`), its output read line by line."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "labkit", "guest", *args],
                                        cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                assert self.process.poll() is None, "\n".join(self.seen)
                continue
            self.seen.append(line)
            if text in line:
                return line
        console = guest_lab.console_log()
        tail = console.read_text().splitlines()[-40:] if console.is_file() else []
        raise AssertionError(f"no {text!r} after {timeout_s} s:\n" + "\n".join(self.seen)
                             + f"\nthe guest's console ({console}), its last lines:\n" + "\n".join(tail))

    def stop(self, signum: int) -> int:
        self.process.send_signal(signum)
        code = self.process.wait(timeout=120)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        print("\n".join(self.seen))
        return code

    def __enter__(self) -> _Launcher:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:  # a failed test still stops it as a reader would, then for sure
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _naming(text: str) -> list[int]:
    """The processes whose command line holds `text`: a boot's folder, or ``hostfwd=tcp:127.0.0.1:PORT-``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def _forwarding(port: int) -> str:
    return f"hostfwd=tcp:127.0.0.1:{port}-"


def _api(port: int, token: str, path: str, method: str = "GET", body: object = None) -> Any:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read() or b"null")


def _execute(port: int, token: str, kernel_id: str, code: str, timeout_s: float = 300) -> str:
    """Run `code` in the kernel over its websocket, as JupyterLab does; what it printed."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    async def run() -> str:
        url = f"ws://127.0.0.1:{port}/api/kernels/{kernel_id}/channels"
        channel = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {token}"}))
        msg_id = uuid.uuid4().hex
        channel.write_message(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test", "session": msg_id,
                       "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}))
        printed = ""
        while True:
            received = await channel.read_message()
            assert received is not None, "the kernel's websocket closed before the code ran"
            message = json.loads(received)
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind == "stream":
                printed += content["text"]
            elif kind == "error":
                raise AssertionError("\n".join(content["traceback"]))
            elif kind == "status" and content["execution_state"] == "idle":
                channel.close()
                return printed

    return asyncio.run(asyncio.wait_for(run(), timeout_s))


def _boots() -> set[Path]:
    return set(guest.runs_parent().iterdir()) if guest.runs_parent().is_dir() else set()


def _left_behind(before: set[Path], port: int | None = None, boots: set[Path] | None = None) -> list[str]:
    """What a launcher left: QEMU processes naming `boots` (or forwarding `port`), boot folders beyond `before`, a
    listener on `port`."""
    left = [f"QEMU pid {pid}" for text in [*map(str, boots or ()), *([_forwarding(port)] if port else [])]
            for pid in _naming(text)]
    left += [str(p) for p in _boots() - before]
    if port and not ports.port_free(port):
        left.append(f"a listener on 127.0.0.1:{port}")
    return left


@pytest.mark.docker
@pytest.mark.root
def test_a_kernel_starts_in_the_guest_through_127_0_0_1_a_saved_file_stays_and_ctrl_c_leaves_nothing(
        docker_client: object) -> None:
    port = ports.free_port()
    probe = guest_lab.copies_dir() / "saved-in-the-guest.txt"
    probe.unlink(missing_ok=True)
    before = _boots()
    with _Launcher("lab", "07", "--port", str(port)) as launcher:
        # Beyond the two boots labkit allows before it calls the guest stalled, so its own error is what shows.
        url = launcher.wait_for(f"http://127.0.0.1:{port}/lab?token=",
                                guest_lab.READY_WITHIN_S * guest.STALL_BOOTS + 300).strip()
        token = url.rsplit("token=", 1)[1]
        assert len(_naming(_forwarding(port))) == 1  # the port is QEMU's: the server runs in the guest, not here
        kernel = _api(port, token, "/api/kernels", "POST", {"name": "python3"})
        said = _execute(port, token, kernel["id"], "import os, pathlib\n"
                        "print(os.uname().release, pathlib.Path('/sys/fs/cgroup/cgroup.controllers').is_file())")
        assert said == f"{guest.ensure_guest().kernel_release} True\n"  # the guest's kernel, on cgroup v2
        _api(port, token, f"/api/contents/{probe.name}", "PUT",
             {"type": "file", "format": "text", "content": "written through JupyterLab in the guest\n"})
        assert probe.read_text() == "written through JupyterLab in the guest\n"  # the writable share, on the host
        assert launcher.stop(signal.SIGINT) == 0
        assert any("the lab machine is off" in line for line in launcher.seen), launcher.seen
        assert _left_behind(before, port) == []
    probe.unlink()


@pytest.mark.docker
@pytest.mark.root
@pytest.mark.parametrize(("args", "signum", "code"), [
    (("lab", "07"), signal.SIGTERM, 0),  # the lab's own way to stop: the guest off, and a normal end
    (("run", "--quick", "01"), signal.SIGINT, 130),  # as every `labkit` command ends on Ctrl-C
], ids=["guest lab, SIGTERM", "guest run, SIGINT"])
def test_a_boot_interrupted_while_qemu_runs_leaves_nothing(docker_client: object, args: tuple[str, ...],
                                                          signum: int, code: int) -> None:
    port = ports.free_port()
    before = _boots()
    with _Launcher(*args, *(["--port", str(port)] if args[0] == "lab" else [])) as launcher:
        deadline = time.monotonic() + 300
        while not (new := _boots() - before) or not any(_naming(str(boot)) for boot in new):
            assert time.monotonic() < deadline and launcher.process.poll() is None, launcher.seen
            time.sleep(0.2)  # until QEMU runs, naming its boot's folder
        assert launcher.stop(signum) == code
        assert _left_behind(before, port if args[0] == "lab" else None, new) == []
