"""The breakdown as a table: the one view model of ``jobpulse breakdown`` and the dashboard.

Both presentations take their rows, columns, labels and totals from here, so they agree:

- rows: categories with open offers, largest first (ties by name), Unknown last, then Total;
- columns: the seven continents in :data:`jobpulse.delta.CONTINENTS` order, any unexpected
  name (sorted), Unknown last, then Total;
- headers: :func:`continent_label` (``"N. Amer."``, ``"S. Amer."``: a number column is narrow).

One choice differs by medium and is a parameter, not a second rule: a live page keeps every
continent column so its layout does not jump as offers arrive (``all_continents=True``);
a printed table drops the continents with no open offer to fit an 80-column terminal.
Pure: no I/O, no rendering library.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jobpulse.delta import CONTINENTS
from jobpulse.offer import UNKNOWN

Counts = Mapping[str, Mapping[str, int]]
Columns = dict[str, list[Any]]

#: Label of the totals row and column.
TOTAL = "Total"
#: Keys of the row-label and row-total columns in :func:`table_columns`.
CATEGORY_COLUMN = "category"
TOTAL_COLUMN = "total"

#: Header labels of the two continent names too long for a number column.
_SHORT_LABELS = {"North America": "N. Amer.", "South America": "S. Amer."}


def continent_label(continent: str) -> str:
    """The column header of a continent (``"N. Amer."``; other names as they are)."""
    return _SHORT_LABELS.get(continent, continent)


def continent_columns(counts: Counts, *, all_continents: bool = True) -> list[str]:
    """Continents in fixed order, then unexpected names (sorted), then Unknown.

    ``all_continents=False`` keeps only the continents with at least one open offer.
    """
    present = {continent for row in counts.values() for continent, n in row.items() if n}
    extra = sorted({c for row in counts.values() for c in row} - {*CONTINENTS, UNKNOWN})
    columns = [*CONTINENTS, *extra, UNKNOWN]
    return columns if all_continents else [c for c in columns if c in present]


def category_order(counts: Counts) -> list[str]:
    """Categories with open offers, largest first (ties by name); Unknown always last."""
    row_totals = {cat: sum(row.values()) for cat, row in counts.items() if sum(row.values())}
    known = sorted((c for c in row_totals if c != UNKNOWN), key=lambda c: (-row_totals[c], c))
    return [*known, UNKNOWN] if UNKNOWN in row_totals else known


def table_columns(counts: Counts, *, known: bool = True, all_continents: bool = True) -> Columns:
    """Table rows (categories, then a Total row) × continents, with a total per row.

    Keys: ``category``, one key per continent, ``total``. Missing cells are 0. An empty
    breakdown gives just the Total row of zeros; ``known=False`` (Redis never read) gives
    a Total row of ``None`` (shown as "–").
    """
    continents = continent_columns(counts, all_continents=all_continents)
    categories = category_order(counts)
    data: Columns = {CATEGORY_COLUMN: [*categories, TOTAL]}
    for continent in continents:
        column = [int(counts.get(cat, {}).get(continent, 0)) for cat in categories]
        data[continent] = [*column, sum(column) if known else None]
    row_totals = [sum(data[c][i] for c in continents) for i in range(len(categories))]
    data[TOTAL_COLUMN] = [*row_totals, sum(row_totals) if known else None]
    return data


def longest_category(counts: Counts) -> int:
    """Characters in the longest row label (categories and the Total row)."""
    return max((len(c) for c in (*counts, TOTAL)), default=len(TOTAL))
