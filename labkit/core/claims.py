"""Claims checked against measurements: one ledger per notebook, merged into one for the book.

A claim is either the chapter's (`source` ``chapter``: one of the chapter's section headings, the claim in our own
words) or a finding of ours beyond the chapter (`source` ``finding``). Each has a stable id
(``startup.milliseconds``), the notebook that checks it, the measured value with its unit, the criterion the
verdict follows from (in words and numbers, shown to the reader beside the verdict) and the tables it rests on.
A verdict is computed by the lab from its data; where the outcome is fixed by how the thing works (a
demonstration) or by how a stand-in was made, the criterion or the caveat says so.

A claim's fixed words (source, section, the claim, unit, criterion, tables, and for a demonstration what fixes its
outcome) are data: one file per notebook, ``labkit/assets/claims/<stem>.toml``, read by :class:`ClaimLedger`, so
that the ledger's wording can be read against the chapter in one place. ``{name}`` in them is filled by the lab
with a knob or a measured value when it checks the claim; the lab supplies what only the data can say: the value,
what was measured, the verdict and its caveat.
"""

from __future__ import annotations

import re
import string
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

import pandas as pd

from labkit import assets
from labkit.errors import BadParameter
from labkit.paths import atomic_write

CLAIMS_TABLE = "claims"
COLUMNS = ["id", "source", "section", "notebook", "claim", "value", "unit", "measured", "criterion", "verdict",
           "caveat", "tables"]
CLAIM_COLUMNS = tuple(COLUMNS)  # as a lab declares its claims table (LAB.tables)
_ID = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")

# The section headings of the chapter (../shared/chapter/containers-and-docker.txt), spelled exactly as it spells
# them; tests/test_ledger.py holds this list to the chapter's text.
CHAPTER_SECTIONS = (
    "What a Container Actually Is",
    "The Image — Layered, Cacheable, Reproducible",
    "Multi-Stage Builds — Small Images for Compiled Apps",
    "Image Tags — Don't Use latest in Production",
    "Networking — How Containers Talk",
    "Volumes and Persistence",
    "docker compose — The Local Stack",
    "Registries — Where Images Live Between Build and Run",
    "Running Containers in Production — The Single-Box Path",
    "When to Graduate",
    "Container Pitfalls",
)


class Source(StrEnum):
    CHAPTER = "chapter"  # the chapter makes the claim; `section` is its heading
    FINDING = "finding"  # measured beyond the chapter; `section` is the notebook's


# How the notebooks and the book title each kind of claim.
SOURCE_TITLES = {Source.CHAPTER: "The chapter's claims", Source.FINDING: "What we found beyond the chapter"}


class Verdict(StrEnum):
    HOLDS = "holds"
    CAVEAT = "holds with caveat"
    FAILS = "does not hold"
    INCONCLUSIVE = "inconclusive"


def demonstration(fixed_by: str, criterion: str) -> str:
    """`criterion` labelled as a demonstration: its outcome is fixed by `fixed_by` (how the thing works), so the
    check shows the behaviour rather than testing a claim that could plausibly fail."""
    return f"a demonstration (the outcome is fixed by {fixed_by}): {criterion}"


def verdict(met: bool, caveat: bool = False) -> Verdict:
    """The verdict of a criterion: does not hold when it is not `met`; holds with caveat when it is met but a
    `caveat` applies; holds otherwise."""
    if not met:
        return Verdict.FAILS
    return Verdict.CAVEAT if caveat else Verdict.HOLDS


def at_least_verdict(reached: bool, emulated: bool) -> Verdict:
    """The verdict of a claim that something takes at least a bound (a VM boots in minutes), measured on a machine
    that may be emulated: holds when `reached`; inconclusive when reached only under emulation (which slows it,
    so hardware might not reach it); does not hold when not reached (emulation would only have made it slower)."""
    if not reached:
        return Verdict.FAILS
    return Verdict.INCONCLUSIVE if emulated else Verdict.HOLDS


@dataclass(frozen=True)
class Claim:
    """One claim: where it comes from, what it says, what we measured (`value` in `unit`), the criterion and the
    verdict.

    `source` is ``chapter`` (then `section` is one of :data:`CHAPTER_SECTIONS`) or ``finding`` (then `section` is
    the notebook's own section). `tables` names the recorded tables the value comes from (``;``-joined in CSV).
    """

    id: str
    source: Source
    section: str
    notebook: str
    claim: str
    value: float
    unit: str
    measured: str
    criterion: str
    verdict: Verdict
    caveat: str
    tables: tuple[str, ...]

    def row(self) -> dict[str, object]:
        return {**asdict(self), "source": self.source.value, "verdict": self.verdict.value,
                "tables": ";".join(self.tables)}


