"""Every notebook, executed top to bottom in quick mode against the live engine, as `labkit run` does it.

Then the result files are checked for what each lab promises, and the engine and cgroups for leftovers.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import docker
import pandas as pd
import pytest

from labkit.instruments import cgroups, procfs
from labkit.labs import what_a_container_is
from tests.browser import chromium, served, visit
from tests.conftest import leftovers

ROOT = Path(__file__).resolve().parent.parent
TOPIC = "01-what-a-container-is"
QUICK_EXECUTED = ROOT / "build" / "quick" / "notebooks"  # where `labkit run --quick` keeps its executed copies
KINDS = ["pid", "net", "mnt", "uts", "ipc"]
REDIRECT = re.compile(r'<meta http-equiv="Refresh" content="0; url=([^"]+)"', re.IGNORECASE)

pytestmark = [pytest.mark.docker, pytest.mark.notebooks]


def _labkit(*args: str, results: Path, **popen: object) -> subprocess.Popen[str]:
    env = {**os.environ, "LABKIT_RESULTS_DIR": str(results)}
    return subprocess.Popen([sys.executable, "-m", "labkit", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)  # type: ignore[call-overload]


def _scratch_cgroups() -> list[str]:
    layout = cgroups.CgroupLayout.from_system()
    base = layout.memory.path / "labkit"
    return [str(p) for p in base.rglob("*") if p.is_dir()] if base.exists() else []


@pytest.fixture(scope="module")
def executed(quick_series: Path) -> Path:
    return quick_series / TOPIC


def test_run_report_names_each_notebook_ok(executed: Path) -> None:
    report = json.loads((QUICK_EXECUTED / "run-report.json").read_text())
    assert [(n["notebook"], n["status"]) for n in report["notebooks"]] == [
        (nb.stem, "ok") for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))]


def test_provenance_says_where_and_when(executed: Path) -> None:
    provenance = json.loads((executed / "provenance.json").read_text())
    assert provenance["quick"] is True
    assert provenance["fingerprint"]["engine_version"] and provenance["fingerprint"]["kernel"] == os.uname().release
    assert provenance["started_utc"] < provenance["ended_utc"]
    experiments = provenance["experiments"]
    assert set(experiments) == set(what_a_container_is.LAB.tables) - {"claims"}
    # The from-scratch experiment records three tables, each with the limits it ran under.
    assert {experiments[t]["experiment"] for t in ("scratch_cgroup", "scratch_namespaces", "scratch_inside")} == {
        "from_scratch"}
    assert experiments["scratch_inside"]["parameters"]["memory_limit_bytes"] == 64 * 2**20


def test_tables_carry_the_columns_the_lab_declares(executed: Path) -> None:
    for table, columns in what_a_container_is.LAB.tables.items():
        assert list(pd.read_csv(executed / f"{table}.csv", nrows=0).columns) == list(columns), table


def test_default_container_gets_new_namespaces_and_each_flag_shares_one(executed: Path) -> None:
    table = pd.read_csv(executed / "namespaces.csv").set_index(["subject", "kind"])["shared"]
    assert not table.loc["docker run (default)"].loc[KINDS].any()
    assert table.loc["host"].all()
    for flag, kind in [("--pid host", "pid"), ("--network host", "net"), ("--ipc host", "ipc"),
                       ("--uts host", "uts")]:
        assert list(table.loc[flag][table.loc[flag]].index.intersection(KINDS)) == [kind]


def test_inside_the_default_container(executed: Path) -> None:
    inside = pd.read_csv(executed / "inside.csv", dtype=str).set_index("check")
    assert inside.loc["its PID", "inside"] == "1" and inside.loc["its PID", "host"] != "1"
    assert inside.loc["network interfaces", "inside"] == "eth0 lo"
    assert inside.loc["command of its PID 1", "inside"] == "/bin/sleep 300"
    assert inside.loc["kernel release (uname -r)", "inside"] == os.uname().release
    assert inside.loc["kernel boot id", "inside"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert inside.loc["hostname", "same"] == "False"
    chain = pd.read_csv(executed / "ancestry.csv").sort_values("depth")
    assert chain["name"].iloc[0] == "sleep" and chain["name"].iloc[1].startswith("containerd-shim")


def test_privileges_follow_the_flags(executed: Path) -> None:
    caps = pd.read_csv(executed / "capabilities.csv")
    effective = caps[caps["effective"]].groupby("subject")["capability"].apply(set)
    assert "CAP_SYS_ADMIN" in effective["host"] and "CAP_SYS_ADMIN" not in effective["docker run (default)"]
    assert "--cap-drop ALL" not in effective.index
    assert effective["--cap-add NET_ADMIN"] - effective["docker run (default)"] == {"CAP_NET_ADMIN"}
    seccomp = caps.groupby("subject")["seccomp_mode"].first()
    assert seccomp["docker run (default)"] == 2 and seccomp["--security-opt seccomp=unconfined"] == 0


def test_from_scratch_container_is_isolated_limited_and_cleaned(executed: Path) -> None:
    namespaces = pd.read_csv(executed / "scratch_namespaces.csv").set_index("kind")
    assert not namespaces.loc[KINDS, "shared"].any()
    record = pd.read_csv(executed / "scratch_cgroup.csv").iloc[0]
    assert record["memory_limit_read_bytes"] == record["memory_limit_bytes"] == 64 * 2**20
    assert bool(record["pid_in_cgroup"]) and bool(record["cleaned"])
    assert record["hog_exit_code"] == 137 and record["hog_oom_kills"] >= 1
    assert "sigprocmask" in record["hog_raw_exit"] or "signal 9" in record["hog_raw_exit"]
    # Nothing drops root's privileges in the from-scratch box: all of this host's bounding set, no seccomp.
    assert record["effective_capabilities"] == len(procfs.read_status("self").bounding)
    assert record["seccomp_mode"] == 0


def test_startup_interleaves_four_methods_under_the_same_limits(executed: Path) -> None:
    startup = pd.read_csv(executed / "startup.csv")
    assert startup.groupby("method").size().to_dict() == {m: 5 for m in what_a_container_is.STARTUP_METHODS}
    first = startup[startup["repeat"] == 0].sort_values("position")["method"].tolist()
    second = startup[startup["repeat"] == 1].sort_values("position")["method"].tolist()
    assert first == list(what_a_container_is.STARTUP_METHODS) and second == first[1:] + first[:1]
    assert startup[["memory_limit_bytes", "pids_limit", "cpus"]].drop_duplicates().values.tolist() == [
        [64 * 2**20, 32, 0.5]]
    assert startup["static_binary"].all()


def test_vm_booted_a_real_kernel(executed: Path) -> None:
    boots = pd.read_csv(executed / "vm_boot.csv")
    assert len(boots) == 1 and boots["marker_seen"].all() and not boots["timed_out"].any()
    assert boots["kernel_release"].str.endswith("-amd64").all()


def test_claims_match_what_this_host_is_known_to_do(executed: Path) -> None:
    claims = pd.read_csv(executed / "claims.csv", keep_default_na=False).set_index("id")
    cgroup_v2 = json.loads((executed / "provenance.json").read_text())["fingerprint"]["cgroup_version"] == "v2"
    known = {
        "process.ordinary": "holds",
        "kernel.shared": "holds",
        # pid, net, mnt, uts and ipc are a default container's own on every Docker host.
        "namespaces.own": "holds",
        # Docker makes no user namespace without userns-remap (not set by labkit's dockerd): the sixth is the host's.
        "namespaces.six_kinds": "does not hold",
        # --network host shares the net namespace only: pid, mnt, uts and ipc stay the container's own.
        "namespaces.host_network": "does not hold",
        # NET_RAW is in Docker's default capability set (20.10 and later keep it).
        "capabilities.net_raw": "does not hold",
        # The from-scratch box keeps root's privileges: the claim holds only with that caveat.
        "scratch.same_isolation": "holds with caveat",
        "privileges.less_than_host_root": "holds",
    }
    assert claims.loc[list(known), "verdict"].to_dict() == known
    # The cgroup namespace is private only on cgroup v2 hosts.
    shared = claims.loc["namespaces.own", "measured"].split("shared with the host:")[1]
    assert ("cgroup" in shared) != cgroup_v2
    assert (claims["criterion"].str.len() > 0).all()
    docker_ms = pd.read_csv(executed / "startup.csv").query("method == 'docker SDK'")["wall_s"].median() * 1e3
    assert claims.loc["startup.milliseconds", "value"] == pytest.approx(docker_ms)


def test_the_clock_and_apparmor_are_what_this_host_has(executed: Path) -> None:
    clock = pd.read_csv(executed / "clock.csv").set_index("check")
    # Docker 20.10 makes no time namespace: the container's is this test's own (the host's), read here directly.
    host_time = int(os.readlink("/proc/self/ns/time").split("[")[1].rstrip("]"))
    assert clock.loc["time namespace", "inside"] == clock.loc["time namespace for its children", "inside"] == host_time
    assert clock["within"].all()
    confinement = pd.read_csv(executed / "confinement.csv").set_index("subject")
    enabled = Path("/sys/module/apparmor/parameters/enabled")
    apparmor = enabled.exists() and enabled.read_text().strip() == "Y"
    label = confinement.loc["docker run (default)", "label"]
    assert label == "docker-default (enforce)" if apparmor else label == procfs.NO_SECURITY_LABEL
    claims = pd.read_csv(executed / "claims.csv").set_index("id")
    assert claims.loc["namespaces.time_is_the_host_s", "verdict"] == "holds"


def test_nothing_is_left_behind(executed: Path, docker_client: docker.DockerClient) -> None:
    assert leftovers(docker_client) == {"containers": [], "networks": [], "volumes": []}
    assert _scratch_cgroups() == []


def test_sigint_in_the_middle_of_notebook_01_leaves_nothing(
        executed: Path, docker_client: docker.DockerClient, tmp_path: Path) -> None:
    proc = _labkit("run", "--quick", "01", "--output", str(tmp_path), results=tmp_path, start_new_session=True)
    deadline = time.monotonic() + 300
    # Wait until the notebook has a container of its own running, then interrupt as Ctrl-C would.
    while not leftovers(docker_client)["containers"]:
        assert proc.poll() is None, "the run ended before it made a container"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, output
    assert leftovers(docker_client) == {"containers": [], "networks": [], "volumes": []}, output
    assert _scratch_cgroups() == []
    stray = subprocess.run(["pgrep", "-fx", "/bin/sleep 300"], capture_output=True, text=True).stdout
    assert stray == ""


def test_book_every_page_loads_offline_with_its_images_links_and_data(executed: Path, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "labkit", "book", "--executed", str(QUICK_EXECUTED), "--results",
                           str(executed.parent)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    index = Path(done.stdout.strip().splitlines()[-1])
    assert index.name == "index.html" and index.exists()
    check_book(index, QUICK_EXECUTED, executed.parent, tmp_path)


def check_book(index: Path, executed_dir: Path, results: Path, tmp_path: Path) -> None:
    """Every page of the built book in Chromium, served from 127.0.0.1: it loads, each image has a size, each
    internal link (and #anchor) resolves, nothing is fetched from elsewhere; then what the pages must say."""
    from labkit.app import book

    html = index.parent
    # Redirect pages (index.html → the landing page) are checked by where they point; the rest are opened.
    redirects = {p.name: REDIRECT.search(p.read_text()) for p in html.glob("*.html")}
    names = sorted(name for name, target in redirects.items() if target is None)
    assert {name: target.group(1) for name, target in redirects.items() if target} == {"index.html": "intro.html"}
    with served(html) as base, chromium(tmp_path / "profile", height=900) as browser:
        page = browser.page()
        pages = {name: visit(page, base + name) for name in names}
        shots = ROOT / "build" / "screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        for name, shot in (("intro.html", "book-landing.png"), (f"{TOPIC}.html", "book-01.png")):
            page.goto(base + name)
            page.screenshot(path=str(shots / shot), full_page=True)
        outside = list(browser.outside)
    broken = []
    for name, report in pages.items():
        for link in report.links:
            target, _, anchor = link.removeprefix(base).partition("#")
            target = target.split("?", 1)[0] or "index.html"
            if target in pages:
                if anchor and anchor not in pages[target].ids:
                    broken.append(f"{name} → {target}#{anchor}")
            elif not (html / target).is_file():
                broken.append(f"{name} → {target}")
    assert {name: r.status for name, r in pages.items() if r.status != 200} == {}
    assert {src: area for r in pages.values() for src, area in r.images.items() if area == 0} == {}
    assert broken == []
    assert outside == []

    chapters = [book.read_chapter(nb, results) for nb in sorted(executed_dir.glob("[0-9][0-9]-*.ipynb"))]
    ledger = pd.concat([pd.read_csv(c.results / "claims.csv", keep_default_na=False) for c in chapters])
    landing, ledger_page, environment = pages["intro.html"], pages["claims.html"], pages["environment.html"]
    for chapter in chapters:
        assert chapter.title in landing.text and chapter.title in environment.text
        assert f"{base}{chapter.stem}.html" in landing.links
        # Every table behind a chapter can be downloaded from its page, byte for byte what was measured.
        downloads = {Path(link).name: link for link in pages[f"{chapter.stem}.html"].links if "/_downloads/" in link}
        for table in chapter.results.glob("*.csv"):
            relative = downloads[table.name].removeprefix(base)
            assert (html / relative).read_bytes() == table.read_bytes(), relative
    for claim in ledger.itertuples():
        assert claim.id in ledger_page.text and claim.verdict in ledger_page.text
    # Each claim of a live chapter links to the section that measured it.
    measured_in = [link for link in ledger_page.links
                   if "#" in link and any(link.startswith(f"{base}{c.stem}.html#") for c in chapters)]
    assert len(measured_in) == len(ledger[ledger["notebook"].isin([c.stem for c in chapters if c.live])])
    assert os.uname().release in environment.text
    chapter_01 = pages[f"{TOPIC}.html"]
    assert "What a container actually is" in chapter_01.text and "Live run" in chapter_01.text
    assert len(chapter_01.images) >= 4, "the two heatmaps and the two start-up plots are rendered as images"
