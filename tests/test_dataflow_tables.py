"""The breakdown table: continents in canonical order, row and column totals."""

from __future__ import annotations

from rich.console import Console

from jobpulse.dataflows.tables import breakdown_table
from jobpulse.store import Breakdown


def _render(breakdown: Breakdown) -> list[list[str]]:
    console = Console(width=200, record=True)
    console.print(breakdown_table(breakdown))
    rows = []
    for line in console.export_text().splitlines():
        cells = [c.strip() for c in line.replace("┃", "│").split("│")[1:-1]]
        if cells:
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