@dataclass(frozen=True)
class ClaimText:
    """The fixed words of one claim, as its notebook's claims file gives them. `claim`, `unit`, `criterion` and
    `fixed_by` may hold ``{name}`` fields (with a format spec: ``{ratio:.1f}``) that the lab fills when it checks
    the claim. A claim with `fixed_by` is a demonstration: its criterion says what fixes the outcome."""

    source: str
    section: str
    claim: str
    unit: str
    criterion: str
    tables: tuple[str, ...] = ()
    fixed_by: str = ""

    def filled(self, claim_id: str, fill: Mapping[str, Any]) -> dict[str, str]:
        """claim, unit, criterion and fixed_by with `fill` put in (a demonstration's criterion says what fixes its
        outcome); BadParameter for a field the text needs and `fill` lacks,
        or a value in `fill` that no text uses (a typo would otherwise go unseen)."""
        texts = {"claim": self.claim, "unit": self.unit, "criterion": self.criterion, "fixed_by": self.fixed_by}
        wanted = {name for text in texts.values() for _, name, _, _ in string.Formatter().parse(text) if name}
        if set(fill) != wanted:
            raise BadParameter(f"claim {claim_id!r}: its words need {sorted(wanted)}, the lab gave {sorted(fill)}.",
                               f"Make the fields of its table in {CLAIMS_FOLDER} and the lab's check agree.")
        done = {name: text.format(**fill) for name, text in texts.items()}
        if self.fixed_by:
            done["criterion"] = demonstration(done["fixed_by"], done["criterion"])
        return done


CLAIMS_FOLDER = assets.FOLDER / "claims"
_TEXT_FIELDS = {f.name for f in fields(ClaimText)}


def claims_file(notebook: str) -> Path:
    """The file that holds the fixed words of `notebook`'s claims."""
    return CLAIMS_FOLDER / f"{notebook}.toml"


def read_texts(path: Path) -> dict[str, ClaimText]:
    """Each claim's fixed words from a claims file (a table per claim id); {} when there is no such file.
    BadParameter for a table with unknown or missing keys."""
    if not path.exists():
        return {}
    texts = {}
    for claim_id, table in tomllib.loads(path.read_text()).items():
        unknown, missing = set(table) - _TEXT_FIELDS, {"source", "section", "claim", "unit", "criterion"} - set(table)
        if unknown or missing:
            raise BadParameter(f"{path}: claim {claim_id!r} has unknown keys {sorted(unknown)} or lacks "
                               f"{sorted(missing)}.", f"A claim's table holds {sorted(_TEXT_FIELDS)}.")
        texts[claim_id] = ClaimText(**{**table, "tables": tuple(table.get("tables", ()))})
    return texts


class ClaimLedger:
    """The claims one notebook checks, in the order it checks them, worded by `texts` (default: the notebook's
    claims file, :func:`claims_file`)."""

    def __init__(self, notebook: str, texts: Mapping[str, ClaimText] | None = None) -> None:
        self.notebook = notebook
        self.texts = read_texts(claims_file(notebook)) if texts is None else dict(texts)
        self._claims: list[Claim] = []

    def check(self, claim_id: str, *, value: float, measured: str, verdict: Verdict, caveat: str = "",
              **fill: Any) -> Claim:
        """Record a claim, worded by its text with `fill` put in. Refused: a malformed id, a claim without text, a
        repeated id, a source that is not chapter or finding, a chapter claim whose section is not one of the
        chapter's headings, an empty criterion, a 'holds with caveat' or 'inconclusive' verdict without the caveat
        that says which or why."""
        if not _ID.match(claim_id):
            raise BadParameter(f"claim id {claim_id!r} is not stable-id shaped.",
                               "Use dotted lowercase words, e.g. 'startup.milliseconds'.")
        text = self.texts.get(claim_id)
        if text is None:
            raise BadParameter(f"claim {claim_id!r} has no words in {claims_file(self.notebook)}.",
                               f"Add a table [\"{claim_id}\"] with its source, section, claim, unit and criterion.")
        problem = _attribution_problem(text.source, text.section)
        if problem:
            raise BadParameter(f"claim {claim_id!r}: {problem}.", _ATTRIBUTION_HINT)
        if any(c.id == claim_id for c in self._claims):
            raise BadParameter(f"claim id {claim_id!r} is checked twice in {self.notebook}.",
                               "Give each claim its own id.")
        words = text.filled(claim_id, fill)
        if not words["criterion"].strip():
            raise BadParameter(f"claim {claim_id!r} has no criterion.",
                               "Say in words and numbers what would make it hold or not.")
        if verdict in (Verdict.CAVEAT, Verdict.INCONCLUSIVE) and not caveat:
            raise BadParameter(f"claim {claim_id!r}: a {verdict.value!r} verdict needs its caveat.",
                               "Say which caveat, or why the data cannot decide.")
        entry = Claim(claim_id, Source(text.source), text.section, self.notebook, words["claim"], float(value),
                      words["unit"], measured, words["criterion"], verdict, caveat, text.tables)
        self._claims.append(entry)
        return entry

    def demonstrate(self, claim_id: str, *, shown: bool, measured: str, **fill: Any) -> Claim:
        """Record a demonstration (its text says what fixes the outcome): its value is 1 when the expected
        behaviour was `shown` and 0 otherwise (its unit says what 1 means); it holds when shown."""
        return self.check(claim_id, value=float(shown), measured=measured, verdict=verdict(shown), **fill)

    def __len__(self) -> int:
        return len(self._claims)

    def __iter__(self) -> Iterator[Claim]:
        return iter(self._claims)

    def verdict(self, claim_id: str) -> Verdict:
        return next(c.verdict for c in self._claims if c.id == claim_id)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([c.row() for c in self._claims], columns=COLUMNS)

    def summary_markdown(self) -> str:
        """The notebook's summary, written from its claims: a count per verdict, then each claim in one line, the
        chapter's claims first and our findings beyond the chapter after them."""
        counts = pd.Series([c.verdict.value for c in self._claims]).value_counts()
        lines = [f"Of {len(self._claims)} claims checked here, " + ", ".join(
            f"{n} {verdict}" for verdict, n in counts.items()) + ":"]
        for source, title in SOURCE_TITLES.items():
            chosen = [c for c in self._claims if c.source == source]
            if chosen:
                lines += ["", f"**{title}**", ""]
            for c in chosen:
                caveat = f" — {c.caveat}" if c.caveat else ""
                lines.append(f"- **{c.claim}**: {c.verdict.value} ({c.measured}){caveat}.")
        return "\n".join(lines)


