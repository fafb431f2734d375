"""Applying a batch of offer rows to ``offers``, exactly once in effect.

A batch is COPYed into a temporary staging table, then merged by one
``INSERT … SELECT … ON CONFLICT (id) DO UPDATE … WHERE`` per *round*, all in one transaction.
A row changes an offer only if it is newer than the row's last applied one, so a replayed
batch (after a crash between the database commit and the Kafka commit) or a stale record
changes nothing, and the order in which rows arrive does not matter for which one wins.

**Newer** is ``(version, source_offset)``: the version (:mod:`jobpulse.offer_row`: order time,
then offers partition) and, for two records of the same partition in the same millisecond
(the same version), the later offset — the dataflow applies those in offset order too. A
replay has the same pair and is ignored.

What a newer row does:

- *upsert*: every field set from the row, ``closed_at`` null, ``opened_at`` kept if the offer
  was open, else the row's event time (it opens now);
- *delete*: ``closed_at`` = the row's event time, every other field kept; a delete of an
  unknown id inserts a closed row with null fields (its version keeps an older upsert, arriving
  later, from opening the offer).

**Rounds.** One ``INSERT … ON CONFLICT`` may not touch a row twice, so a batch holding several
rows of one id is split into rounds (:func:`plan_rounds`): round *k* holds the *k*-th row of
every id that has more than *k*. Rows older than an earlier row of their id in the same batch
are dropped first (they would be stale one by one too), so the rounds equal applying the rows
one by one in the order they were read — the order the dataflow applied them: the rows of one
offer share a Kafka key, hence a partition.

The pure part — planning rounds (:func:`plan_rounds`), checking and mapping rows to COPY
tuples (:func:`check_storable`, :func:`copy_tuple`) — is plain functions, unit-tested without
a database; :class:`OffersWriter` runs the SQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jobpulse.offer_row import OfferRow

if TYPE_CHECKING:
    import psycopg

#: The staging table's columns, in COPY order, with their binary COPY types.
STAGE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("round", "int4"),
    ("id", "text"),
    ("is_delete", "bool"),
    ("category", "text"),
    ("continent", "text"),
    ("latitude", "float8"),
    ("longitude", "float8"),
    ("profession_id", "int8"),
    ("name", "text"),
    ("contract_type", "text"),
    ("published_ms", "int8"),
    ("event_ms", "int8"),
    ("source_partition", "int4"),
    ("source_offset", "int8"),
    ("timestamp_ms", "int8"),
    ("version", "int8"),
)

_SQL_TYPES = {"int4": "integer", "int8": "bigint", "float8": "double precision"}

#: The staging table: one per connection, emptied by every commit.
CREATE_STAGE = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS offers_stage ("
    + ", ".join(f"{name} {_SQL_TYPES.get(kind, kind)}" for name, kind in STAGE_COLUMNS)
    + ") ON COMMIT DELETE ROWS"
)

COPY_STAGE = (
    f"COPY offers_stage ({', '.join(name for name, _ in STAGE_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
)


def _ms(column: str) -> str:
    """SQL: epoch milliseconds → timestamptz (exact: integer ms as an interval)."""
    return f"(timestamptz 'epoch' + s.{column} * interval '1 millisecond')"


#: The fields an upsert sets and a delete keeps.
_FIELDS = (
    "category",
    "continent",
    "latitude",
    "longitude",
    "profession_id",
    "name",
    "contract_type",
    "published_at",
)

#: ``SET`` clauses of the fields: an upsert sets them, a delete keeps them.
_SET_FIELDS = "".join(
    f"        {f} = CASE WHEN excluded.closed_at IS NULL THEN excluded.{f} ELSE o.{f} END,\n"
    for f in _FIELDS
)

#: One round: the staged rows of round ``%(round)s`` merged into ``offers``; returns
#: (upserts applied, deletes applied). A row that is not newer is skipped by the WHERE.
UPSERT_ROUND = f"""
WITH applied AS (
    INSERT INTO offers AS o (
        id, category, continent, latitude, longitude, profession_id, name, contract_type,
        published_at, opened_at, closed_at,
        source_partition, source_offset, source_timestamp, version, updated_at
    )
    SELECT
        s.id, s.category, s.continent, s.latitude, s.longitude, s.profession_id, s.name,
        s.contract_type, {_ms("published_ms")},
        CASE WHEN s.is_delete THEN NULL ELSE {_ms("event_ms")} END,
        CASE WHEN s.is_delete THEN {_ms("event_ms")} END,
        s.source_partition, s.source_offset, {_ms("timestamp_ms")}, s.version, now()
    FROM offers_stage AS s
    WHERE s.round = %(round)s
    ON CONFLICT (id) DO UPDATE SET
{_SET_FIELDS}        opened_at = CASE WHEN excluded.closed_at IS NULL AND o.closed_at IS NOT NULL
                         THEN excluded.opened_at ELSE o.opened_at END,
        closed_at = excluded.closed_at,
        source_partition = excluded.source_partition,
        source_offset = excluded.source_offset,
        source_timestamp = excluded.source_timestamp,
        version = excluded.version,
        updated_at = excluded.updated_at
    WHERE (o.version, o.source_offset) < (excluded.version, excluded.source_offset)
    RETURNING o.closed_at IS NULL AS upsert
)
SELECT count(*) FILTER (WHERE upsert), count(*) FILTER (WHERE NOT upsert) FROM applied
"""

#: Bounds of a bigint column; epoch milliseconds PostgreSQL's timestamptz can hold (±4000 years
#: around 1970 is far inside its range).
_INT8 = (-(1 << 63), (1 << 63) - 1)
_INT4 = (-(1 << 31), (1 << 31) - 1)
_MS = (-(1 << 47), 1 << 47)


class Unstorable(ValueError):
    """A decoded row that PostgreSQL cannot store (a number out of its column's range)."""


def check_storable(row: OfferRow) -> OfferRow:
    """``row`` if every number fits its column; :class:`Unstorable` otherwise.

    Such a row would fail the whole batch's COPY again and again (the sink would never get
    past it), so it is skipped like a row that does not decode.
    """
    checks: tuple[tuple[str, int | None, tuple[int, int]], ...] = (
        ("event_ms", row.event_ms, _MS),
        ("timestamp_ms", row.timestamp_ms, _MS),
        ("published_at_ms", row.published_at_ms, _MS),
        ("partition", row.partition, _INT4),
        ("offset", row.offset, _INT8),
        ("version", row.version, _INT8),
        ("profession_id", row.profession_id, _INT8),
    )
    for name, value, (low, high) in checks:
        if value is not None and not low <= value <= high:
            raise Unstorable(f"{name} {value} out of range")
    return row


def _text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL characters (JSON can: ``\\u0000``): they are dropped."""
    return value.replace("\x00", "") if value is not None and "\x00" in value else value


def copy_tuple(round_: int, row: OfferRow) -> tuple[Any, ...]:
    """The staging tuple of ``row`` in round ``round_`` (in :data:`STAGE_COLUMNS` order)."""
    return (
        round_,
        _text(row.id),
        row.op == "delete",
        _text(row.category),
        _text(row.continent),
        row.latitude,
        row.longitude,
        row.profession_id,
        _text(row.name),
        _text(row.contract_type),
        row.published_at_ms,
        row.event_ms,
        row.partition,
        row.offset,
        row.timestamp_ms,
        row.version,
    )


def order_key(row: OfferRow) -> tuple[int, int]:
    """Which of two rows of one offer is newer: the larger key (see the module doc)."""
    return (row.version, row.offset)


def plan_rounds(rows: Iterable[OfferRow]) -> list[list[OfferRow]]:
    """The rows of a batch (in the order they were read) split into rounds.

    Per id, a row is kept only if it is newer (:func:`order_key`) than every row of that id
    before it in the batch; the others are stale or replays and change nothing, exactly as
    if they had come in another batch. The kept rows of an id are therefore in version
    order, and round *k* holds the *k*-th of each id: applying the rounds in order, each as
    one ``ON CONFLICT`` statement, equals applying the rows one by one as they were read,
    wherever the batch boundaries fall.
    """
    #: id as stored → (order key of its newest row, that row's round)
    newest: dict[str | None, tuple[tuple[int, int], int]] = {}
    rounds: list[list[OfferRow]] = []
    for row in rows:
        key, offer_id = order_key(row), _text(row.id)
        seen = newest.get(offer_id)
        if seen is not None and key <= seen[0]:
            continue
        k = 0 if seen is None else seen[1] + 1
        newest[offer_id] = (key, k)
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(row)
    return rounds


@dataclass
class Applied:
    """What one batch did: rows that changed an offer, by kind, and rows that did not."""

    upserts: int = 0
    deletes: int = 0
    #: Rows not newer than the offer's current one: replays and stale records.
    ignored: int = 0

    def __iadd__(self, other: Applied) -> Applied:
        self.upserts += other.upserts
        self.deletes += other.deletes
        self.ignored += other.ignored
        return self

    @property
    def rows(self) -> int:
        return self.upserts + self.deletes + self.ignored


class OffersWriter:
    """Writes batches through one connection (not in autocommit mode)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        with conn.transaction():
            conn.execute(CREATE_STAGE)

    def write(self, rows: Sequence[OfferRow]) -> Applied:
        """Apply ``rows`` in one transaction (committed on return)."""
        rounds = plan_rounds(rows)
        applied = Applied()
        with self.conn.transaction(), self.conn.cursor() as cursor:
            with cursor.copy(COPY_STAGE) as copy:
                copy.set_types([kind for _, kind in STAGE_COLUMNS])
                write_row = copy.write_row
                for k, members in enumerate(rounds):
                    for row in members:
                        write_row(copy_tuple(k, row))
            for k in range(len(rounds)):
                cursor.execute(UPSERT_ROUND, {"round": k})
                counts = cursor.fetchone()
                assert counts is not None
                applied.upserts += counts[0]
                applied.deletes += counts[1]
        applied.ignored = len(rows) - applied.upserts - applied.deletes
        return applied

    def close(self) -> None:
        self.conn.close()
