"""Per-offer state: which cell each open offer is counted in, and the deltas it causes.

**Owned by the offer id.** The state is keyed by :func:`offer_key`, a 128-bit hash of the
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

**Memory.** Per offer the state holds one fixed-width entry of 28 bytes: the key (the id's
128-bit BLAKE2b hash, as two ``uint64``), the version (``uint64``) and a ``uint32`` code —
the offer's cell in the shard's small table of cells, or *tombstone* — in sorted numpy arrays
(:mod:`.compact_state`), whatever the length of the id; a tombstone is an entry like any
other. Entries changed since the shard's last flush sit in a small dict (the *overlay*), on
which every transition above runs; each batch first copies the entries of its keys from the
arrays into it (one vectorised search per run). Two of 100 M distinct ids share a key with
probability ≈ n²/2¹²⁹ ≈ 1.5·10⁻²³; two offers that did would be counted as one, and BLAKE2b
makes colliding ids infeasible to construct on purpose. The layout, its files in the
recovery store and its measured cost: docs/scale.md.
"""

from __future__ import annotations

from hashlib import blake2b
from pathlib import Path
from typing import Any

from jobpulse.delta import Cell
from jobpulse.offer_row import PARTITION_BITS
from jobpulse.store import PartitionProgress

from .compact_state import (
    ABSENT_VALUE,
    CODE_BITS,
    CODE_MASK,
    TOMBSTONE,
    Durable,
    Retired,
    RunRef,
    RunStack,
    lookup,
    run_from,
    shard_directory,
)
from .items import DELETE, REJECTED, DeltaRecord, Record

#: State shards. Part of the recovery store's layout (the runner refuses a store made with
#: another value) and the most workers a cluster can usefully have.
SHARDS = 256

#: Bits of the offer key (the BLAKE2b digest size × 8). Tests shrink it to show collisions.
KEY_BITS = 128

#: Bits of a packed value below the version: the cell code (or TOMBSTONE).
_CODE_BITS = CODE_BITS
_CODE_MASK = CODE_MASK
#: Bits of a version below the order time: the partition (the offer-row contract's rule).
_PARTITION_BITS = PARTITION_BITS

#: A snapshot writes the overlay to a run (a file) once it holds this many entries; below,
#: the entries travel inside the snapshot (≤ ~5 kB per shard).
FLUSH_AT = 128
#: Between snapshots (a long epoch), the overlay is turned into an in-memory run beyond this.
OVERLAY_MAX = 4096

#: Per partition in :attr:`ShardState.partitions`: [next offset, newest order time].
_NEXT, _NEWEST = 0, 1
#: Per partition in a batch's tallies: [next offset, records, dlq, unknown deletes, stale].
_RECORDS, _DLQ, _UNKNOWN_DELETES, _STALE = 1, 2, 3, 4

#: Tag of the snapshot format (a tuple, pickled by Bytewax into the recovery store).
_SNAPSHOT_FORMAT = "compact-1"

#: What :meth:`ShardState.snapshot` returns: (format, shard, cells, partitions, swept_ms,
#: live tombstones, overlay, runs, merged-away files awaiting deletion).
ShardSnapshot = tuple[
    str,
    int | None,
    list[Cell],
    dict[int, tuple[int, int]],
    int,
    int,
    dict[int, int],
    list[RunRef],
    list[Retired],
]


