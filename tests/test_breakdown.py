"""The breakdown view model shared by ``jobpulse breakdown`` and the dashboard (pure)."""

from __future__ import annotations

from jobpulse import breakdown as view
from jobpulse.delta import CONTINENTS
from jobpulse.offer import UNKNOWN
from jobpulse.store import Breakdown

COUNTS = {
    "Tech": {"Europe": 5, "Asia": 2},
    UNKNOWN: {"Europe": 9, UNKNOWN: 1},
    "Business": {"Europe": 3, "North America": 4},
    "Admin": {"Oceania": 7},
}


def test_table_rows_are_categories_by_total_with_unknown_last_then_total() -> None:
    table = view.table_columns(COUNTS)
    # Tech 7 and Business 7 tie → by name; Admin 7 too; Unknown (10) is still last.
    assert table[view.CATEGORY_COLUMN] == ["Admin", "Business", "Tech", UNKNOWN, view.TOTAL]


def test_table_columns_are_fixed_continents_then_unknown() -> None:
    table = view.table_columns(COUNTS)
    continents = [k for k in table if k not in (view.CATEGORY_COLUMN, view.TOTAL_COLUMN)]
    assert continents == [*CONTINENTS, UNKNOWN]
    assert next(iter(table)) == view.CATEGORY_COLUMN
    assert list(table)[-1] == view.TOTAL_COLUMN


def test_table_cells_and_totals_match_the_breakdown() -> None:
    table = view.table_columns(COUNTS)
    rows = table[view.CATEGORY_COLUMN]
    for i, category in enumerate(rows[:-1]):
        for continent in [*CONTINENTS, UNKNOWN]:
            assert table[continent][i] == COUNTS[category].get(continent, 0)
        assert table[view.TOTAL_COLUMN][i] == sum(COUNTS[category].values())
    total_row = len(rows) - 1
    assert table["Europe"][total_row] == 5 + 9 + 3
    assert table[UNKNOWN][total_row] == 1
    assert table["Antarctica"][total_row] == 0
    grand_total = sum(n for row in COUNTS.values() for n in row.values())
    assert table[view.TOTAL_COLUMN][total_row] == grand_total
    assert grand_total == Breakdown(counts=COUNTS).total


def test_unexpected_continent_gets_its_own_column_before_unknown() -> None:
    table = view.table_columns({"Tech": {"Atlantis": 2, UNKNOWN: 1}})
    continents = [k for k in table if k not in (view.CATEGORY_COLUMN, view.TOTAL_COLUMN)]
    assert continents[-2:] == ["Atlantis", UNKNOWN]
    assert table["Atlantis"] == [2, 2]


def test_zero_cells_do_not_make_rows() -> None:
    table = view.table_columns({"Tech": {"Europe": 0}, "Retail": {"Asia": 1}})
    assert table[view.CATEGORY_COLUMN] == ["Retail", view.TOTAL]


def test_longest_category_counts_the_total_row_too() -> None:
    assert view.longest_category({"Marketing / Communication": {"Europe": 1}}) == 25
    assert view.longest_category({}) == len(view.TOTAL)


def test_a_printed_table_keeps_only_continents_with_open_offers_in_the_same_order() -> None:
    table = view.table_columns(COUNTS, all_continents=False)
    continents = [k for k in table if k not in (view.CATEGORY_COLUMN, view.TOTAL_COLUMN)]
    assert continents == ["Asia", "Europe", "North America", "Oceania", UNKNOWN]
    # The same rows and totals as the full table.
    full = view.table_columns(COUNTS)
    assert table[view.CATEGORY_COLUMN] == full[view.CATEGORY_COLUMN]
    assert table[view.TOTAL_COLUMN] == full[view.TOTAL_COLUMN]
    assert view.continent_columns({"Tech": {"Europe": 0}}, all_continents=False) == []


def test_continent_labels_are_one_set_for_every_presentation() -> None:
    labels = [view.continent_label(c) for c in (*CONTINENTS, UNKNOWN)]
    assert labels == [
        "Africa",
        "Antarctica",
        "Asia",
        "Europe",
        "N. Amer.",
        "Oceania",
        "S. Amer.",
        UNKNOWN,
    ]
