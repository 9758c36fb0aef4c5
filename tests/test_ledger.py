"""Every lab's claims against the chapter: a `chapter` claim names one of the chapter's section headings (read from
the chapter's text in ../shared/chapter/), in the recorded ledgers and in the claims recomputed from the recorded
tables as each notebook computes them (tests/test_replay.py's CHAPTERS); every claim shows its criterion."""

from __future__ import annotations

import ast
import importlib
import os
import re
import string
from functools import cache
from pathlib import Path

import pandas as pd
import pytest

from labkit.app import book, catalog
from labkit.core import claims
from labkit.core.session import open_session
from tests.conftest import missing
from tests.test_replay import CHAPTERS

ROOT = Path(__file__).resolve().parent.parent
CHAPTER_FILE = Path("shared") / "chapter" / "containers-and-docker.txt"
# The chapter sits beside the checkout (../shared/chapter/), or beside a folder further up when CI clones the
# checkout one level deeper; LABKIT_CHAPTER names the file where it is elsewhere. It is never copied in.
CHAPTER = Path(os.environ.get("LABKIT_CHAPTER") or next(
    (folder / CHAPTER_FILE for folder in ROOT.parents if (folder / CHAPTER_FILE).exists()), ROOT.parent / CHAPTER_FILE))
LABS = {lab.stem: lab for lab in catalog.all_labs()}
CLAIMS_CODE = sorted((ROOT / "labkit" / "labs").glob("*/claims.py"))
CHECKED_BY_THE_LAB = {"value", "measured", "verdict", "caveat", "shown"}  # what a check passes besides the words


@cache
def recomputed(stem: str) -> pd.DataFrame:
    """The ledger of notebook `stem` recomputed from its recorded tables."""
    lab = open_session(LABS[stem], mode="replay")
    CHAPTERS[stem](lab)
    return lab.claims.frame()


def recorded(stem: str) -> pd.DataFrame:
    return pd.read_csv(ROOT / "data" / "results" / stem / "claims.csv", keep_default_na=False)


def chapter_headings(text: str) -> set[str]:
    """The chapter's headings: the lines that stand alone between blank lines and read as a title — short, and not
    ending as a sentence, a list's lead-in or a line of code does."""
    lines = text.splitlines()
    return {line for before, line, after in zip(["", *lines[:-1]], lines, [*lines[1:], ""], strict=True)
            if line.strip() and not before.strip() and not after.strip() and line == line.strip()
            and len(line) <= 60 and not re.search(r"[.:?;,)\]\"']$", line)}


@pytest.fixture(scope="module")
def chapter_text() -> str:
    if not CHAPTER.exists():
        missing(f"the chapter's text at {CHAPTER} (../shared/chapter/ beside the checkout, or set LABKIT_CHAPTER)")
    return CHAPTER.read_text()


@pytest.fixture(scope="module")
def headings(chapter_text: str) -> set[str]:
    return chapter_headings(chapter_text)


def _misattributed(ledger: pd.DataFrame, headings: set[str]) -> list[str]:
    """The ids of `ledger`'s rows whose source is neither chapter nor finding, or whose chapter section is not a
    heading of the chapter."""
    sources = {s.value for s in claims.Source}
    return [row.id for row in ledger.itertuples() if row.source not in sources
            or (row.source == claims.Source.CHAPTER and row.section not in headings)]


def test_the_heading_reader_finds_the_chapter_s_sections_and_nothing_that_is_prose_or_code(headings: set[str]) -> None:
    assert {"What a Container Actually Is", "Container Pitfalls", "docker compose — The Local Stack"} <= headings
    assert not {h for h in headings if h.startswith(("CMD", "FROM", "#")) or h.endswith("?")}


def test_the_sections_labkit_accepts_are_headings_of_the_chapter(headings: set[str]) -> None:
    assert set(claims.CHAPTER_SECTIONS) - headings == set()


@pytest.mark.parametrize("stem", sorted(LABS))
def test_every_lab_declares_the_claims_table_its_session_writes(stem: str) -> None:
    # A live run refuses, at its very end, a table with other columns than its lab declares.
    assert list(LABS[stem].tables[claims.CLAIMS_TABLE]) == claims.COLUMNS


@pytest.mark.parametrize("stem", sorted(LABS))
def test_recomputed_chapter_claims_name_a_heading_of_the_chapter(stem: str, headings: set[str]) -> None:
    ledger = recomputed(stem)
    assert list(ledger.columns) == claims.COLUMNS
    assert _misattributed(ledger, headings) == []


