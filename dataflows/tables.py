"""The breakdown as a rich table: categories × continents with row and column totals.

Sized for an 80-column terminal (the width when piped): category names never wrap, continent
headers are short and wrap only between words, and every number column is as wide as its
widest number, so no name and no count is ever cut.
"""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from jobpulse.offer import UNKNOWN
from jobpulse.store import Breakdown

from .geocoding import (
    AFRICA,
    ANTARCTICA,
    ASIA,
    CONTINENTS,
    EUROPE,
    NORTH_AMERICA,
    OCEANIA,
    SOUTH_AMERICA,
)

#: Column headers: short enough for eight continents next to the longest category names.
SHORT_NAMES = {
    AFRICA: "Africa",
    ANTARCTICA: "Antarct.",
    ASIA: "Asia",
    EUROPE: "Europe",
    NORTH_AMERICA: "N. Amer.",
    OCEANIA: "Oceania",
    SOUTH_AMERICA: "S. Amer.",
    UNKNOWN: "Unknown",
}


def breakdown_table(breakdown: Breakdown) -> Table:
    """Rows: categories by total (largest first); columns: continents present, then Total."""
    present = {continent for row in breakdown.counts.values() for continent in row}
    continents = [c for c in (*CONTINENTS, UNKNOWN) if c in present]
    continents += sorted(present - set(continents))
    rows = sorted(breakdown.counts.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    column_totals = [sum(row.get(c, 0) for row in breakdown.counts.values()) for c in continents]
    title = "Open job offers per category × continent"
    table = Table(
        title=title,
        min_width=len(title),  # the title on one line even when there is nothing to show
        caption=f"updated {breakdown.updated_at or 'never'}",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("Category", no_wrap=True)
    for continent, column_total in zip(continents, column_totals, strict=True):
        header = SHORT_NAMES.get(continent, continent)
        # A column total is its widest number; the header may wrap between its words.
        width = max(len(str(column_total)), *(len(word) for word in header.split()))
        table.add_column(header, justify="right", width=width)
    table.add_column("Total", justify="right", style="bold", no_wrap=True)
    for category, row in rows:
        table.add_row(category, *(str(row.get(c, 0)) for c in continents), str(sum(row.values())))
    table.add_section()
    table.add_row("Total", *(str(n) for n in column_totals), str(breakdown.total), style="bold")
    return table


def print_breakdown(console: Console, breakdown: Breakdown) -> None:
    """Print the table; wider than the console rather than cutting names or numbers."""
    table = breakdown_table(breakdown)
    needed = Measurement.get(console, console.options.update_width(10_000), table).maximum
    if needed > console.width:
        console.width = needed  # a terminal wraps the long lines; piped output keeps them
    console.print(table)
