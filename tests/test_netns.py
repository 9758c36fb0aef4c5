"""The neighbour host (netns) and narrow firewall rules: the subnet choice on hand-made tables, and live: made,
reachable and removed; a SIGKILLed maker's namespace and rule undone by the next command; swept by run id."""

from __future__ import annotations

import ipaddress
import signal
import subprocess
import sys

import pytest

from labkit.instruments import firewall, netns, undo
from labkit.instruments.shell import run


def _nets(*texts: str) -> list[ipaddress.IPv4Network]:
    return [ipaddress.IPv4Network(t) for t in texts]


def test_the_first_unused_slash_30_is_chosen() -> None:
    assert str(netns.free_subnet([])) == "198.18.0.0/30"
    # .0/30 taken, .4/31 overlaps .4/30: the next free one is .8/30.
    assert str(netns.free_subnet(_nets("198.18.0.0/30", "198.18.0.4/31"))) == "198.18.0.8/30"
    # A host address inside the pool (a /32 route) rules out only its own /30.
    assert str(netns.free_subnet(_nets("198.18.0.1/32"))) == "198.18.0.4/30"
    # The whole first half of 198.18.0.0/15 in use: the second half's first /30.
    assert str(netns.free_subnet(_nets("198.18.0.0/16", "10.0.0.0/8"))) == "198.19.0.0/30"
    with pytest.raises(LookupError):
        netns.free_subnet(_nets("198.18.0.0/15"))


def test_a_rule_that_names_no_address_interface_or_port_is_refused() -> None:
    with pytest.raises(ValueError, match="names no source"), firewall.rule("rtest", "INPUT", ["-j", "DROP"]):
        pass


@pytest.mark.root
def test_a_neighbour_is_made_reachable_and_removed() -> None:
    with netns.neighbour("rtest-live") as neighbour:
        assert netns.exists(neighbour.name) and netns.link_exists(neighbour.host_link)
        assert ipaddress.ip_address(neighbour.address) in ipaddress.ip_network(neighbour.subnet)
        # The neighbour's only interfaces are lo and its end of the pair; it reaches the host through the link.
        links = neighbour.run(["ip", "-o", "link", "show"], 30).stdout
        assert sorted(line.split(":")[1].strip().split("@")[0] for line in links.splitlines()) == \
            sorted(["lo", neighbour.link])
        reach = neighbour.run([sys.executable, "-c", "import socket; socket.create_connection("
                               f"('{neighbour.host_address}', 9), timeout=2)"], 30, check=False)
        assert "ConnectionRefused" in reach.stderr  # the host answered (with a reset): the link works
        assert any(c.detail.get("namespace") == neighbour.name for c in undo.pending())
    assert not netns.exists(neighbour.name) and not netns.link_exists(neighbour.host_link)
    assert not any(c.detail.get("namespace") == neighbour.name for c in undo.pending())


@pytest.mark.root
def test_a_rule_is_inserted_for_the_block_only() -> None:
    spec = ["-s", "198.18.255.254/32", "-p", "tcp", "--dport", "9", "-j", "DROP"]
    with firewall.rule("rtest-rule", "INPUT", spec) as inserted:
        assert [r["spec"] for r in firewall.labkit_rules("rtest-rule")] == [
            ["-s", "198.18.255.254/32", "-p", "tcp", "-m", "tcp", "--dport", "9", "-m", "comment", "--comment",
             inserted[-1], "-j", "DROP"]]
    assert firewall.labkit_rules("rtest-rule") == []


MAKER = """
import sys, time
from labkit.instruments import firewall, netns
with netns.neighbour(sys.argv[1]) as neighbour:
    with firewall.rule(sys.argv[1], "INPUT", ["-s", neighbour.address + "/32", "-p", "tcp", "--dport", "9",
                                              "-j", "DROP"]):
        print(neighbour.name, flush=True)
        time.sleep(120)
"""


@pytest.mark.root
def test_a_sigkilled_makers_namespace_and_rule_are_undone_by_the_next_command() -> None:
    run_id = "rtest-killed"
    child = subprocess.Popen([sys.executable, "-c", MAKER, run_id], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    name = child.stdout.readline().strip()
    try:
        assert netns.exists(name) and firewall.labkit_rules(run_id)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    assert netns.exists(name) and firewall.labkit_rules(run_id)  # nobody was left to undo them
    done = undo.undo_orphans()
    assert any(name in line for line in done) and len([d for d in done if "rule" in d]) >= 1
    assert not netns.exists(name) and firewall.labkit_rules(run_id) == []


@pytest.mark.root
def test_sweep_removes_a_runs_namespaces_and_rules_and_nothing_else() -> None:
    with netns.neighbour("rtest-sweep-a") as kept:
        made = netns.names()
        run(["ip", "netns", "add", f"{netns.NAME_PREFIX}rtest-sweep-b-0000beef"], 30)
        with firewall.rule("rtest-sweep-b", "INPUT", ["-s", "198.18.255.253/32", "-p", "tcp", "--dport", "9",
                                                      "-j", "DROP"]):
            assert netns.sweep("rtest-sweep-b") == [f"{netns.NAME_PREFIX}rtest-sweep-b-0000beef"]
            assert len(firewall.sweep("rtest-sweep-b")) == 1 and firewall.labkit_rules("rtest-sweep-b") == []
        assert kept.name in made and netns.exists(kept.name)
