"""The items that flow between the dataflow's steps.

Per-item overhead is the bottleneck of a Python dataflow, so the unit of work between steps is
a *chunk*: every step receives and emits a few chunk objects per batch (one per Kafka partition
per poll), never one object per offer. Inside a chunk, records are plain tuples.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from jobpulse.delta import Cell
from jobpulse.offer import Offer
from jobpulse.store import PartitionProgress

Headers = list[tuple[str, bytes]]

#: One Kafka record as read: (offset, order time ms, key, value, headers). The order time is
#: the record's timestamp, raised to the partition's newest so far (never decreases within a
#: partition; see :mod:`.open_offers`).
RawRecord = tuple[int, int, bytes | None, bytes | None, Headers | None]

#: What the per-offer state needs of one record: (partition, offset, order time ms, event time
#: ms, offer id, kind, cell, offer key). ``offer id`` and ``cell`` are ``None`` for rejected
#: records; ``cell`` is None for deletes; the key is ``open_offers.offer_key`` of the id (0
#: for rejected records), computed once where the record's shard is chosen.
Record = tuple[int, int, int, int, str | None, int, Cell | None, int]

#: Record kinds.
UPSERT = 0
DELETE = 1
REJECTED = 2

#: One delta: (sign +1/-1, cell, offer id, source partition, source offset, index among the
#: record's deltas, event time ms).
DeltaRecord = tuple[int, Cell, str, int, int, int, int]

#: A message for a Kafka sink: (key, value, headers).
OutMessage = tuple[bytes | None, bytes | None, Headers | None]


class RawChunk(NamedTuple):
    """Consecutive records of one offers partition, in offset order."""

    partition: int
    records: list[RawRecord]


class ParsedChunk(NamedTuple):
    """A raw chunk after validation: (offset, order time ms, event time ms, offer or None if
    rejected, key)."""

    partition: int
    records: list[tuple[int, int, int, Offer | None, bytes | None]]


class DlqBatch(NamedTuple):
    """Dead-letter copies of the rejected records of a batch."""

    messages: list[OutMessage]


class RowBatch(NamedTuple):
    """Offer-row messages of the valid records of a batch (for the PostgreSQL sink)."""

    messages: list[OutMessage]


@dataclass(slots=True)
class EnrichedChunk:
    """Records of one state shard, category and continent resolved, each partition's in
    offset order.

    The one item that crosses between processes in bulk: Bytewax sends a stateful step's
    items to the worker that owns their key, pickled, and pickles each item twice on the way
    (once to size the message, once to write it). So a chunk pickles its records once and
    hands the same bytes to the second pickling (two-process CPU per crossing record
    1.3 → 0.8 µs, measured in docs/performance.md).
    """

    shard: int
    records: list[Record]
    _pickled: bytes | None = field(default=None, repr=False, compare=False)

    def __reduce__(self) -> tuple[Any, tuple[int, bytes]]:
        if self._pickled is None:
            self._pickled = pickle.dumps(self.records, protocol=pickle.HIGHEST_PROTOCOL)
        return (_unpickled_chunk, (self.shard, self._pickled))


def _unpickled_chunk(shard: int, records: bytes) -> EnrichedChunk:
    return EnrichedChunk(shard, pickle.loads(records))


class StateOutput(NamedTuple):
    """What one state shard emits per batch."""

    deltas: list[DeltaRecord]
    #: Offers partition → counter increments of this batch (``offset``: the next offset).
    counts: dict[int, PartitionProgress]


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
