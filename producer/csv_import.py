"""Job-offer CSV rows → :class:`~jobpulse.offer.Offer` upserts with stable ids (pure).

The format is the public WTTJ data set's (``../shared/data/wttj/``): RFC 4180 CSV with the
header ``profession_id,contract_type,name,office_latitude,office_longitude``; an empty field
means "missing". ``latitude``/``longitude`` are accepted as column names too, and a
``category`` column, when present, is sent as the offer's category.

**Stable ids.** The rows have no id column, so an offer's id is derived from its content::

    csv-<16 hex digits of BLAKE2b(the row's fields)>-<occurrence>

where ``occurrence`` is 1 for the first row with that exact content in the file, 2 for the
next identical row, and so on. The same file therefore always yields the same ids (so
importing it twice changes no count), while rows that are exact duplicates of each other
stay distinct offers. With ``id_column`` the file's own id column is used instead.

Each row becomes the offer's JSON body and is checked by the offer contract's one validator
(:func:`jobpulse.offer.validate_offer`, what the dataflow's ``parse_offer`` applies), so the
import sends nothing the dataflow would dead-letter. Malformed rows are returned as
:class:`RowError` with the line number where the row starts (a quoted field may span lines);
the caller decides whether to skip them or abort.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import orjson

from jobpulse.errors import UsageError
from jobpulse.offer import InvalidOffer, Offer, validate_offer

#: Column names (lower-cased, trimmed) → the offer field they fill.
COLUMN_ALIASES: dict[str, str] = {
    "profession_id": "profession_id",
    "category": "category",
    "category_name": "category",
    "contract_type": "contract_type",
    "name": "name",
    "office_latitude": "latitude",
    "latitude": "latitude",
    "office_longitude": "longitude",
    "longitude": "longitude",
}
ID_PREFIX = "csv-"


@dataclass(frozen=True, slots=True)
class RowError:
    """A malformed row: where it starts in the file and what is wrong with it."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True, slots=True)
class CsvRow:
    """A valid row: its starting line and the offer it becomes."""

    line: int
    offer: Offer


@dataclass(frozen=True)
class _Layout:
    """Where each offer field sits in a row, from the header."""

    width: int
    columns: dict[str, int]
    id_index: int | None


def stable_id(fields: list[str], occurrence: int) -> str:
    """The id of the ``occurrence``-th row (1-based) with exactly these ``fields``."""
    digest = hashlib.blake2b(orjson.dumps(fields), digest_size=8).hexdigest()
    return f"{ID_PREFIX}{digest}-{occurrence}"


def read_rows(lines: Iterable[str], *, id_column: str | None = None) -> Iterator[CsvRow | RowError]:
    """Parse CSV text lines (``newline=""`` style, header first) into rows or errors.

    Raises :class:`UsageError` when the header itself is unusable (no known column, only
    one of the coordinate columns, duplicate names, ``id_column`` absent).
    """
    reader = csv.reader(lines, strict=True)
    layout: _Layout | None = None
    seen: dict[bytes, int] = {}
    while True:
        start = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            yield RowError(start, f"unreadable CSV ({exc})")
            continue
        if not fields or fields == [""]:
            continue  # blank line
        if layout is None:
            layout = _layout(fields, id_column)
            continue
        if len(fields) != layout.width:
            yield RowError(start, f"{len(fields)} fields, the header has {layout.width}")
            continue
        if not any(f.strip() for f in fields):
            yield RowError(start, "every field is empty")
            continue
        try:
            offer_id = _offer_id(fields, layout, seen)
            yield CsvRow(start, _offer(offer_id, fields, layout))
        except ValueError as exc:
            yield RowError(start, str(exc))
    if layout is None:
        raise UsageError("the CSV file is empty (no header line)")


def _layout(header: list[str], id_column: str | None) -> _Layout:
    names = [name.strip().lstrip("\ufeff").lower() for name in header]
    if len(set(names)) != len(names):
        raise UsageError(f"the CSV header repeats a column name: {','.join(header)}")
    columns = {COLUMN_ALIASES[n]: i for i, n in enumerate(names) if n in COLUMN_ALIASES}
    if not columns:
        raise UsageError(
            "the CSV header has none of the expected columns "
            f"({', '.join(sorted(set(COLUMN_ALIASES)))}): {','.join(header)}"
        )
    if ("latitude" in columns) != ("longitude" in columns):
        raise UsageError("the CSV header has only one of the latitude/longitude columns")
    id_index = None
    if id_column is not None:
        wanted = id_column.strip().lower()
        if wanted not in names:
            raise UsageError(
                f"--id-column {id_column!r} is not in the CSV header: {','.join(header)}"
            )
        id_index = names.index(wanted)
    return _Layout(width=len(names), columns=columns, id_index=id_index)


def _offer_id(fields: list[str], layout: _Layout, seen: dict[bytes, int]) -> str:
    if layout.id_index is not None:
        offer_id = fields[layout.id_index].strip()
        if not offer_id:
            raise ValueError("the id column is empty")
        return offer_id
    content = orjson.dumps(fields)
    occurrence = seen.get(content, 0) + 1
    seen[content] = occurrence
    return stable_id(fields, occurrence)


def _offer(offer_id: str, fields: list[str], layout: _Layout) -> Offer:
    """The upsert for one row, validated by the offer contract (:func:`validate_offer`, the
    checks :func:`~jobpulse.offer.parse_offer` applies to every record); ``ValueError`` with
    a readable message if a value is bad."""

    def text(field: str) -> str | None:
        index = layout.columns.get(field)
        return fields[index] if index is not None and fields[index] != "" else None

    body = {  # None: missing, as in the contract's JSON
        "id": offer_id,
        "category": text("category"),
        "profession_id": _integer("profession_id", text("profession_id")),
        "latitude": _number("latitude", text("latitude")),
        "longitude": _number("longitude", text("longitude")),
        "name": text("name"),
        "contract_type": text("contract_type"),
    }
    try:
        return validate_offer(body)
    except InvalidOffer as error:
        raise ValueError(error.detail) from None


def _integer(field: str, raw: str | None) -> int | None:
    """The CSV text of a JSON integer (``None`` if missing or blank)."""
    if raw is None or not raw.strip():
        return None
    try:
        return int(raw.strip())
    except ValueError:
        raise ValueError(f"{field} is not an integer: {raw!r}") from None


def _number(field: str, raw: str | None) -> float | None:
    """The CSV text of a JSON number (``None`` if missing or blank); which numbers are
    acceptable (finite, in range) is the contract's to say."""
    if raw is None or not raw.strip():
        return None
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{field} is not a number: {raw!r}") from None


def decode_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """UTF-8 text lines (BOM dropped) from binary lines; :class:`UsageError` names the line."""
    for number, chunk in enumerate(chunks, start=1):
        try:
            line = chunk.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(f"line {number} is not UTF-8 text ({exc.reason})") from None
        yield line.removeprefix("\ufeff") if number == 1 else line