_ATTRIBUTION_HINT = (f"A claim's source is {Source.CHAPTER.value!r} (its section one of the chapter's headings: "
                     f"{list(CHAPTER_SECTIONS)}) or {Source.FINDING.value!r} (measured beyond the chapter).")


def _attribution_problem(source: str, section: str) -> str:
    """Why `source` and `section` do not attribute a claim, or '' when they do."""
    if source not in {s.value for s in Source}:
        return f"source {source!r} is neither {Source.CHAPTER.value!r} nor {Source.FINDING.value!r}"
    if source == Source.CHAPTER and section not in CHAPTER_SECTIONS:
        return f"section {section!r} is not one of the chapter's headings"
    return ""


def validate(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    """`frame` if it is a well-formed ledger; BadParameter naming a repeated id, a row without a valid source (or
    a chapter row whose section is not a chapter heading) or a verdict without criterion."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise BadParameter(f"{where}: the claims table lacks columns {missing}.",
                           "Re-record it with the current labkit (`make record`).")
    misattributed = [f"{row.id} ({problem})" for row in frame.itertuples()
                     if (problem := _attribution_problem(str(row.source), str(row.section)))]
    if misattributed:
        raise BadParameter(f"{where}: claims without a valid source: {misattributed}.", _ATTRIBUTION_HINT)
    repeated = sorted(frame.loc[frame["id"].duplicated(), "id"])
    if repeated:
        raise BadParameter(f"{where}: claim ids repeated: {repeated}.", "Every claim needs its own id.")
    blank = frame.loc[frame["criterion"].fillna("").str.strip() == "", "id"].tolist()
    if blank:
        raise BadParameter(f"{where}: verdicts without a shown criterion: {blank}.",
                           "Every verdict needs the criterion it follows from.")
    unknown = sorted(set(frame["verdict"]) - {v.value for v in Verdict})
    if unknown:
        raise BadParameter(f"{where}: unknown verdicts {unknown}.", f"Use one of {[v.value for v in Verdict]}.")
    return frame


def read(path: Path) -> pd.DataFrame:
    """The ledger recorded at `path` (a notebook's claims.csv), validated, its columns in order."""
    return validate(pd.read_csv(path, keep_default_na=False), str(path))[COLUMNS]


def merge(results_root: Path) -> pd.DataFrame:
    """Every notebook's ledger under `results_root` (``<stem>/claims.csv``) as one validated table."""
    frames = [read(path) for path in sorted(results_root.glob("*/claims.csv"))]
    if not frames:
        raise BadParameter(f"no claims under {results_root}.", "Run the notebooks first (`labkit run`).")
    return validate(pd.concat(frames, ignore_index=True), str(results_root))


def write_merged(results_root: Path) -> tuple[Path, pd.DataFrame]:
    """Write the merged ledger to ``<results_root>/claims.csv``; return its path and the ledger."""
    target = results_root / "claims.csv"
    ledger = merge(results_root)
    atomic_write(target, ledger.to_csv(index=False))
    return target, ledger
