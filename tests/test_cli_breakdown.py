"""``jobpulse breakdown``'s table: the shared view model drawn for an 80-column terminal."""

from __future__ import annotations

import re

from rich.console import Console

from jobpulse.cli.breakdown import breakdown_table, print_breakdown
from jobpulse.delta import CONTINENTS
from jobpulse.offer import UNKNOWN
from jobpulse.store import Breakdown

#: The category names of the real professions table (``technical-test-professions.csv``).
REAL_CATEGORIES = ["Tech", "Créa", "Admin", "Retail", "Conseil", "Business", "Marketing / Comm'"]
#: The continents the real job offers geocode to (no Antarctica), plus Unknown.
REAL_CONTINENTS = [c for c in CONTINENTS if c != "Antarctica"] + [UNKNOWN]


def _lines(breakdown: Breakdown, width: int) -> list[str]:
    console = Console(width=width, record=True)
    print_breakdown(console, breakdown)
    return console.export_text().splitlines()


def _render(breakdown: Breakdown) -> list[list[str]]:
    """The table's rows as cells (columns are separated by at least two spaces)."""
    rows = []
    for line in _lines(breakdown, 200):
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) >= 2:
            rows.append(cells)
    return rows


def test_rows_sorted_by_total_with_row_and_column_totals() -> None:
    rows = _render(
        Breakdown(
            counts={
                "Tech": {"Europe": 5, "Asia": 2},
                "Retail": {"Unknown": 1, "Africa": 10},
            },
            updated_at="2026-11-25T10:00:00.000Z",
        )
    )
    assert rows[0] == ["Category", "Africa", "Asia", "Europe", "Unknown", "Total"]
    assert rows[1] == ["Retail", "10", "0", "0", "1", "11"]
    assert rows[2] == ["Tech", "0", "2", "5", "0", "7"]
    assert rows[3] == ["Total", "10", "2", "5", "1", "18"]


def test_empty_breakdown_renders_a_zero_total() -> None:
    rows = _render(Breakdown(counts={}))
    assert rows[-1] == ["Total", "0"]
    assert "Open job offers per category × continent" in _lines(Breakdown(counts={}), 80)[0]


def _real_sized_breakdown(scale: int) -> Breakdown:
    return Breakdown(
        counts={
            category: {
                continent: scale * (i + 1) + j for j, continent in enumerate(REAL_CONTINENTS)
            }
            for i, category in enumerate([*REAL_CATEGORIES, UNKNOWN])
        }
    )


def _assert_nothing_cut(breakdown: Breakdown, lines: list[str]) -> None:
    text = "\n".join(lines)
    assert "…" not in text
    rows = {line.split("  ")[0].strip(): line for line in lines if "  " in line.strip()}
    for category, row in breakdown.counts.items():
        assert category in rows, text  # the whole name on one line
        cells = re.split(r"\s{2,}", rows[category].strip())
        assert cells[-1] == str(sum(row.values())), rows[category]
    column_totals = re.split(r"\s{2,}", rows["Total"].strip())
    assert column_totals[-1] == str(breakdown.total)
    for continent, shown in zip(REAL_CONTINENTS, column_totals[1:-1], strict=True):
        assert shown == str(sum(row.get(continent, 0) for row in breakdown.counts.values()))


def test_80_columns_keep_every_category_name_and_total_whole() -> None:
    # Real categories and continents, counts up to 4 digits per cell (the real data set has
    # ~5000 offers): the table fits in 80 columns without cutting anything.
    breakdown = _real_sized_breakdown(scale=1234)
    lines = _lines(breakdown, 80)
    assert max(len(line) for line in lines) <= 80
    _assert_nothing_cut(breakdown, lines)
    header = "\n".join(lines[:4])
    assert "N." in header and "Amer." in header and "Oceania" in header


def test_a_table_too_wide_for_the_console_is_printed_wider_not_cut() -> None:
    breakdown = _real_sized_breakdown(scale=123_456)
    lines = _lines(breakdown, 80)
    assert max(len(line) for line in lines) > 80
    _assert_nothing_cut(breakdown, lines)


def test_numbers_are_right_aligned() -> None:
    lines = _lines(Breakdown(counts={"Tech": {"Europe": 5}, "Retail": {"Europe": 1234}}), 80)

    def number_ends(prefix: str) -> list[int]:
        line = next(line for line in lines if line.startswith(prefix))
        return [m.end() for m in re.finditer(r"\d+", line)]

    assert number_ends("Retail") == number_ends("Tech") == number_ends("Total")


def test_table_headers_are_the_shared_continent_labels() -> None:
    table = breakdown_table(Breakdown(counts={"Tech": {c: 1 for c in (*CONTINENTS, UNKNOWN)}}))
    headers = [str(column.header) for column in table.columns]
    assert headers == [
        "Category",
        "Africa",
        "Antarctica",
        "Asia",
        "Europe",
        "N. Amer.",
        "Oceania",
        "S. Amer.",
        "Unknown",
        "Total",
    ]
