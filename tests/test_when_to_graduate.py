"""Notebook 13 (when to graduate): the swarm instrument's decisions and refusals against hand-made inputs, the lab's
arithmetic against hand-made request logs, its claims against hand-made results, a live cluster made and removed,
and an interrupted (SIGINT, SIGTERM) or SIGKILLed cluster that leaves no daemon, namespace, bridge, rule, folder or
cgroup behind."""

from __future__ import annotations

import ipaddress
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import docker
import pandas as pd
import pytest

from labkit import assets
from labkit.app import runner
from labkit.core.claims import ClaimLedger, Verdict
from labkit.core.session import LabSession
from labkit.errors import BadParameter
from labkit.instruments import (
    cgroups,
    compose,
    daemons,
    firewall,
    images,
    loadclient,
    netns,
    procfs,
    registry,
    runtimes,
    shell,
    swarm,
    undo,
)
from labkit.labs import when_to_graduate as graduate
from labkit.labs.when_to_graduate import as_stack, orchestrator, single_box, stateful, under_load
from labkit.labs.when_to_graduate.declaration import APP_BASE, LEFT_BEHIND, MOVED, WRITTEN
from tests.conftest import default_sigint, interrupted_run, killed_if_running, lab_objects, missing

LAB = graduate.LAB

# ---------------------------------------------------------------- the kernel's answer

CONFIG_NO_IPVS = "CONFIG_BRIDGE=y\nCONFIG_VXLAN=y\n# CONFIG_IP_VS is not set\n"
CONFIG_IPVS_MODULE = "CONFIG_VXLAN=m\nCONFIG_IP_VS=m\n"


def test_without_ipvs_the_service_uses_dns_round_robin_and_host_ports() -> None:
    support = swarm.support_from(swarm.parse_kernel_config(CONFIG_NO_IPVS), ip_vs_table=False, vxlan_module=False)
    assert (support.vxlan, support.ip_vs) == (True, False)
    assert (support.endpoint_mode, support.publish_mode) == ("dnsrr", "host")
    assert "CONFIG_IP_VS=unset" in support.evidence and "absent" in support.evidence


def test_a_loaded_ipvs_table_allows_virtual_ips_and_an_unloaded_module_does_not() -> None:
    config = swarm.parse_kernel_config(CONFIG_IPVS_MODULE)
    assert swarm.support_from(config, ip_vs_table=True, vxlan_module=False).endpoint_mode == "vip"
    assert swarm.support_from(config, ip_vs_table=False, vxlan_module=False).endpoint_mode == "dnsrr"
    # No readable config: only what is loaded counts.
    assert not swarm.support_from({}, ip_vs_table=False, vxlan_module=False).vxlan
    assert swarm.support_from({}, ip_vs_table=False, vxlan_module=True).vxlan


# ---------------------------------------------------------------- refusals before anything starts


@pytest.mark.parametrize(("count", "heartbeat", "memory", "message"), [
    (0, None, 8000, "nodes=0"),
    (True, None, 8000, "nodes=True"),
    (8, None, 80000, "nodes=8"),
    (3, None, 1000, "more than the 1000 MiB"),  # 3 × 400 = 1200 MiB > 1000
    (3, 0.0, 8000, "heartbeat_s=0.0"),
    (3, 61, 8000, "heartbeat_s=61"),
])
def test_a_bad_cluster_is_refused(count: int, heartbeat: float | None, memory: int, message: str) -> None:
    with pytest.raises(daemons.BadNodes, match=message.replace("(", r"\(")):
        swarm.validate(count, heartbeat, memory)


def test_a_cluster_that_fits_is_accepted() -> None:
    swarm.validate(3, 1.0, 1200)  # exactly 3 × 400 MiB


