"""``jobpulse breakdown``: open offers per category × continent from Redis, as a table or JSON.

The rows, columns and labels come from :mod:`jobpulse.breakdown` (shared with the
dashboard); this module only draws them for a terminal. Sized for an 80-column terminal
(the width when piped): category names never wrap, continent headers wrap only between
words, and every number column is as wide as its widest number, so no name and no count is
ever cut. Continents without open offers are left out (a printed table, not a live page).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import orjson
import typer

from jobpulse import breakdown as view
from jobpulse.settings import Settings

if TYPE_CHECKING:  # rich and redis load when the command runs, not with every command
    from rich.console import Console
    from rich.table import Table

    from jobpulse.store import Breakdown

TITLE = "Open job offers per category × continent"


def breakdown(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Open offers per category × continent (from Redis), with row and column totals."""
    from rich.console import Console

    from jobpulse.store import Store

    settings: Settings = ctx.obj
    result = Store.connect(settings).breakdown()
    if as_json:
        typer.echo(orjson.dumps(result.to_json_dict(), option=orjson.OPT_SORT_KEYS).decode())
        return
    print_breakdown(Console(), result)


def breakdown_table(breakdown: Breakdown) -> Table:
    """The rich table of the shared view model: categories × continents, with totals."""
    from rich import box
    from rich.table import Table

    columns = view.table_columns(breakdown.counts, all_continents=False)
    continents = [c for c in columns if c not in (view.CATEGORY_COLUMN, view.TOTAL_COLUMN)]
    table = Table(
        title=TITLE,
        min_width=len(TITLE),  # the title on one line even when there is nothing to show
        caption=f"updated {breakdown.updated_at or 'never'}",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("Category", no_wrap=True)
    for continent in continents:
        header = view.continent_label(continent)
        # A column total is its widest number; the header may wrap between its words.
        width = max(len(str(columns[continent][-1])), *(len(word) for word in header.split()))
        table.add_column(header, justify="right", width=width)
    table.add_column(view.TOTAL, justify="right", style="bold", no_wrap=True)
    keys = [*continents, view.TOTAL_COLUMN]
    rows = len(columns[view.CATEGORY_COLUMN])
    for i, label in enumerate(columns[view.CATEGORY_COLUMN]):
        if i == rows - 1:
            table.add_section()
        cells = [str(columns[key][i]) for key in keys]
        table.add_row(label, *cells, style="bold" if i == rows - 1 else None)
    return table


def print_breakdown(console: Console, breakdown: Breakdown) -> None:
    """Print the table; wider than the console rather than cutting names or numbers."""
    from rich.measure import Measurement

    table = breakdown_table(breakdown)
    needed = Measurement.get(console, console.options.update_width(10_000), table).maximum
    if needed > console.width:
        console.width = needed  # a terminal wraps the long lines; piped output keeps them
    console.print(table)
