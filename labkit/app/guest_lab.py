"""`labkit guest lab`: JupyterLab served from inside the lab machine (cgroup v2, Docker's systemd driver) on the
host's 127.0.0.1.

The guest boots as for `labkit guest run` (:func:`labkit.app.guest_run.prepare`: the checkout, the cache and the
virtualenv shared read-only at their host paths, the notebooks' bases loaded into the guest's engine) with one more
share, writable: the readers' copies in build/guest/lab/, made as `labkit lab` makes its own
(:func:`labkit.app.jupyter.reader_copies`), so what a reader saves outlives the guest, whose disk is dropped at
power-off. Its one network is QEMU's user-mode network with ``restrict=on``: the host's 127.0.0.1:PORT reaches the
server in the guest, and the guest reaches nothing. Ctrl-C or SIGTERM powers the guest off (QEMU is ended and the
boot's folder removed); so does shutting JupyterLab down from its File menu.
"""

from __future__ import annotations

import secrets
import shlex
import time
import urllib.error
import urllib.request
from pathlib import Path

from labkit import paths
from labkit.app import guest_run, jupyter
from labkit.errors import LabkitError
from labkit.instruments import engine, ports
from labkit.instruments.vm import accelerator, guest

DEFAULT_NOTEBOOKS = ("01", "07")  # the two whose cgroup v1 and v2 answers differ, the guest's reason to exist
GUEST_PORT = 8888  # the server's port inside the guest
READY = "lab-ready"  # the mark the guest prints once its server answers
GUEST_WAIT_S = 300  # seconds of the guest's uptime its server has to answer it, once started (TCG: 27-56 s)
READY_WITHIN_S = 480.0
"""Seconds from QEMU's start within which the guest must say its server answers, or the boot has stalled and the
guest is booted again, once (:data:`~labkit.instruments.vm.guest.STALL_BOOTS`; TCG here: 61-111 s in ten boots)."""
HOST_TRIES = 20  # the host's checks of the forwarded port once the guest said its server answers, 1 s apart
_LAB = """mkdir -p {copies} && mount -t 9p -o {nine_p} lab {copies}
{network_up}cd {copies}
LABKIT_RUN_ID={run_id} {server} &
server=$!
give_up=$(( $(cut -d. -f1 /proc/uptime) + {wait_s} ))
until python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' {status} 2>/dev/null
do
  if [ "$(cut -d. -f1 /proc/uptime)" -ge $give_up ] || ! kill -0 $server 2>/dev/null; then
    echo "JupyterLab did not answer within {wait_s} s"; exit 1
  fi
  sleep 1
done
mark {ready}
wait $server
"""


def copies_dir() -> Path:
    """The readers' copies the guest's JupyterLab opens: build/guest/lab/ (kept between boots)."""
    return paths.build_dir() / "guest" / "lab"


def console_log() -> Path:
    """The latest boot's console, line by line as it arrives, each after its seconds from QEMU's start."""
    return paths.build_dir() / "guest" / "lab-console.log"


def status_url(port: int, token: str, host: str = ports.LOOPBACK) -> str:
    return f"http://{host}:{port}/api/status?token={token}"


def reach(port: int, token: str, tries: int = HOST_TRIES) -> None:
    """Wait until the forwarded server answers on the host's 127.0.0.1:`port`, `tries` times at most, 1 s apart."""
    for attempt in range(tries):
        try:
            with urllib.request.urlopen(status_url(port, token), timeout=5):
                return
        except (urllib.error.URLError, OSError):
            if attempt + 1 < tries:
                time.sleep(1)
    raise LabkitError(f"the guest's JupyterLab answers inside the guest but not on 127.0.0.1:{port} after "
                      f"{tries} tries.", "Run `labkit guest lab` again; `labkit doctor 15` checks the lab machine.")