@pytest.mark.parametrize("stem", sorted(LABS))
def test_recorded_chapter_claims_name_a_heading_of_the_chapter(stem: str, headings: set[str]) -> None:
    ledger = recorded(stem)
    assert "source" in ledger.columns, f"{stem}: recorded before claims had a source; re-record it (`make record`)"
    assert _misattributed(ledger, headings) == []


@pytest.mark.parametrize("stem", sorted(LABS))
def test_every_claim_shows_its_criterion_in_the_notebook_and_in_the_book(stem: str) -> None:
    ledger = recomputed(stem)
    assert (ledger["criterion"].str.strip() != "").all()
    page = book.claims_page(ledger, [])
    for row in ledger.itertuples():
        assert f"| **{row.verdict}** |" in page and row.criterion.replace("|", "\\|") in page, row.id
    assert all(f"## {title}" in page for title in claims.SOURCE_TITLES.values())


def _checks(code: Path) -> dict[str, set[str]]:
    """Each claim id a lab's claims module checks, with the names it fills the claim's words with."""
    calls = [node for node in ast.walk(ast.parse(code.read_text())) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Attribute) and node.func.attr in ("check", "demonstrate")]
    return {str(node.args[0].value): {str(k.arg) for k in node.keywords if k.arg not in CHECKED_BY_THE_LAB}
            for node in calls if node.args and isinstance(node.args[0], ast.Constant)}


@pytest.mark.parametrize("code", CLAIMS_CODE, ids=lambda path: path.parent.name)
def test_every_claim_a_lab_checks_has_its_words_and_fills_every_field_of_them(code: Path,
                                                                            headings: set[str]) -> None:
    # Read from the code, not from a replay: a claim on a branch the recording did not take is held to it too.
    stem = importlib.import_module(f"labkit.labs.{code.parent.name}").STEM
    texts = claims.read_texts(claims.claims_file(stem))
    checked = _checks(code)
    assert sorted(checked) == sorted(texts), f"{stem}: ids checked in {code.name} and worded in its claims file"
    for claim_id, filled in checked.items():
        words = texts[claim_id]
        fields = {name for text in (words.claim, words.unit, words.criterion, words.fixed_by)
                  for _, name, _, _ in string.Formatter().parse(text) if name}
        assert filled == fields, claim_id
        assert words.source == claims.Source.FINDING or words.section in headings, claim_id


COPIED_WORDS = 8  # a run of this many of the chapter's words in a row is its sentence, not our words


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def longest_shared_run(text: str, source_words: list[str]) -> list[str]:
    """The longest run of `text`'s words that stands, in the same order, in `source_words` (case and punctuation
    aside)."""
    source = " " + " ".join(source_words) + " "
    words = _words(text)
    best: list[str] = []
    for start in range(len(words)):
        end = start + len(best) + 1
        while end <= len(words) and f" {' '.join(words[start:end])} " in source:
            best, end = words[start:end], end + 1
    return best


def test_the_shared_run_is_found_word_by_word() -> None:
    source = _words("A Docker image is a stack of read-only layers, each the result of one instruction.")
    assert longest_shared_run("Our image: a stack of read-only layers, each one", source) == [
        "a", "stack", "of", "read", "only", "layers", "each"]
    assert longest_shared_run("layers stack", source) == ["layers"]


@pytest.mark.parametrize("code", CLAIMS_CODE, ids=lambda path: path.parent.name)
def test_no_claim_copies_a_sentence_of_the_chapter(code: Path, chapter_text: str) -> None:
    # The chapter's claims are stated in our words, never its sentences (a number it gives may be quoted).
    stem = importlib.import_module(f"labkit.labs.{code.parent.name}").STEM
    chapter = _words(chapter_text)
    copied = {claim_id: " ".join(run) for claim_id, words in claims.read_texts(claims.claims_file(stem)).items()
              for text in (words.claim, words.unit, words.criterion)
              if len(run := longest_shared_run(text, chapter)) >= COPIED_WORDS}
    assert copied == {}


def test_every_declared_headline_is_a_chapter_claim_of_its_lab() -> None:
    declared = {stem: lab.headline for stem, lab in LABS.items() if lab.headline}
    sources = {stem: recomputed(stem).set_index("id")["source"].to_dict() for stem in declared}
    assert {stem: sources[stem].get(claim) for stem, claim in declared.items()} == {
        stem: claims.Source.CHAPTER.value for stem in declared}
