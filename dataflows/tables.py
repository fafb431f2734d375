"""The breakdown as a rich table: categories × continents with row and column totals."""

from __future__ import annotations

from rich.table import Table

from jobpulse.offer import UNKNOWN
from jobpulse.store import Breakdown

from .geocoding import CONTINENTS


def breakdown_table(breakdown: Breakdown) -> Table:
    """Rows: categories by total (largest first); columns: continents present, then Total."""
    present = {continent for row in breakdown.counts.values() for continent in row}
    continents = [c for c in (*CONTINENTS, UNKNOWN) if c in present]
    continents += sorted(present - set(continents))
    table = Table(
        title="Open job offers per category × continent",
        caption=f"updated {breakdown.updated_at or 'never'}",
    )
    table.add_column("Category")
    for continent in continents:
        table.add_column(continent, justify="right")
    table.add_column("Total", justify="right", style="bold")
    rows = sorted(breakdown.counts.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    for category, row in rows:
        table.add_row(category, *(str(row.get(c, 0)) for c in continents), str(sum(row.values())))
    column_totals = [sum(row.get(c, 0) for row in breakdown.counts.values()) for c in continents]
    table.add_section()
    table.add_row("Total", *(str(n) for n in column_totals), str(breakdown.total), style="bold")
    return table
