"""The offer-row message: every valid offer as the dataflow enriched it, for the PostgreSQL sink.

The dataflow writes one to ``JOBPULSE_ROWS_TOPIC`` (when set) for every valid record of the
offers topic, with the category and continent it counted the offer in — one enrichment, so
Postgres and Redis cannot disagree on them. Kafka key: the offer id. Kafka value: JSON::

    {"id": "o-42", "op": "upsert", "category": "Tech", "continent": "Europe",
     "latitude": 48.85, "longitude": 2.35, "profession_id": 17, "name": "...",
     "contract_type": "FULL_TIME", "published_at_ms": 1764064800000,
     "event_ms": 1764064800000, "partition": 3, "offset": 1207,
     "timestamp_ms": 1764064800123, "version": 115605504131072003}

- ``op``: ``upsert`` or ``delete`` (a delete carries only the id and the source fields);
- ``event_ms``: the event time the counts used (``published_at``, else the record's time);
- ``partition``/``offset``: the offers record; ``timestamp_ms``: its order time (the record
  timestamp, never below an earlier one of its partition);
- ``version``: the per-offer ordering rule of the dataflow (:mod:`jobpulse.dataflows` keeps
  the newest version of each offer): ``timestamp_ms << 16 | partition``. A consumer keeps, per
  offer, the row of the highest version: replays and stale records never overwrite it. Two
  records of one offers partition in the same millisecond share a version; the later offset
  is the newer one (the dataflow applies them in offset order), so compare
  ``(version, offset)`` — a replay has both equal.

Rows are at-least-once (a restarted dataflow rewrites the rows of the records after its last
snapshot); the version makes applying one twice harmless.
"""

from __future__ import annotations

from typing import Literal

import msgspec

#: The consumer group of the PostgreSQL sink (its committed offsets are its progress); each
#: rows topic has its own: :func:`sink_group`.
SINK_GROUP = "jobpulse.postgres-sink"
#: Bits below the order time in :attr:`OfferRow.version`: the partition.
PARTITION_BITS = 16


class OfferRow(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """One row change; ``None`` fields are left out of the JSON."""

    id: str
    op: Literal["upsert", "delete"]
    event_ms: int
    partition: int
    offset: int
    timestamp_ms: int
    version: int
    category: str | None = None
    continent: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    profession_id: int | None = None
    name: str | None = None
    contract_type: str | None = None
    published_at_ms: int | None = None

    def key(self) -> bytes:
        return self.id.encode()

    def to_json(self) -> bytes:
        return _encode(self)

    @classmethod
    def from_json(cls, value: bytes) -> OfferRow:
        """Decode (and type-check) one row; ``msgspec.ValidationError`` if it is not one."""
        return _decode(value)


def sink_group(rows_topic: str) -> str:
    """The PostgreSQL sink's consumer group for ``rows_topic`` (two pipelines sharing a Kafka
    cluster never share a group): ``jobpulse.postgres-sink.<rows topic>``."""
    return f"{SINK_GROUP}.{rows_topic}"


def version_of(timestamp_ms: int, partition: int) -> int:
    """The version of a record: compared as (order time, partition)."""
    return (timestamp_ms << PARTITION_BITS) | partition


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(OfferRow).decode
