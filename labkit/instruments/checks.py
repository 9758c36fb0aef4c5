"""One finding about this host: what was checked, whether it is as needed, what was seen, and the fix.

Instruments return it where they inspect the host (e.g. :func:`labkit.instruments.arch.check_emulation`);
``labkit doctor`` prints one line per check.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    """One line of a report: `name` (what was checked), `ok`, `detail` (what was seen), `fix` (the command to run
    when `ok` is False) and `required` (an unmet optional check makes a run poorer, not impossible)."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True
