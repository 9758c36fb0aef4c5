"""The claims ledger: stable ids, a source for every claim (a chapter claim under one of the chapter's headings),
a criterion beside every verdict, one merged table for the book."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from labkit.core import claims
from labkit.core.claims import ClaimLedger, ClaimText, Source, Verdict
from labkit.errors import BadParameter

ROOT = Path(__file__).resolve().parent.parent


TEXT_FIELDS = {"source", "section", "claim", "unit", "criterion", "tables", "fixed_by"}


def _check(ledger: ClaimLedger, claim_id: str, verdict: Verdict = Verdict.HOLDS, **overrides: object) -> None:
    """Word `claim_id` in `ledger` (a chapter claim under Container Pitfalls unless `overrides` say otherwise) and
    check it."""
    words: dict[str, object] = {"source": Source.CHAPTER, "section": "Container Pitfalls", "claim": "c", "unit": "ms",
                                "criterion": "below 100 ms"}
    words.update({k: v for k, v in overrides.items() if k in TEXT_FIELDS})
    ledger.texts[claim_id] = ClaimText(**words)  # type: ignore[arg-type]
    fields: dict[str, object] = {"value": 1.0, "measured": "1 ms", "verdict": verdict,
                                 **{k: v for k, v in overrides.items() if k not in TEXT_FIELDS}}
    ledger.check(claim_id, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(("claim_id", "overrides", "message"), [
    ("Startup", {}, "stable-id"),
    ("startup", {}, "stable-id"),
    ("startup.ms", {"criterion": " "}, "no criterion"),
    ("startup.ms", {"verdict": Verdict.CAVEAT}, "needs its caveat"),
    ("startup.ms", {"verdict": Verdict.INCONCLUSIVE}, "needs its caveat"),
    ("startup.ms", {"source": "blog"}, "source 'blog' is neither 'chapter' nor 'finding'"),
    # A chapter claim names the chapter's heading as the chapter spells it, not a notebook's words for it.
    ("startup.ms", {"section": "Pitfalls: resource limits"}, "not one of the chapter's headings"),
    ("startup.ms", {"section": "container pitfalls"}, "not one of the chapter's headings"),
])
def test_malformed_claims_are_refused(claim_id: str, overrides: dict[str, object], message: str) -> None:
    with pytest.raises(BadParameter, match=message):
        _check(ClaimLedger("99-x"), claim_id, **overrides)  # type: ignore[arg-type]


def test_a_finding_names_the_notebook_s_own_section() -> None:
    ledger = ClaimLedger("99-x")
    _check(ledger, "start.size", source=Source.FINDING, section="Start time")
    assert ledger.frame()[["source", "section"]].values.tolist() == [["finding", "Start time"]]


@pytest.mark.parametrize(("shown", "value", "verdict"), [(True, 1.0, "holds"), (False, 0.0, "does not hold")])
def test_a_demonstration_is_worth_1_when_shown_and_says_what_fixes_its_outcome(shown: bool, value: float,
                                                                            verdict: str) -> None:
    ledger = ClaimLedger("99-x", {"tags.mutable": ClaimText(Source.CHAPTER, "Container Pitfalls", "c", "1 = moved",
                                                           "the tag moves", fixed_by="the registry")})
    ledger.demonstrate("tags.mutable", shown=shown, measured="m")
    row = ledger.frame().iloc[0]
    assert (row["value"], row["verdict"]) == (value, verdict)
    assert row["criterion"] == "a demonstration (the outcome is fixed by the registry): the tag moves"


def test_a_claim_without_words_is_refused_naming_its_file() -> None:
    with pytest.raises(BadParameter, match=r"no words in .*99-x\.toml"):
        ClaimLedger("99-x").check("startup.ms", value=1.0, measured="1 ms", verdict=Verdict.HOLDS)


def test_the_lab_fills_the_fields_of_its_words_with_their_format() -> None:
    ledger = ClaimLedger("99-x", {"startup.ms": ClaimText(Source.FINDING, "Start time", "starts in {bound_ms:g} ms",
                                                          "ms (median of {n})", "the median under {bound_ms:.1f} ms")})
    ledger.check("startup.ms", value=1.0, measured="1 ms", verdict=Verdict.HOLDS, bound_ms=100, n=5)
    row = ledger.frame().iloc[0]
    assert (row["claim"], row["unit"], row["criterion"]) == ("starts in 100 ms", "ms (median of 5)",
                                                             "the median under 100.0 ms")


@pytest.mark.parametrize("fill", [{}, {"bound_ms": 100, "typo": 1}])
def test_a_field_left_empty_or_a_value_no_words_use_is_refused(fill: dict[str, object]) -> None:
    ledger = ClaimLedger("99-x", {"startup.ms": ClaimText(Source.FINDING, "Start time", "c", "ms",
                                                          "under {bound_ms} ms")})
    with pytest.raises(BadParameter, match=r"need \['bound_ms'\]"):
        ledger.check("startup.ms", value=1.0, measured="1 ms", verdict=Verdict.HOLDS, **fill)  # type: ignore[arg-type]


def test_a_claims_file_with_an_unknown_or_missing_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "99-x.toml"
    path.write_text('["startup.ms"]\nsource = "finding"\nsection = "s"\nclaim = "c"\nunit = "ms"\ncriteria = "x"\n')
    with pytest.raises(BadParameter, match=r"unknown keys \['criteria'\] or lacks \['criterion'\]"):
        claims.read_texts(path)
    assert claims.read_texts(tmp_path / "none.toml") == {}


def test_a_repeated_id_is_refused() -> None:
    ledger = ClaimLedger("99-x")
    _check(ledger, "startup.ms")
    with pytest.raises(BadParameter, match="checked twice"):
        _check(ledger, "startup.ms")


def test_merge_joins_notebooks_and_refuses_a_repeated_id(tmp_path: Path) -> None:
    for stem, claim_id in (("01-a", "one.x"), ("02-b", "two.x")):
        ledger = ClaimLedger(stem)
        _check(ledger, claim_id, tables=("t",))
        (tmp_path / stem).mkdir()
        ledger.frame().to_csv(tmp_path / stem / "claims.csv", index=False)
    merged = claims.merge(tmp_path)
    assert list(merged["id"]) == ["one.x", "two.x"] and list(merged["notebook"]) == ["01-a", "02-b"]
    ledger = ClaimLedger("03-c")
    _check(ledger, "one.x")
    (tmp_path / "03-c").mkdir()
    ledger.frame().to_csv(tmp_path / "03-c" / "claims.csv", index=False)
    with pytest.raises(BadParameter, match=r"repeated: \['one.x'\]"):
        claims.merge(tmp_path)


def test_a_verdict_without_criterion_is_refused_in_a_recorded_table(tmp_path: Path) -> None:
    ledger = ClaimLedger("01-a")
    _check(ledger, "one.x")
    frame = ledger.frame().assign(criterion="")
    (tmp_path / "01-a").mkdir()
    frame.to_csv(tmp_path / "01-a" / "claims.csv", index=False)
    with pytest.raises(BadParameter, match="without a shown criterion"):
        claims.merge(tmp_path)


@pytest.mark.parametrize(("change", "message"), [
    ({"source": ""}, r"one\.x \(source '' is neither"),
    ({"section": "Images are layers"}, r"one\.x \(section 'Images are layers' is not one of the chapter's headings"),
])
def test_a_recorded_claim_without_a_valid_source_is_refused(tmp_path: Path, change: dict[str, str],
                                                           message: str) -> None:
    ledger = ClaimLedger("01-a")
    _check(ledger, "one.x")
    (tmp_path / "01-a").mkdir()
    ledger.frame().assign(**change).to_csv(tmp_path / "01-a" / "claims.csv", index=False)
    with pytest.raises(BadParameter, match=message):
        claims.merge(tmp_path)


def test_the_committed_ledger_is_the_merge_of_the_committed_notebooks() -> None:
    recorded = ROOT / "data" / "results"
    committed = pd.read_csv(recorded / "claims.csv", keep_default_na=False)
    pd.testing.assert_frame_equal(committed, claims.merge(recorded), check_dtype=False)
