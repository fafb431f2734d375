"""Per-offer state: which cell each open offer is counted in, and the deltas it causes.

**Owned by the offer id.** The state is keyed by :func:`offer_key`, a 120-bit hash of the
offer id taken from the record's *value*, never from the Kafka key or partition, and split
into :data:`SHARDS` shards by that key (:func:`shard_of`). Every record of an offer
therefore meets the same :class:`ShardState`, whatever partition it was written to:
keyless records, a grown offers topic (keys re-hash) and producers with different
partitioners (librdkafka's CRC32, Java's murmur2) all stay exact.
A shard is one Bytewax state key, so Bytewax routes it to one worker of any cluster size and
snapshots only the shards a batch touched.

**Which record wins.** Every record carries a *version* ``(order time, partition)`` where the
order time is the record's Kafka timestamp made non-decreasing within its partition by the
source (:class:`~jobpulse.dataflows.kafka_io.OffersSource`). So:

- within one partition, offset order decides (later records never have a smaller version);
- across partitions there is no Kafka order, so the record timestamp decides, and on an
  equal millisecond the higher partition number — an arbitrary but fixed rule, so a replay
  or a recount reading the partitions in another interleaving ends in the same state.

A record whose version is older than the offer's last applied one is **stale**: it changes
nothing and is counted (``stale`` in the partition stats). A delete leaves a **tombstone**
(its version) so that a stale upsert cannot re-open the offer. Transitions:

=========================  =============================  ==================================
record                     offer state before             deltas
=========================  =============================  ==================================
upsert                     not open (no newer tombstone)  +1 new cell
upsert, same cell          open in that cell              none (identical re-send)
upsert, other cell         open in the old cell           -1 old cell (n=0), +1 new (n=1)
delete                     open                           -1 its cell; tombstone
delete                     not open                       none; ``unknown_deletes`` += 1;
                                                          tombstone
any, older version         open or tombstoned             none; ``stale`` += 1
rejected (DLQ)             —                              none; ``dlq`` += 1
=========================  =============================  ==================================

**Tombstones expire** once every offers partition (all the topic has, and any this shard
has seen) has delivered to this shard a record at least ``tombstone_ms`` newer than the
tombstone. A later record of a partition is never older than what that partition already
delivered, so a tombstone only goes once no stale record can still need it: the result does
not depend on how fast each partition is read. A partition that receives nothing holds
expiry back (its tombstones stay in memory until it does).

**Memory.** ``open`` maps the offer's key to one int packing ``(order time, partition, cell
code)``; the cell code indexes the shard's small table of cells. An open offer costs a
dict slot and two ints (≈ 115 bytes, measured in ``benchmarks/throughput.py``), whatever
the length of its id; a tombstone the same. The key is the id's 120-bit BLAKE2b hash: a
40-byte int (120 bits are four of CPython's 30-bit digits; 128 would take five) where the
id string took 49 bytes plus its length. Two of 100 M distinct ids share a key with
probability ≈ n²/2¹²¹ ≈ 4·10⁻²¹, and BLAKE2b makes colliding ids infeasible to construct
on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from hashlib import blake2b

from jobpulse.delta import Cell
from jobpulse.offer_row import PARTITION_BITS
from jobpulse.store import PartitionProgress

from .items import DELETE, REJECTED, DeltaRecord, Record

#: State shards. Part of the recovery store's layout (the runner refuses a store made with
#: another value) and the most workers a cluster can usefully have.
SHARDS = 256

#: Bits of a packed value below the version: the cell code.
_CODE_BITS = 32
_CODE_MASK = (1 << _CODE_BITS) - 1
#: Bits of a version below the order time: the partition (the offer-row contract's rule).
_PARTITION_BITS = PARTITION_BITS

#: Per partition in :attr:`ShardState.partitions`: [next offset, newest order time].
_NEXT, _NEWEST = 0, 1
#: Per partition in a batch's tallies: [next offset, records, dlq, unknown deletes, stale].
_RECORDS, _DLQ, _UNKNOWN_DELETES, _STALE = 1, 2, 3, 4


#: What :meth:`ShardState.snapshot` returns (pickled into the recovery store).
ShardSnapshot = tuple[dict[int, int], dict[int, int], list[Cell], dict[int, tuple[int, int]], int]


def offer_key(offer_id: bytes) -> int:
    """The state's key of an offer id (UTF-8): its 120-bit BLAKE2b hash, as an int (120 bits:
    four of CPython's 30-bit digits, a 40-byte int)."""
    return int.from_bytes(blake2b(offer_id, digest_size=15).digest(), "little")


def shard_of(offer_id: bytes | None) -> int:
    """The shard of an offer id (UTF-8; a rejected record's Kafka key): stable across
    processes, restarts and versions. The same as ``offer_key(offer_id) % SHARDS``."""
    return offer_key(offer_id) % SHARDS if offer_id else 0


@dataclass(slots=True)
class ShardState:
    """The offers of one shard: open ones, recent tombstones, and per-partition progress."""

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

    def snapshot(self) -> ShardSnapshot:
        """An immutable copy for the recovery store (dicts and lists copied; values are ints)."""
        return (
            self.open.copy(),
            self.closed.copy(),
            list(self.cells),
            {p: tuple(seen) for p, seen in self.partitions.items()},
            self.swept_ms,
        )

    @classmethod
    def restore(cls, snapshot: ShardSnapshot | None) -> ShardState:
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
