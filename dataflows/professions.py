"""The professions reference table: ``profession_id`` → category name.

CSV with header ``id,name,category_name`` (RFC 4180 quoting), path from
``JOBPULSE_PROFESSIONS``. An offer's category is its ``category`` field, else the category
of its ``profession_id`` in this table, else ``"Unknown"``.
"""

from __future__ import annotations

import csv
from pathlib import Path

from jobpulse.errors import UsageError
from jobpulse.offer import UNKNOWN

REQUIRED_COLUMNS = ("id", "category_name")


def load_professions(path: Path | None) -> dict[int, str]:
    """``{profession id: category name}``; empty without a path. Bad files → UsageError."""
    if path is None:
        return {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise UsageError(
                    f"professions file {path} lacks column(s) {', '.join(missing)} "
                    "(expected header id,name,category_name)"
                )
            table: dict[int, str] = {}
            for line, row in enumerate(reader, start=2):
                try:
                    profession_id = int(row["id"])
                except (TypeError, ValueError):
                    raise UsageError(
                        f"professions file {path}, line {line}: id {row['id']!r} is not an integer"
                    ) from None
                category = (row["category_name"] or "").strip()
                table[profession_id] = category or UNKNOWN
            return table
    except OSError as exc:
        raise UsageError(f"cannot read the professions file {path}: {exc.strerror}") from None


def category_of(category: str | None, profession_id: int | None, table: dict[int, str]) -> str:
    """The offer's category: explicit, else through the professions table, else Unknown."""
    if category:
        return category
    if profession_id is not None:
        return table.get(profession_id, UNKNOWN)
    return UNKNOWN
