"""Per-offer state: which cell each open offer is counted in, and the deltas it causes.

The state is split into buckets: bucket :func:`bucket_of` (offer id) of each offers partition,
one :class:`PartitionState` each. Producers key records by offer id, so every record of an
offer lands in one partition, in order, and in one bucket of it; the state of an offer
therefore lives in exactly one bucket state and sees its records in order. Buckets keep each
snapshot small: Bytewax snapshots a touched key whole, so at a low update rate only the few
touched buckets are written, not every partition's whole state. Transitions:

=========================  =============================  ==================================
record                     offer state before             deltas
=========================  =============================  ==================================
upsert                     not open                       +1 new cell
upsert, same cell          open in that cell              none (identical re-send)
upsert, other cell         open in the old cell           -1 old cell (n=0), +1 new (n=1)
delete                     open                           -1 its cell
delete                     not open                       none; ``unknown_deletes`` += 1
rejected (DLQ)             —                              none; ``dlq`` += 1
=========================  =============================  ==================================

Memory: the state is ``dict[offer id, Cell]`` where the Cell tuples are shared (interned),
so an open offer costs its id string plus one dict slot (measured in benchmarks/).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from jobpulse.delta import Cell
from jobpulse.store import PartitionProgress

from .items import DELETE, REJECTED, DeltaRecord, Record

#: Buckets per offers partition. Part of the recovery store's layout: the runner refuses a
#: recovery store made with another value.
BUCKETS_PER_PARTITION = 64


def bucket_of(key: bytes | None) -> int:
    """The bucket of an offer id (UTF-8): stable across processes and restarts."""
    return zlib.crc32(key) % BUCKETS_PER_PARTITION if key else 0


@dataclass(slots=True)
class PartitionState:
    """Open offers of one bucket of an offers partition, and the bucket's counters."""

    open: dict[str, Cell] = field(default_factory=dict)
    #: Next offset to apply; records below it were already applied (replays are skipped).
    offset: int = 0
    records: int = 0
    dlq: int = 0
    unknown_deletes: int = 0

    def apply(self, records: list[Record]) -> list[DeltaRecord]:
        """Apply records of this partition in offset order; return the deltas they cause."""
        deltas: list[DeltaRecord] = []
        emit = deltas.append
        open_offers = self.open
        for offset, event_ms, offer_id, kind, cell in records:
            if offset < self.offset:
                continue  # already applied before a restart: never apply a record twice
            self.offset = offset + 1
            self.records += 1
            if kind == REJECTED:
                self.dlq += 1
                continue
            assert offer_id is not None
            if kind == DELETE:
                old = open_offers.pop(offer_id, None)
                if old is None:
                    self.unknown_deletes += 1
                else:
                    emit((-1, old, offer_id, offset, 0, event_ms))
                continue
            assert cell is not None
            old = open_offers.get(offer_id)
            if old is None:
                open_offers[offer_id] = cell
                emit((1, cell, offer_id, offset, 0, event_ms))
            elif old != cell:
                open_offers[offer_id] = cell
                emit((-1, old, offer_id, offset, 0, event_ms))
                emit((1, cell, offer_id, offset, 1, event_ms))
        return deltas

    def progress(self, late: int = 0) -> PartitionProgress:
        return PartitionProgress(
            offset=self.offset,
            records=self.records,
            dlq=self.dlq,
            unknown_deletes=self.unknown_deletes,
            late=late,
        )

    def snapshot(self) -> tuple[dict[str, Cell], int, int, int, int]:
        """An immutable copy for the recovery store (the dict is copied, values are tuples)."""
        return (self.open.copy(), self.offset, self.records, self.dlq, self.unknown_deletes)

    @classmethod
    def restore(cls, snapshot: tuple[dict[str, Cell], int, int, int, int] | None) -> PartitionState:
        if snapshot is None:
            return cls()
        open_offers, offset, records, dlq, unknown_deletes = snapshot
        return cls(open_offers, offset, records, dlq, unknown_deletes)
