"""The per-offer state as plain dicts: the model :class:`~.open_offers.ShardState` must match.

This was jobpulse's state before the compact layout (docs/scale.md): ``open`` and ``closed``
dicts keyed by the offer key, ≈ 115 bytes per open offer. It is kept, unchanged in behaviour,
as the reference the compact state is tested against (``tests/test_compact_state.py`` runs
random operation sequences through both) and as the "before" of ``benchmarks/scale.py``.
The semantics are the module doc of :mod:`.open_offers`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jobpulse.delta import Cell
from jobpulse.offer_row import PARTITION_BITS
from jobpulse.store import PartitionProgress

from .items import DELETE, REJECTED, DeltaRecord, Record
from .open_offers import offer_key

_CODE_BITS = 32
_CODE_MASK = (1 << _CODE_BITS) - 1
_PARTITION_BITS = PARTITION_BITS
_NEXT, _NEWEST = 0, 1
_RECORDS, _DLQ, _UNKNOWN_DELETES, _STALE = 1, 2, 3, 4

#: What :meth:`ReferenceShardState.snapshot` returns.
ReferenceSnapshot = tuple[
    dict[int, int], dict[int, int], list[Cell], dict[int, tuple[int, int]], int
]


@dataclass(slots=True)
class ReferenceShardState:
    """The plain-dict model: open offers and tombstones in two dicts keyed by offer key."""

    #: offer key → packed ``version << 32 | cell code``.
    open: dict[int, int] = field(default_factory=dict)
    #: offer key → version of the delete that closed it (or of a delete of an unknown offer).
    closed: dict[int, int] = field(default_factory=dict)
    #: cell code → cell; codes are per shard and only ever appended.
    cells: list[Cell] = field(default_factory=list)
    codes: dict[Cell, int] = field(default_factory=dict)
    #: offers partition → [next offset to apply, newest order time seen from it].
    partitions: dict[int, list[int]] = field(default_factory=dict)
    #: Order time up to which tombstones were last swept.
    swept_ms: int = -1

    def apply(
        self, records: list[Record], tombstone_ms: int, partition_count: int = 1
    ) -> tuple[list[DeltaRecord], dict[int, PartitionProgress]]:
        """Apply records (each partition's in offset order); return the deltas they cause
        and, per partition, the counter increments and the next offset.

        ``tombstone_ms``: how long tombstones are kept; ``partition_count``: the offers
        topic's partitions, all of which must be past a tombstone before it expires.
        """
        deltas: list[DeltaRecord] = []
        emit = deltas.append
        #: partition → [next offset, records, dlq, unknown deletes, stale]
        tallies: dict[int, list[int]] = {}
        open_offers, closed, partitions = self.open, self.closed, self.partitions
        for partition, offset, order_ms, event_ms, offer_id, kind, cell, key in records:
            seen = partitions.get(partition)
            if seen is None:
                seen = partitions[partition] = [0, -1]
            if offset < seen[_NEXT]:
                continue  # already applied before a restart: never apply a record twice
            seen[_NEXT] = offset + 1
            if order_ms > seen[_NEWEST]:
                seen[_NEWEST] = order_ms
            tally = tallies.get(partition)
            if tally is None:
                tally = tallies[partition] = [0, 0, 0, 0, 0]
            tally[_NEXT] = offset + 1
            tally[_RECORDS] += 1
            if kind == REJECTED:
                tally[_DLQ] += 1
                continue
            assert offer_id is not None
            version = (order_ms << _PARTITION_BITS) | partition
            old = open_offers.get(key)
            if kind == DELETE:
                if old is not None:
                    if version < old >> _CODE_BITS:
                        tally[_STALE] += 1
                        continue
                    del open_offers[key]
                    closed[key] = version
                    old_cell = self.cells[old & _CODE_MASK]
                    emit((-1, old_cell, offer_id, partition, offset, 0, event_ms))
                    continue
                tombstone = closed.get(key)
                if tombstone is not None and version < tombstone:
                    tally[_STALE] += 1
                    continue
                closed[key] = version
                tally[_UNKNOWN_DELETES] += 1
                continue
            assert cell is not None
            code = self.codes.get(cell)
            if code is None:
                code = self.codes[cell] = len(self.cells)
                self.cells.append(cell)
            if old is None:
                tombstone = closed.get(key)
                if tombstone is not None:
                    if version < tombstone:
                        tally[_STALE] += 1
                        continue
                    del closed[key]
                open_offers[key] = (version << _CODE_BITS) | code
                emit((1, cell, offer_id, partition, offset, 0, event_ms))
                continue
            if version < old >> _CODE_BITS:
                tally[_STALE] += 1
                continue
            open_offers[key] = (version << _CODE_BITS) | code
            old_code = old & _CODE_MASK
            if old_code != code:
                emit((-1, self.cells[old_code], offer_id, partition, offset, 0, event_ms))
                emit((1, cell, offer_id, partition, offset, 1, event_ms))
        if closed:
            self._expire_tombstones(tombstone_ms, partition_count)
        counts = {
            partition: PartitionProgress(
                offset=t[_NEXT],
                records=t[_RECORDS],
                dlq=t[_DLQ],
                unknown_deletes=t[_UNKNOWN_DELETES],
                stale=t[_STALE],
            )
            for partition, t in tallies.items()
        }
        return deltas, counts

    def _expire_tombstones(self, tombstone_ms: int, partition_count: int) -> None:
        """Drop tombstones no stale record can need any more (see the module doc).

        Sweeps at most once per quarter of the tombstone time of progress, so the cost is
        O(tombstones) a few times per tombstone time, not per batch.
        """
        partitions = self.partitions
        if len(partitions) < max(partition_count, max(partitions) + 1):
            return  # a partition has delivered nothing to this shard yet
        horizon = min(seen[_NEWEST] for seen in partitions.values()) - tombstone_ms
        if horizon < 0 or horizon < self.swept_ms + tombstone_ms // 4:
            return
        limit = (horizon + 1) << _PARTITION_BITS  # versions below it are older than horizon
        self.closed = {k: v for k, v in self.closed.items() if v >= limit}
        self.swept_ms = horizon

    def cell_of(self, offer_id: str) -> Cell | None:
        """The cell an open offer is counted in (None if it is not open)."""
        packed = self.open.get(offer_key(offer_id.encode()))
        return None if packed is None else self.cells[packed & _CODE_MASK]

    def snapshot(self) -> ReferenceSnapshot:
        """An immutable copy for the recovery store (dicts and lists copied; values are ints)."""
        return (
            self.open.copy(),
            self.closed.copy(),
            list(self.cells),
            {p: tuple(seen) for p, seen in self.partitions.items()},
            self.swept_ms,
        )

    @classmethod
    def restore(cls, snapshot: ReferenceSnapshot | None) -> ReferenceShardState:
        if snapshot is None:
            return cls()
        open_offers, closed, cells, partitions, swept_ms = snapshot
        return cls(
            open_offers,
            closed,
            list(cells),
            {cell: code for code, cell in enumerate(cells)},
            {p: list(seen) for p, seen in partitions.items()},
            swept_ms,
        )