#: Copied for each id: ``blake2b(id, digest_size=16)`` would build a dict for its keyword.
_BLAKE2B_128 = blake2b(digest_size=KEY_BITS // 8)


def offer_key(offer_id: bytes, bits: int = KEY_BITS) -> int:
    """The state's key of an offer id (UTF-8): its 128-bit BLAKE2b hash, as an int (``bits``
    < 128 keeps the low bits: only tests do that, to make collisions happen)."""
    hasher = _BLAKE2B_128.copy()
    hasher.update(offer_id)
    key = int.from_bytes(hasher.digest(), "little")
    return key if bits >= KEY_BITS else key & ((1 << bits) - 1)


def shard_of(offer_id: bytes | None) -> int:
    """The shard of an offer id (UTF-8; a rejected record's Kafka key): stable across
    processes, restarts and versions. The same as ``offer_key(offer_id) % SHARDS``."""
    return offer_key(offer_id) % SHARDS if offer_id else 0


class ShardState:
    """The offers of one shard: open ones and recent tombstones (runs + overlay), the cell
    table, and per-partition progress."""

    __slots__ = (
        "cells",
        "codes",
        "overlay",
        "partitions",
        "root",
        "runs",
        "shard",
        "swept_ms",
        "tombstones",
    )

    def __init__(self, root: Path | None = None) -> None:
        #: offer key → packed ``version << 32 | code`` (code TOMBSTONE: closed) or
        #: ABSENT_VALUE, for the keys changed since the last flush.
        self.overlay: dict[int, int] = {}
        #: Everything flushed before, oldest run first (:mod:`.compact_state`).
        self.runs = RunStack()
        #: cell code → cell; codes are per shard and only ever appended.
        self.cells: list[Cell] = []
        self.codes: dict[Cell, int] = {}
        #: offers partition → [next offset to apply, newest order time seen from it].
        self.partitions: dict[int, list[int]] = {}
        #: Order time up to which tombstones were last swept.
        self.swept_ms = -1
        #: Live tombstones (exact: expiry sweeps only when there are any, as the model).
        self.tombstones = 0
        #: The recovery store (run files go under it; None: runs stay in memory/snapshots).
        self.root = root
        #: This state's shard, known from its first batch or its snapshot.
        self.shard: int | None = None

    def bind(self, shard: int) -> None:
        """Learn the shard (from the first batch): where its files go."""
        if self.shard is None:
            self.shard = shard
            self.runs.directory = shard_directory(self.root, shard)

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
        overlay, partitions = self.overlay, self.partitions
        fetched = self._fetch(records) if self.runs.runs else None
        get = overlay.get
        tombstones = self.tombstones
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
            # old: the open offer's packed value; tombstone: the version of its tombstone
            # (one entry holds either, as the model's disjoint ``open``/``closed`` dicts).
            old = get(key)
            tombstone = None
            if old is not None and (old < 0 or old & _CODE_MASK == TOMBSTONE):
                if old >= 0:
                    tombstone = old >> _CODE_BITS
                old = None
            if kind == DELETE:
                if old is not None:
                    if version < old >> _CODE_BITS:
                        tally[_STALE] += 1
                        continue
                    overlay[key] = (version << _CODE_BITS) | TOMBSTONE
                    tombstones += 1
                    old_cell = self.cells[old & _CODE_MASK]
                    emit((-1, old_cell, offer_id, partition, offset, 0, event_ms))
                    continue
                if tombstone is not None and version < tombstone:
                    tally[_STALE] += 1
                    continue
                if tombstone is None:
                    tombstones += 1
                overlay[key] = (version << _CODE_BITS) | TOMBSTONE
                tally[_UNKNOWN_DELETES] += 1
                continue
            assert cell is not None
            code = self.codes.get(cell)
            if code is None:
                code = self.codes[cell] = len(self.cells)
                self.cells.append(cell)
            if old is None:
                if tombstone is not None:
                    if version < tombstone:
                        tally[_STALE] += 1
                        continue
                    tombstones -= 1
                overlay[key] = (version << _CODE_BITS) | code
                emit((1, cell, offer_id, partition, offset, 0, event_ms))
                continue
            if version < old >> _CODE_BITS:
                tally[_STALE] += 1
                continue
            overlay[key] = (version << _CODE_BITS) | code
            old_code = old & _CODE_MASK
            if old_code != code:
                emit((-1, self.cells[old_code], offer_id, partition, offset, 0, event_ms))
                emit((1, cell, offer_id, partition, offset, 1, event_ms))
        self.tombstones = tombstones
        if fetched:
            # Entries only read stay in the runs: the overlay keeps what changed.
            for key, value in fetched.items():
                if overlay[key] == value:
                    del overlay[key]
        if tombstones:
            self._expire_tombstones(tombstone_ms, partition_count)
        if len(overlay) >= OVERLAY_MAX:
            self._flush()
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

    def _fetch(self, records: list[Record]) -> dict[int, int]:
        """Copy the runs' entries of the batch's keys into the overlay (one vectorised
        search per run, not one per record); return what was copied."""
        overlay = self.overlay
        wanted = dict.fromkeys(r[7] for r in records if r[5] != REJECTED and r[7] not in overlay)
        found = lookup(self.runs.runs, list(wanted))
        overlay.update(found)
        return found

    def _flush(self) -> None:
        """The overlay becomes the newest run (merged down while runs are of similar size)."""
        if self.overlay:
            self.runs.add(run_from(self.overlay))
            self.overlay = {}

    def _expire_tombstones(self, tombstone_ms: int, partition_count: int) -> None:
        """Drop tombstones no stale record can need any more (see the module doc).

        Sweeps at most once per quarter of the tombstone time of progress. Tombstones in the
        overlay become ABSENT entries (they hide the runs' older entries of their key); the
        runs' are marked expired by version (read as ABSENT, dropped by the next merge).
        """
        partitions = self.partitions
        if len(partitions) < max(partition_count, max(partitions) + 1):
            return  # a partition has delivered nothing to this shard yet
        horizon = min(seen[_NEWEST] for seen in partitions.values()) - tombstone_ms
        if horizon < 0 or horizon < self.swept_ms + tombstone_ms // 4:
            return
        limit = (horizon + 1) << _PARTITION_BITS  # versions below it are older than horizon
        overlay = self.overlay
        due = [
            key
            for key, value in overlay.items()
            if value >= 0 and value & _CODE_MASK == TOMBSTONE and value >> _CODE_BITS < limit
        ]
        expired = len(due) + self.runs.expire(limit, overlay)
        for key in due:
            overlay[key] = ABSENT_VALUE
        self.tombstones -= expired
        self.swept_ms = horizon

    def state_of(self, key: int) -> int | None:
        """The packed entry of a key (open or tombstone), None if it has none."""
        value = self.overlay.get(key)
        if value is None:
            value = lookup(self.runs.runs, [key]).get(key)
        return None if value is None or value < 0 else value

    def cell_of(self, offer_id: str) -> Cell | None:
        """The cell an open offer is counted in (None if it is not open)."""
        packed = self.state_of(offer_key(offer_id.encode()))
        if packed is None or packed & _CODE_MASK == TOMBSTONE:
            return None
        return self.cells[packed & _CODE_MASK]

    def tombstone_of(self, key: int) -> int | None:
        """The version of a key's tombstone (None: the key is open or has no entry)."""
        packed = self.state_of(key)
        if packed is None or packed & _CODE_MASK != TOMBSTONE:
            return None
        return packed >> _CODE_BITS

    def entries(self) -> dict[int, int]:
        """Every key's packed entry, open and tombstones, as the model's ``open`` and
        ``closed`` together (O(state) in Python: for tests and small benchmarks)."""
        merged = self.runs.items()
        merged.update(self.overlay)
        return {key: value for key, value in merged.items() if value >= 0}

    def open_keys(self) -> list[int]:
        """The keys of the open offers (O(state): for tests)."""
        return [k for k, v in self.entries().items() if v & _CODE_MASK != TOMBSTONE]

    def __len__(self) -> int:
        """Entries held, counting a key once per run and the overlay (memory, not offers)."""
        return len(self.runs) + len(self.overlay)

    def snapshot(self) -> ShardSnapshot | Durable:
        """What the recovery store keeps: the overlay's entries (written to a run file
        instead once there are :data:`FLUSH_AT`), the names of the run files, the cells and
        the partitions' progress — proportional to what changed, not to the state. A
        :class:`~.compact_state.Durable` while files it names are not written yet."""
        if len(self.overlay) >= FLUSH_AT:
            self._flush()
        runs, pending = self.runs.refs()
        snapshot: ShardSnapshot = (
            _SNAPSHOT_FORMAT,
            self.shard,
            list(self.cells),
            {p: (seen[_NEXT], seen[_NEWEST]) for p, seen in self.partitions.items()},
            self.swept_ms,
            self.tombstones,
            self.overlay.copy(),
            runs,
            list(self.runs.retired),
        )
        return Durable(snapshot, pending) if pending else snapshot

    @classmethod
    def restore(cls, snapshot: Any | None, root: Path | None = None) -> ShardState:
        """The state a snapshot describes; its run files are mapped on first use."""
        state = cls(root)
        if snapshot is None:
            return state
        if not (isinstance(snapshot, tuple) and snapshot[0] == _SNAPSHOT_FORMAT):
            raise ValueError("a snapshot of another state layout (see jobpulse-layout.json)")
        _, shard, cells, partitions, swept_ms, tombstones, overlay, runs, retired = snapshot
        state.shard = shard
        state.cells = list(cells)
        state.codes = {cell: code for code, cell in enumerate(cells)}
        state.partitions = {p: list(seen) for p, seen in partitions.items()}
        state.swept_ms = swept_ms
        state.tombstones = tombstones
        state.overlay = dict(overlay)
        state.runs = RunStack.restore(runs, shard_directory(root, shard), retired)
        return state
