"""The professions reference table and the category rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobpulse.dataflows.professions import category_of, load_professions
from jobpulse.errors import UsageError
from jobpulse.offer import UNKNOWN

WTTJ_PROFESSIONS = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "data"
    / "wttj"
    / "technical-test-professions.csv"
)


def test_quoted_names_and_accents_load(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text(
        'id,name,category_name\n1,"Chef, de projet",Créa\n2,Dev,"Marketing / Comm\'"\n',
        encoding="utf-8",
    )
    assert load_professions(path) == {1: "Créa", 2: "Marketing / Comm'"}
    assert load_professions(None) == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id,name\n1,Dev\n", "lacks column(s) category_name"),
        ("id,name,category_name\nx,Dev,Tech\n", "line 2: id 'x' is not an integer"),
    ],
)
def test_broken_files_are_usage_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_professions(path)


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read the professions file"):
        load_professions(tmp_path / "absent.csv")


def test_category_rule_explicit_then_table_then_unknown() -> None:
    table = {1: "Tech"}
    assert category_of("Retail", 1, table) == "Retail"
    assert category_of(None, 1, table) == "Tech"
    assert category_of(None, 2, table) == UNKNOWN
    assert category_of(None, None, table) == UNKNOWN
    assert category_of("", 1, table) == "Tech"


@pytest.mark.skipif(not WTTJ_PROFESSIONS.exists(), reason="../shared/data/wttj/ is absent")
def test_the_public_professions_file_has_41_professions_in_7_categories() -> None:
    table = load_professions(WTTJ_PROFESSIONS)
    assert len(table) == 41
    assert 34 not in table
    assert set(table.values()) == {
        "Tech",
        "Retail",
        "Business",
        "Marketing / Comm'",
        "Admin",
        "Conseil",
        "Créa",
    }
