"""Narrow host firewall rules that are always taken out again.

A rule is inserted at the top of one chain (``INPUT``, ``DOCKER-USER`` …) with a comment naming labkit and the run
(``labkit <run> <id>``), journalled with :mod:`labkit.instruments.undo` before it is inserted, and deleted when its
``with`` block ends; a SIGKILLed maker's rule is deleted by the next labkit command, and :func:`sweep` (``labkit
clean``) deletes any rule whose comment names labkit. Nothing here flushes a chain, changes a policy or touches a
rule it did not insert: the engine's own rules and other programs' stay as they are.
"""

from __future__ import annotations

import shlex
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from labkit.instruments import undo
from labkit.instruments.shell import CommandError, run

COMMENT_PREFIX = "labkit "
TABLES = ("filter", "nat", "raw")
PROGRAMS = ("iptables", "ip6tables")
TIMEOUT_S = 30


def _command(program: str, table: str, action: str, chain: str, spec: Sequence[str]) -> list[str]:
    return [program, "-w", "5", "-t", table, action, chain, *spec]


def remove_rule(detail: dict[str, Any]) -> None:
    """Delete the rule `detail` describes (program, table, chain, spec) as often as it is there (idempotent)."""
    check = _command(detail["program"], detail["table"], "-C", detail["chain"], detail["spec"])
    for _ in range(16):  # a rule inserted once is there once; the bound only guards against a loop
        if run(check, TIMEOUT_S, check=False).exit_code != 0:
            return
        run(_command(detail["program"], detail["table"], "-D", detail["chain"], detail["spec"]), TIMEOUT_S)


@contextmanager
def rule(run_id: str, chain: str, spec: Sequence[str], *, table: str = "filter",
         program: str = "iptables") -> Iterator[list[str]]:
    """Insert `spec` (e.g. ``["-s", "198.18.0.2/32", "-p", "tcp", "--dport", "8080", "-j", "DROP"]``) at the top
    of `chain` for the block; yields the rule as inserted (with its comment). Refuses a rule without a source,
    destination, interface or port: a rule here must concern only what the run made."""
    narrowing = {"-s", "-d", "-i", "-o", "--dport", "--sport"}
    if not narrowing & set(spec):
        raise ValueError(f"rule {list(spec)} names no source, destination, interface or port: it would reach "
                         "traffic this run did not make")
    if table not in TABLES or program not in PROGRAMS:
        raise ValueError(f"table {table!r} / program {program!r}: use one of {TABLES} / {PROGRAMS}")
    full = [*spec, "-m", "comment", "--comment", f"{COMMENT_PREFIX}{run_id} {uuid.uuid4().hex[:8]}"]
    detail = {"program": program, "table": table, "chain": chain, "spec": full}
    with undo.recorded(f"{program} rule in {table}/{chain}: {shlex.join(full)}", remove_rule, detail):
        run(_command(program, table, "-I", chain, ["1", *full]), TIMEOUT_S)
        yield full


def labkit_rules(run_id: str | None = None) -> list[dict[str, Any]]:
    """Every rule on the host whose comment names labkit (and run `run_id` when given), as :func:`remove_rule`
    details."""
    wanted = COMMENT_PREFIX + (f"{run_id} " if run_id else "")
    found = []
    for program in PROGRAMS:
        for table in TABLES:
            try:
                listed = run([program, "-w", "5", "-t", table, "-S"], TIMEOUT_S).stdout
            except CommandError:  # no such program or table on this host: it holds no rule of ours
                continue
            for line in listed.splitlines():
                words = shlex.split(line)
                if words[:1] == ["-A"] and any(w.startswith(wanted) for w in words):
                    found.append({"program": program, "table": table, "chain": words[1], "spec": words[2:]})
    return found


def sweep(run_id: str | None = None) -> list[str]:
    """Delete the labkit rules of run `run_id` (every run's when None); return each as it was listed."""
    removed = []
    for detail in labkit_rules(run_id):
        remove_rule(detail)
        removed.append(f"{detail['program']} -t {detail['table']} -A {detail['chain']} {shlex.join(detail['spec'])}")
    return removed