def knobs(**changes: object) -> graduate.Knobs:
    fields = {"nodes": 3, "replicas": 3, "rounds": 1, "update_delay_s": 1.0, "restart_delay_s": 5.0,
              "load_window_s": 60.0, "heartbeats_s": (1.0,), "broken_order": "stop-first", **changes}
    return graduate.Knobs(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(("changes", "message"), [
    ({"replicas": 0}, "replicas=0"),
    ({"broken_order": "rolling"}, "broken_order='rolling'"),
    ({"rounds": 0}, "rounds=0"),
    ({"load_window_s": 10.0}, "load_window_s=10.0"),
    ({"heartbeats_s": (1.0, 5.0, 2.0)}, "manager must survive"),  # 3 kills of 3 nodes would kill the manager
    ({"nodes": 0, "heartbeats_s": ()}, "heartbeats_s=()"),
    ({"nodes": 9, "heartbeats_s": (1.0,)}, "nodes=9"),
])
def test_bad_knobs_are_refused_before_anything_starts(changes: dict[str, object], message: str) -> None:
    with pytest.raises(BadParameter, match=message.replace("(", r"\(").replace(")", r"\)")):
        graduate.check(knobs(**changes), available_mib=8000)


def test_more_nodes_than_memory_allows_are_refused_live_and_not_checked_in_a_replay() -> None:
    with pytest.raises(BadParameter, match="more than the 1000 MiB"):
        graduate.check(knobs(), available_mib=1000)  # 3 nodes × 400 MiB
    graduate.check(knobs(), available_mib=None)


def test_the_stack_file_uses_the_chosen_endpoint_mode_and_limits() -> None:
    text = graduate.stack_file("app:v1", 3, "dnsrr", 5.0)
    assert "endpoint_mode: dnsrr" in text and "replicas: 3" in text and "delay: 5.0s" in text
    assert 'memory: 32M' in text and "attachable: true" in text
    assert "init: true" in text  # busybox httpd as PID 1 ignores SIGTERM: each stop would wait out the grace period


def test_a_lan_subnet_is_a_free_slash_28() -> None:
    used = [ipaddress.IPv4Network("198.18.0.0/30"), ipaddress.IPv4Network("198.18.0.20/32")]
    # 198.18.0.0/28 holds the /30, 198.18.0.16/28 holds .20: the first free /28 is .32
    assert netns.free_subnet(used, prefix=28) == ipaddress.IPv4Network("198.18.0.32/28")


# ---------------------------------------------------------------- arithmetic on hand-made logs

LOG = pd.DataFrame([  # started_s, latency_s: ends at 0.1, 0.3, (failed), 1.4, 1.5
    {"case": "a", "round": 0, "index": 0, "started_s": 0.0, "latency_s": 0.1, "status": 200, "error": ""},
    {"case": "a", "round": 0, "index": 1, "started_s": 0.2, "latency_s": 0.1, "status": 200, "error": ""},
    {"case": "a", "round": 0, "index": 2, "started_s": 0.3, "latency_s": 0.5, "status": 0, "error": "refused"},
    {"case": "a", "round": 0, "index": 3, "started_s": 1.2, "latency_s": 0.2, "status": 200, "error": ""},
    {"case": "a", "round": 0, "index": 4, "started_s": 1.4, "latency_s": 0.1, "status": 200, "error": ""},
])


def test_failures_and_the_longest_gap_come_from_the_clients_log() -> None:
    failed, gap = graduate.gaps_and_failures(LOG)
    assert failed == 1
    assert gap == pytest.approx(1.1)  # successes end at 0.1, 0.3, 1.4, 1.5: the longest gap is 1.4 - 0.3


def test_one_success_has_no_gap() -> None:
    assert math.isnan(graduate.gaps_and_failures(LOG.iloc[:1])[1])


def result(*, start_first_failed: int = 0, rollback_state: str = "rollback_completed", plain_replaced: bool = False,
           images_match: bool = True, node_down_s: float = 3.0, compose_failed: int = 4,
           refused_as_written: bool = True, publish_mode: str = "ingress",
           asked_address: str = "127.0.0.1", task_replaced: bool = True,
           start_first_gap_s: float = 0.1) -> graduate.OrchestratorResult:
    placement = pd.DataFrame({"task": ["t1", "t2", "t3"], "node": ["node1", "node2", "node3"],
                              "state": ["running"] * 3, "image": ["app:v1"] * 3})
    healing = pd.DataFrame([
        {"event": "container unhealthy (Compose, one engine)", "heartbeat_s": math.nan, "detected_s": 2.0,
         "replaced_s": math.nan, "replaced": plain_replaced, "detail": "running"},
        {"event": "task killed (SIGKILL)", "heartbeat_s": 5.0, "detected_s": math.nan,
         "replaced_s": 6.0 if task_replaced else math.nan, "replaced": task_replaced, "detail": ""},
        {"event": "task unhealthy (swarm)", "heartbeat_s": 5.0, "detected_s": math.nan, "replaced_s": 9.0,
         "replaced": True, "detail": ""},
        {"event": "node killed (SIGKILL of its dockerd)", "heartbeat_s": 1.0, "detected_s": node_down_s,
         "replaced_s": 8.0, "replaced": True, "detail": ""},
    ])
    row = {"round": 0, "from_image": "a", "to_image": "b", "final_image": "b", "duration_s": 10.0,
           "requests": 100, "longest_gap_s": 0.1, "images_match": images_match, "load_covered": True}
    rollout = pd.DataFrame([
        {**row, "case": "update, stop-first", "order": "stop-first", "state": "completed", "failed": 3},
        {**row, "case": "update, start-first", "order": "start-first", "state": "completed",
         "longest_gap_s": start_first_gap_s,
         "failed": start_first_failed},
        {**row, "case": "broken release, stop-first", "order": "stop-first", "state": rollback_state, "failed": 0},
        {**row, "case": single_box.CASE, "order": single_box.ORDER, "state": "completed", "failed": compose_failed},
    ])
    asked = {"asked_ports": json.dumps([{"host_ip": asked_address, "target": 3000, "published": "8080"}]),
             "asked_restart": "no", "cli": "20.10.24+dfsg1"}
    tries = pd.DataFrame([
        {"step": 0, "change": "as written", "exit_code": 1 if refused_as_written else 0,
         "message": "unsupported Compose file version: 1.0", **asked, "refused_text": as_stack.CHAPTER,
         "published": "", "restart": ""},
        {"step": 1, "change": "pull_policy removed", "exit_code": 0, "message": "Ignoring unsupported options: build",
         **asked, "refused_text": "",
         "published": json.dumps([{"Protocol": "tcp", "TargetPort": 3000, "PublishedPort": 8080,
                                   "PublishMode": publish_mode}]), "restart": "any"},
    ][0 if refused_as_written else 1:])
    return graduate.OrchestratorResult(placement, tries, healing, rollout, LOG, _stateful(moved_found_it=False),
                                       "dnsrr", "CONFIG_IP_VS=unset")


def portable(outputs: dict[str, str] | None = None, missing: dict[str, str] | None = None,
             podman_digest: str = "sha256:aa") -> graduate.PortabilityResult:
    """Two timed runs per runtime that ran (each printing its `outputs` entry), and a row per `missing` one."""
    outputs = {"docker": "v1", "containerd (ctr)": "v1", "podman": "v1"} if outputs is None else outputs
    rows = [{"runtime": name, "version": f"{name} 1", "config_digest": podman_digest if name == "podman" else
             "sha256:aa", "output": text, "repeat": repeat, "position": 0, "wall_s": 0.5 + repeat, "missing": ""}
            for name, text in outputs.items() for repeat in range(2)]
    rows += [{"runtime": name, "version": "", "config_digest": "", "output": "", "repeat": -1, "position": -1,
              "wall_s": math.nan, "missing": why} for name, why in (missing or {}).items()]
    return graduate.PortabilityResult(pd.DataFrame(rows))


def test_the_portability_conclusion_names_the_limits_podman_ran_under() -> None:
    assert "podman ran with `--ulimit nofile=1024:4096 --ulimit nproc=4096:4096`" in portable().conclusion()
    assert "--ulimit" not in portable({"docker": "v1", "containerd (ctr)": "v1"}, {"podman": "x"}).conclusion()


def verdicts(found: graduate.OrchestratorResult,
             runtimes: graduate.PortabilityResult | None = None) -> dict[str, Verdict]:
    ledger = ClaimLedger(graduate.STEM)
    graduate.check_claims(ledger, found, portable() if runtimes is None else runtimes)
    return dict(zip(ledger.frame()["id"], ledger.frame()["verdict"], strict=True))


def _stateful(moved_found_it: bool, left_behind: bool = True) -> graduate.StatefulResult:
    return graduate.StatefulResult(pd.DataFrame([
        {"step": WRITTEN, "node": "node1", "marker": True, "detail": ""},
        {"step": MOVED, "node": "node2", "marker": moved_found_it, "detail": ""},
        {"step": LEFT_BEHIND, "node": "node1", "marker": left_behind, "detail": ""}]))


def test_the_state_claim_holds_only_when_the_file_stayed_behind() -> None:
    def verdict(found: graduate.StatefulResult) -> Verdict:
        ledger = ClaimLedger(graduate.STEM)
        graduate.check_claims(ledger, replace(result(), stateful=found), portable())
        return {claim.id: claim.verdict for claim in ledger}["graduate.state_stays_on_its_node"]

    assert verdict(_stateful(moved_found_it=False)) == Verdict.HOLDS
    assert verdict(_stateful(moved_found_it=True)) == Verdict.FAILS  # shared storage would do this
    assert verdict(_stateful(moved_found_it=False, left_behind=False)) == Verdict.FAILS
    assert "did **not** find" in _stateful(moved_found_it=False).conclusion()
    # The conclusion says what happened, not what should have: shared storage would carry the file along.
    assert "a new one, made empty" not in _stateful(moved_found_it=True).conclusion()
    assert "its state went with it" in _stateful(moved_found_it=True).conclusion()


def test_the_runtime_claim_follows_the_outputs_and_digests() -> None:
    claim = "graduate.runtime_replaceable"
    assert verdicts(result())[claim] == Verdict.HOLDS
    assert verdicts(result(), portable({"docker": "v1", "containerd (ctr)": "v1", "podman": "v2"}))[claim] == \
        Verdict.FAILS
    assert verdicts(result(), portable(podman_digest="sha256:bb"))[claim] == Verdict.FAILS
    only_ctr = portable({"docker": "v1", "containerd (ctr)": "v1"}, {"podman": "not installed"})
    assert verdicts(result(), only_ctr)[claim] == Verdict.CAVEAT
    assert verdicts(result(), portable({"docker": "v1"}, {"podman": "x", "containerd (ctr)": "y"}))[claim] == \
        Verdict.INCONCLUSIVE
    before_the_section = graduate.PortabilityResult(pd.DataFrame(columns=list(graduate.LAB.tables["portability"])))
    assert claim not in verdicts(result(), before_the_section)
    assert only_ctr.table.loc["containerd (ctr)", "ratio_to_floor"] == 1.0  # the same times as Docker's here


def test_claims_follow_the_data() -> None:
    good = verdicts(result())
    assert good["graduate.more_than_one_box"] == Verdict.CAVEAT  # nodes share one machine
    assert good["graduate.orchestrator_heals"] == Verdict.CAVEAT  # nodes share one machine
    # A killed task not replaced within the wait is recorded, not raised: the claim can fail on it.
    assert verdicts(result(task_replaced=False))["graduate.orchestrator_heals"] == Verdict.FAILS
    assert good["graduate.rolling_update_without_loss"] == Verdict.CAVEAT
    assert good["graduate.broken_release_rolled_back"] == Verdict.HOLDS
    assert verdicts(result(start_first_failed=1))["graduate.rolling_update_without_loss"] == Verdict.FAILS
    # Compose's up -d of one container losing nothing under the same load: the orchestrator added nothing there
    assert verdicts(result(compose_failed=0))["graduate.rolling_update_without_loss"] == Verdict.FAILS
    assert verdicts(result(plain_replaced=True))["graduate.orchestrator_heals"] == Verdict.FAILS
    assert verdicts(result(rollback_state="completed"))["graduate.broken_release_rolled_back"] == Verdict.FAILS
    assert verdicts(result(images_match=False))["graduate.broken_release_rolled_back"] == Verdict.FAILS
    assert good["graduate.compose_file_is_not_a_stack"] == Verdict.CAVEAT  # one CLI version's reading
    assert verdicts(result(refused_as_written=False))["graduate.compose_file_is_not_a_stack"] == Verdict.FAILS
    assert verdicts(result(publish_mode="host"))["graduate.compose_file_is_not_a_stack"] == Verdict.FAILS
    # A file that asked for every address loses nothing on ingress: the claim's "not 127.0.0.1" would be untrue.
    assert verdicts(result(asked_address=""))["graduate.compose_file_is_not_a_stack"] == Verdict.FAILS


def ledger_of(found: graduate.OrchestratorResult) -> dict[str, Any]:
    ledger = ClaimLedger(graduate.STEM)
    graduate.check_claims(ledger, found, portable())
    return {claim.id: claim for claim in ledger}


def test_only_refusals_of_the_chapters_own_text_are_counted_and_the_cli_is_named() -> None:
    claim = ledger_of(result())["graduate.compose_file_is_not_a_stack"]
    assert claim.value == 1.0 and "about the chapter's file" in claim.measured
    assert "20.10.24+dfsg1" in claim.caveat
    found = result()
    found.as_stack.loc[0, "refused_text"] = as_stack.LABKIT  # a refusal of what labkit added to the file
    assert ledger_of(found)["graduate.compose_file_is_not_a_stack"].value == 0.0


def test_a_start_first_stall_at_the_clients_limit_is_named_in_the_caveat() -> None:
    quick = ledger_of(result(start_first_gap_s=0.1))["graduate.rolling_update_without_loss"].caveat
    stalled = ledger_of(result(start_first_gap_s=2.004))["graduate.rolling_update_without_loss"].caveat
    assert "was 0.10 s" in quick and "zero failures is not zero delay" not in quick
    assert "was 2.00 s" in stalled and "zero failures is not zero delay" in stalled


def test_the_as_stack_conclusion_names_what_the_file_asked_from_the_data() -> None:
    text = result(asked_address="10.1.2.3").conclusion_as_stack()
    assert "not on `10.1.2.3` as the file asked" in text and "127.0.0.1" not in text
    assert "restarts on `any` where Compose reads the file's restart as `no`" in text


def test_each_change_to_the_chapters_file_changes_it_and_keeps_the_others() -> None:
    versions = as_stack.versions_of(assets.text(as_stack.CHAPTER_FILE))
    assert len(versions) == len(as_stack.CHANGES) == 4
    assert versions[0] == assets.text(as_stack.CHAPTER_FILE)  # the first try is the file as written
    assert versions[1].startswith('version: "3.8"\n')
    assert "depends_on: [db, cache]" in versions[2] and "condition:" not in versions[2]
    assert "pull_policy" not in versions[3] and "depends_on: [db, cache]" in versions[3]
    with pytest.raises(ValueError, match="changed nothing"):
        as_stack.versions_of("services: {}\n")


def test_swarmkits_window_for_seeing_a_dead_node_down() -> None:
    # manager/dispatcher: down 3 periods after the last heartbeat, each period drawn within 0.5 s of the setting
    # either way (periodChooser); the last heartbeat came less than one period before the kill; 0.5 s for a
    # heartbeat's round trip. A quick run saw a 1 s heartbeat's node down 1.74 s after its kill: periods of 0.87 s.
    assert swarm.down_window_s(5.0) == (9.0, 17.0)
    assert swarm.down_window_s(1.0) == (1.0, 5.0)
    claim = "graduate.node_down_after_missed_heartbeats"
    assert verdicts(result(node_down_s=3.0))[claim] == Verdict.HOLDS
    assert verdicts(result(node_down_s=5.4))[claim] == Verdict.HOLDS  # 5.0 plus the poll's 0.5 s
    assert verdicts(result(node_down_s=1.74))[claim] == Verdict.HOLDS  # two periods of 0.87 s
    assert verdicts(result(node_down_s=0.9))[claim] == Verdict.FAILS  # sooner than two of the shortest periods
    # What the recording before this check held: the 1 s heartbeat's kill seen on the old 5 s period's clock.
    assert verdicts(result(node_down_s=13.0))[claim] == Verdict.FAILS


def test_the_update_table_sums_each_case() -> None:
    table = result(start_first_failed=2).table
    assert table.loc["update, start-first", "failed"] == 2 and table.loc["update, stop-first", "failed"] == 3
    assert table.loc[single_box.CASE, "failed"] == 4
    assert list(graduate.OrchestratorResult.recount(result())["failed"]) == [1]  # LOG: one error


def test_an_update_under_load_counts_the_clients_own_errors() -> None:
    load = loadclient.Load([loadclient.Request(0, 0.1, 200, 3, "", 0.0),
                            loadclient.Request(1, 0.0, 0, 0, "ConnectionRefusedError", 0.2),
                            loadclient.Request(2, 0.1, 200, 3, "", 1.3)], 0, 1.5)
    done = under_load.Update("completed", 0.6, "app:v2", True)
    row, requests = under_load.rollout_rows(single_box.CASE, single_box.ORDER, 1, "app:v1", "app:v2", done, True, load)
    assert (row["requests"], row["failed"], row["state"], row["final_image"]) == (3, 1, "completed", "app:v2")
    assert row["longest_gap_s"] == pytest.approx(1.3)  # answers ended at 0.1 and 1.4 s
    assert [(r["case"], r["round"], r["error"]) for r in requests][1] == (single_box.CASE, 1, "ConnectionRefusedError")


def test_the_single_box_runs_the_stacks_image_limits_and_init(tmp_path: Path) -> None:
    (tmp_path / single_box.COMPOSE_FILE).write_text(assets.text(f"when_to_graduate/{single_box.COMPOSE_FILE}"))
    project = compose.Project("labkit-test-box", tmp_path, (single_box.COMPOSE_FILE,), single_box.variables("app:v1"))
    web = project.config()["services"]["web"]  # Compose's own reading of the file, no engine asked
    assert (web["image"], web["init"], web["restart"]) == ("app:v1", True, "unless-stopped")
    assert web["pull_policy"] == "never"  # no registry is asked for the app
    assert web["deploy"]["resources"]["limits"] == {"cpus": 0.5, "memory": str(32 * 2**20)}  # the swarm's 0.5 and 32M
    assert web["dns"] == ["127.0.0.1"]  # a name that is gone is not asked of the host's resolver


# ---------------------------------------------------------------- live: made, removed, interrupted


def _no_trace(run_id: str) -> None:
    assert not [n for n in netns.names() if n.startswith(f"{netns.NAME_PREFIX}{run_id}-")]
    assert not netns.lan_bridges(run_id)
    assert not firewall.labkit_rules(run_id)
    assert not list(daemons.state_parent().glob(f"{run_id}-*"))
    assert not Path(daemons.RUNTIME_PARENT).exists()  # the nodes' runtime folders (tests make one cluster at a time)
    layout = cgroups.CgroupLayout.from_system()
    assert not [h for h in layout.hierarchies() if (h.path / "labkit" / run_id).exists()]


@pytest.mark.docker
@pytest.mark.root
def test_live_cluster_forms_and_leaves_nothing_behind(docker_client: docker.DockerClient) -> None:
    run_id = f"t13-{os.getpid()}"
    host_swarm = docker_client.info()["Swarm"]["LocalNodeState"]
    with swarm.cluster(run_id, 2, heartbeat_s=1.0) as cluster:
        assert docker_client.info()["Swarm"]["LocalNodeState"] == host_swarm  # the host's engine joins nothing
        listed = cluster.docker(["node", "ls", "--format", "{{.ID}} {{.Status}}"]).stdout.split("\n")
        assert sorted(line.split()[0] for line in listed if line) == sorted(n.node_id for n in cluster.nodes)
        assert all(line.endswith("Ready") for line in listed if line)
        assert cluster.nodes[1].docker(["info", "--format", "{{.Swarm.ControlAvailable}}"]).stdout.strip() == "false"
        for node in cluster.nodes:  # plain HTTP to a registry on the nodes' own LAN, as to 127.0.0.1, and no other
            trusted = node.docker(["info", "--format", "{{json .RegistryConfig.InsecureRegistryCIDRs}}"]).stdout
            assert sorted(json.loads(trusted)) == sorted([cluster.lan.subnet, "127.0.0.0/8"])
        # A registry in the manager's namespace, on the LAN: the manager pushes, a worker pulls the same image.
        base = images.require_base(docker_client, "busybox").tag
        with registry.running(inside=cluster.manager_namespace) as lan_registry:
            assert ipaddress.ip_address(lan_registry.host) in ipaddress.ip_network(cluster.lan.subnet)
            named = cluster.push_images(lan_registry, [base])[base]
            cluster.nodes[1].docker(["pull", "--quiet", named])
            pulled = cluster.nodes[1].docker(["image", "inspect", "--format", "{{.Id}}", named]).stdout.strip()
            assert pulled == docker_client.images.get(base).id
        assert cluster.heartbeat_period_s() == 1.0
        # A new heartbeat is in force once each node has heartbeated under it: one old period, its jitter and
        # the round trip after the update.
        change = cluster.set_heartbeat(2.0)
        assert cluster.heartbeat_period_s() == 2.0
        assert change.in_force_s - change.asked_s >= 2.0
        assert change.wait() >= 2.0 and time.perf_counter() >= change.in_force_s
        assert cluster.set_heartbeat(2.0).wait() == 0.0
    assert docker_client.info()["Swarm"]["LocalNodeState"] == host_swarm
    _no_trace(run_id)


CHILD = """
import signal, sys, time
from labkit.errors import Terminated
from labkit.instruments import swarm

def terminated(signum, frame):
    raise Terminated(f"signal {signum}")  # as the labkit command does

signal.signal(signal.SIGTERM, terminated)
with swarm.cluster(sys.argv[1], 2) as cluster:
    print("up", flush=True)
    time.sleep(600)  # held open until the test interrupts it
"""


@pytest.mark.root
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_live_interrupted_cluster_leaves_nothing_behind(signum: int) -> None:
    run_id = f"t13i-{os.getpid()}-{signum}"
    child = subprocess.Popen([sys.executable, "-c", CHILD, run_id], stdout=subprocess.PIPE, text=True,
                             preexec_fn=default_sigint)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "up"
        child.send_signal(signum)
        child.wait(timeout=120)
    finally:
        killed_if_running(child)
    if signum == signal.SIGKILL:  # nothing ran in the child: its journal records are what removes the cluster
        assert [c for c in undo.pending() if c.pid == child.pid]
        undo.undo_orphans()
    assert not [c for c in undo.pending() if c.pid == child.pid]
    _no_trace(run_id)


@pytest.mark.docker
@pytest.mark.root
def test_live_a_moved_replica_finds_its_volume_empty_and_nothing_stays(live: LabSession) -> None:
    with live.scope() as scope, swarm.cluster(live.run_id, 2) as cluster, \
            registry.running(inside=cluster.manager_namespace) as lan_registry:
        built = orchestrator.build_app(scope, images.require_base(live.engine, APP_BASE).tag, "state", True).tag
        found = graduate.StatefulResult(stateful.move_state(cluster, cluster.push_images(lan_registry, [built])[built]))
        assert cluster.docker(["service", "ls", "--quiet"]).stdout.split() == []  # the cluster runs what it ran
    assert found.marker(WRITTEN) and not found.marker(MOVED) and found.marker(LEFT_BEHIND)
    assert found.node(MOVED) != found.node(WRITTEN)
    _no_trace(live.run_id)


def _labkit_namespaces() -> list[str]:
    listed = shell.run(["ctr", "--address", str(runtimes.containerd_socket()), "namespaces", "list", "--quiet"], 30)
    return [n for n in listed.stdout.split() if n.startswith(runtimes.NAMESPACE_PREFIX)]


@pytest.mark.docker
@pytest.mark.root
def test_live_the_image_runs_unchanged_under_containerd_and_nothing_stays(live: LabSession) -> None:
    if runtimes.CONTAINERD in runtimes.unavailable():
        missing(f"containerd: {runtimes.unavailable()[runtimes.CONTAINERD]}")
    found = graduate.run_portability(live, 2)
    table = found.table
    assert set(table.loc[runtimes.CONTAINERD, "outputs"].split(" / ")) == {"v1"}  # what the image serves
    assert table.loc[runtimes.CONTAINERD, "config_digest"] == table.loc[runtimes.DOCKER, "config_digest"]
    assert (found.ran.groupby("runtime").size() == 2).all()
    assert _labkit_namespaces() == []
    if shutil.which("podman") is not None:  # installed: it runs the image too (under PODMAN_LIMITS)
        assert runtimes.PODMAN not in found.missing, found.missing[runtimes.PODMAN]
        assert set(table.loc[runtimes.PODMAN, "outputs"].split(" / ")) == {"v1"}
        assert table.loc[runtimes.PODMAN, "config_digest"] == table.loc[runtimes.DOCKER, "config_digest"]
        assert shell.run(["podman", "images", "--quiet", "--filter", f"label=labkit.run={live.run_id}"],
                         30).stdout.split() == []


@pytest.mark.root
def test_sweep_removes_a_namespace_a_killed_run_left() -> None:
    if runtimes.CONTAINERD in runtimes.unavailable():
        missing(f"containerd: {runtimes.unavailable()[runtimes.CONTAINERD]}")
    left = f"{runtimes.NAMESPACE_PREFIX}t13s-{os.getpid()}-abc"
    shell.run(["ctr", "--address", str(runtimes.containerd_socket()), "namespaces", "create", left], 30)
    assert left in _labkit_namespaces()
    assert f"containerd namespace {left}" in runtimes.sweep(f"t13s-{os.getpid()}")
    assert left not in _labkit_namespaces()


@pytest.mark.root
def test_sweep_removes_a_node_folder_left_with_its_daemon_and_mount() -> None:
    """What an interrupted start can leave: a state folder with a daemon still running that names it and a
    self bind-mount below it. The run's sweep ends the process, unmounts and removes the folder."""
    run_id = f"t13w-{os.getpid()}"
    folder = daemons.state_parent() / f"{run_id}-abcdef12"
    data = folder / "node1" / "data"
    data.mkdir(parents=True)
    shell.run(["mount", "--bind", str(data), str(data)], 30)
    daemon = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", str(data)])
    try:
        # Popen returns once the exec began; the new program's arguments show in /proc a moment later.
        orchestrator.wait_until(lambda: daemon.pid in procfs.naming([str(folder)]), "the daemon's arguments", 10)
        assert runner.sweep(run_id)[1] == [f"extra engines {folder}"]
        assert daemon.wait(timeout=30) == -signal.SIGTERM
        assert not folder.exists()
        assert not [m for m in procfs.read_mountinfo() if m.mount_point.startswith(str(folder))]
        assert daemons.sweep(run_id) == []  # idempotent
    finally:
        killed_if_running(daemon)
        shell.run(["umount", "-l", str(data)], 30, check=False)
        shutil.rmtree(folder, ignore_errors=True)


def _clusters() -> list[Path]:
    """Every swarm's state and runtime folder on this host, of any run."""
    return [*daemons.state_parent().glob("*"), *Path(daemons.RUNTIME_PARENT).glob("*")]


@pytest.mark.docker
@pytest.mark.root
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_of_the_notebook_leaves_no_cluster(signum: int, docker_client: docker.DockerClient,
                                                             tmp_path: Path) -> None:
    """`labkit run --quick 13` interrupted once its cluster's daemons exist: no daemon, namespace, bridge, state
    folder, container or image of it is left."""
    assert _clusters() == [], "clean before the test"
    status, output = interrupted_run("13", tmp_path, signum, lambda: bool(_clusters()), "its cluster exists")
    assert status != 0, output
    assert _clusters() == [], output
    assert not [n for n in netns.names() if n.startswith(netns.NAME_PREFIX)], output
    assert lab_objects(docker_client, graduate.STEM) == {"containers": [], "images": []}, output


# ---------------------------------------------------------------- what the notebook's quick run recorded


@pytest.fixture(scope="module")
def executed(quick_series: Path) -> Path:
    return quick_series / graduate.STEM


@pytest.mark.docker
def test_the_quick_run_recorded_the_known_answers(executed: Path) -> None:
    placement = pd.read_csv(executed / "placement.csv", keep_default_na=False)
    # Every task runs the app's tag from the LAN's registry, pinned by the manager to its digest.
    assert placement["image"].str.fullmatch(r"198\.1[89]\.\d+\.\d+:5000/labkit-13-app:v1-\w+@sha256:[0-9a-f]{64}").all()
    # The chapter's file: refused as written, taken after the changes, build and restart ignored, port on ingress.
    tries = pd.read_csv(executed / "as_stack.csv", keep_default_na=False)
    assert tries["exit_code"].iloc[0] != 0 and tries["exit_code"].iloc[-1] == 0
    assert "Ignoring unsupported options: build, restart" in tries["message"].iloc[-1]
    assert [p["PublishMode"] for p in json.loads(tries["published"].iloc[-1])] == ["ingress"]
    # What the chapter's file asks, as Compose reads it: the app on 127.0.0.1:8080 only, and no restart.
    asked = json.loads(tries["asked_ports"].iloc[-1])
    assert [(p["host_ip"], p["published"]) for p in asked] == [("127.0.0.1", "8080")]
    assert set(tries["asked_restart"]) == {"no"}
    # Format 3's refusals: the chapter's missing version and depends_on conditions, then labkit's pull_policy.
    assert list(tries["refused_text"]) == [as_stack.CHAPTER, as_stack.CHAPTER, as_stack.LABKIT, ""]
    healing = pd.read_csv(executed / "healing.csv", keep_default_na=False)
    by_event = {event.split(" (")[0]: rows for event, rows in healing.groupby("event")}
    assert by_event["task killed"]["replaced"].all()  # a killed task is replaced
    assert by_event["task unhealthy"]["replaced"].all()
    assert by_event["node killed"]["replaced"].all()  # the killed node ran tasks, and they run elsewhere
    for node in by_event["node killed"].itertuples():  # swarmkit: down 2 to 3 periods (± 0.5 s) after the kill
        heartbeat_s, detected_s = float(node.heartbeat_s), float(node.detected_s)  # read as text: the column has ""
        assert 2 * (heartbeat_s - 0.5) <= detected_s <= 3 * (heartbeat_s + 0.5) + 1.0, node
    assert not by_event["container unhealthy"]["replaced"].any()  # Compose on one engine leaves it running
    assert "the same container: True" in by_event["container unhealthy"]["detail"].iloc[0]
    rollout = pd.read_csv(executed / "rollout.csv", keep_default_na=False)
    requests = pd.read_csv(executed / "requests.csv", keep_default_na=False)
    # The failed requests are the client's own error rows, counted again here without the lab's code.
    errors = requests[requests["error"] != ""].groupby(["case", "round"]).size()
    for row in rollout.itertuples():
        assert row.failed == errors.get((row.case, row.round), 0)
        assert row.requests == len(requests[(requests["case"] == row.case) & (requests["round"] == row.round)])
    broken = rollout[rollout["case"].str.startswith("broken")]
    # The rollback restores the old image: the running tasks' image ids are the previous release's.
    assert (broken["state"] == "rollback_completed").all() and broken["images_match"].all()
    assert (broken["final_image"] == broken["from_image"]).all()
    # The single box: up -d recreated its one container, running the new image; the client saw the gap.
    box = rollout[rollout["case"] == single_box.CASE]
    assert len(box) == 1 and (box["state"] == "completed").all() and box["images_match"].all()
    assert (box["final_image"] == box["to_image"]).all() and (box["failed"] >= 1).all()
