"""The items that flow between the dataflow's steps.

Per-item overhead is the bottleneck of a Python dataflow, so the unit of work between steps is
a *chunk*: every step receives and emits a few chunk objects per batch (one per Kafka partition
per poll), never one object per offer. Inside a chunk, records are plain tuples.
"""

from __future__ import annotations

from typing import NamedTuple

from jobpulse.delta import Cell
from jobpulse.offer import Offer
from jobpulse.store import PartitionProgress

Headers = list[tuple[str, bytes]]

#: One Kafka record as read: (offset, timestamp ms, key, value, headers).
RawRecord = tuple[int, int, bytes | None, bytes | None, Headers | None]

#: What the per-offer state needs of one record: (offset, event time ms, offer id, kind, cell).
#: ``offer id`` and ``cell`` are ``None`` for rejected records; ``cell`` is None for deletes.
Record = tuple[int, int, str | None, int, Cell | None]

#: Record kinds.
UPSERT = 0
DELETE = 1
REJECTED = 2

#: One delta: (sign +1/-1, cell, offer id, source offset, index among the record's deltas,
#: event time ms).
DeltaRecord = tuple[int, Cell, str, int, int, int]

#: A message for a Kafka sink: (key, value, headers).
OutMessage = tuple[bytes | None, bytes | None, Headers | None]


class RawChunk(NamedTuple):
    """Consecutive records of one offers partition, in offset order."""

    partition: int
    records: list[RawRecord]


class ParsedChunk(NamedTuple):
    """A raw chunk after validation: (offset, event time ms, offer or None if rejected, key)."""

    partition: int
    records: list[tuple[int, int, Offer | None, bytes | None]]


class DlqBatch(NamedTuple):
    """Dead-letter copies of the rejected records of a batch."""

    messages: list[OutMessage]


class EnrichedChunk(NamedTuple):
    """Records of one bucket of one partition, category and continent resolved, in order."""

    partition: int
    bucket: int
    records: list[Record]


class StateOutput(NamedTuple):
    """What the per-offer state of one bucket emits per batch."""

    partition: int
    deltas: list[DeltaRecord]
    #: The bucket's own counters (``offset``: the bucket's next offset; ``late`` is 0).
    progress: PartitionProgress
    bucket: int = 0


class BucketProgress(NamedTuple):
    """Counters of one bucket, summed per partition by the progress step."""

    bucket: int
    progress: PartitionProgress


class CellChange(NamedTuple):
    """Pre-aggregated deltas of one cell in one batch on one worker."""

    #: Net change of the open-offer count.
    net: int
    #: (window start ms, source partition) → [opened, closed].
    windows: dict[tuple[int, int], list[int]]


class CellUpdate(NamedTuple):
    """Absolute values of one cell after a batch, for Redis."""

    cell: Cell
    count: int
    #: window start ms → (opened, closed), only the windows this batch touched.
    windows: dict[int, tuple[int, int]]
    #: source partition → deltas of this batch whose window was no longer retained.
    late: dict[int, int]


class LateCount(NamedTuple):
    """Late deltas of one partition found by the counting step (an increment)."""

    count: int
