"""The chapter's claims, checked against this execution's measurements."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum

import pandas as pd


class Verdict(StrEnum):
    HOLDS = "holds"
    CAVEAT = "holds with caveat"
    FAILS = "does not hold"


@dataclass(frozen=True)
class Claim:
    """One claim: what the chapter says, what we measured, and the verdict those numbers give."""

    claim: str
    measured: str
    verdict: Verdict
    caveat: str = ""


class ClaimLedger:
    """The claims one notebook checks, in the order it checks them."""

    def __init__(self) -> None:
        self._claims: list[Claim] = []

    def check(self, claim: str, measured: str, verdict: Verdict, caveat: str = "") -> Claim:
        """Record a claim; a caveat is required for HOLDS-with-caveat so the reader knows which."""
        if verdict is Verdict.CAVEAT and not caveat:
            raise ValueError(f"claim {claim!r}: a 'holds with caveat' verdict needs the caveat.")
        entry = Claim(claim, measured, verdict, caveat)
        self._claims.append(entry)
        return entry

    def __len__(self) -> int:
        return len(self._claims)

    def frame(self) -> pd.DataFrame:
        rows = [{**asdict(c), "verdict": c.verdict.value} for c in self._claims]
        return pd.DataFrame(rows, columns=["claim", "measured", "verdict", "caveat"])
