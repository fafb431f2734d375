"""The breakdown as PostgreSQL computes it: the design note's query over the offers table.

``verify --postgres`` compares it with Redis, and the claim's benchmark times it.
"""

from __future__ import annotations

from typing import Any

import psycopg

from jobpulse.delta import Cell

#: Open offers per category × continent: one scan of the partial index on open offers.
BREAKDOWN_SQL = (
    "SELECT category, continent, count(*) FROM offers "
    "WHERE closed_at IS NULL GROUP BY category, continent"
)


def open_counts(conn: psycopg.Connection[Any]) -> dict[Cell, int]:
    """Open offers per cell (cells with none left out)."""
    return {Cell(category, continent): n for category, continent, n in conn.execute(BREAKDOWN_SQL)}