def serve(selection: list[str], port: int, timeout_s: float) -> int:
    """`labkit guest lab`: boot the lab machine with the notebooks `selection` names (default 01 and 07) and
    their bases, serve JupyterLab from it on 127.0.0.1:`port`, print its URL, and power it off on Ctrl-C or
    after `timeout_s` seconds."""
    ports.check_port(port, "--port ", 8890)
    setting = guest_run.prepare(selection or list(DEFAULT_NOTEBOOKS), timeout_s)
    copies = copies_dir()
    made, stale = jupyter.reader_copies(paths.notebooks_dir(), copies, {nb.stem for nb in setting.notebooks})
    for copy in made:
        print(f"copied {copy.name} → {copy}")
    for copy in stale:
        print(f"note: notebooks/{copy.name} changed since your copy {copy} was made; your copy is kept "
              "(delete it to get the new version).")
    token = secrets.token_hex(24)
    server = jupyter.server_argv(copies, GUEST_PORT, token, ip=guest.GUEST_ADDRESS)
    run_id = engine.new_run_id()
    script = setting.script + _LAB.format(
        copies=shlex.quote(str(copies)), nine_p=guest.NINE_P_OPTIONS, network_up=guest.NETWORK_UP, run_id=run_id,
        server=shlex.join(server), status=shlex.quote(status_url(GUEST_PORT, token, guest.GUEST_ADDRESS)),
        wait_s=GUEST_WAIT_S, ready=READY)
    url = f"http://127.0.0.1:{port}/lab?token={token}"
    ready = (READY, READY_WITHIN_S) if timeout_s > READY_WITHIN_S else None  # else the --timeout bounds it
    print(f"booting the lab machine ({accelerator()}; about a minute under emulation, at most "
          f"{min(READY_WITHIN_S, timeout_s):.0f} s a boot); its console: {console_log()}", flush=True)

    def on_mark(name: str, seconds: float) -> None:
        if name == "stalled":
            print(f"the lab machine stalled: JupyterLab not serving {seconds:.0f} s after QEMU started; "
                  "booting it again …", flush=True)
            return
        print(f"  {name} after {seconds:.1f} s", flush=True)
        if name != READY:
            return
        reach(port, token)
        print(f"JupyterLab in the lab machine (cgroup v2, Docker's systemd driver), ready after {seconds:.0f} s:\n"
              f"  {url}\n  notebooks: {copies} (your copies, kept after the guest is gone)\n"
              "Ctrl-C powers the lab machine off.", flush=True)

    try:
        boot = guest.run_job(setting.made, script, setting.archives, run_id=run_id, accel=accelerator(),
                             memory_mib=guest_run.MEMORY_MIB, cpus=guest_run.CPUS, timeout_s=timeout_s,
                             read_only=setting.read_only, read_write={"lab": copies}, forward=(port, GUEST_PORT),
                             ready=ready, on_mark=on_mark, console_log=console_log())
    except KeyboardInterrupt:
        print(f"the lab machine is off; your copies stay in {copies}", flush=True)
        return 0
    if READY not in boot.marks:
        if "off" in boot.marks:
            how = f"the guest powered off, its job's status: {boot.status}"
        elif boot.stalls:
            how = f"stalled in each of {boot.stalls} boots: not serving {READY_WITHIN_S:.0f} s after QEMU started"
        else:
            how = f"its time ran out, --timeout {timeout_s:g} s"
        tail = "\n".join(boot.job_lines()[-20:])
        raise LabkitError(f"JupyterLab did not start in the lab machine ({how}); the console's last lines "
                          f"(all of it in {console_log()}):\n{tail}",
                          "Run `labkit guest lab` again; `labkit guest run 01` checks the lab machine itself; "
                          "`labkit lab` serves the notebooks from this host.")
    ended = "JupyterLab was shut down" if boot.completed else f"its time ran out ({timeout_s:g} s)"
    print(f"the lab machine is off ({ended}); your copies stay in {copies}")
    return 0
