"""The dataflow's steps: what :mod:`.flow` wires, in the order of the diagram.

Each step is a small callable (``flat_map_batch``/``map``) or a Bytewax
``StatefulBatchLogic`` that adapts chunks to the pure logic in :mod:`.open_offers`,
:mod:`.counting` and :mod:`.geocoding`; none of them does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from time import perf_counter
from typing import Any

from bytewax.operators import StatefulBatchLogic

from jobpulse import metrics
from jobpulse.delta import Cell, DeltaEncoder
from jobpulse.offer import UNKNOWN, InvalidOffer, Offer, Op, parse_offer
from jobpulse.offer_row import OfferRow, version_of
from jobpulse.settings import Settings
from jobpulse.store import PartitionProgress

from . import geocoding
from .counting import CellCounter, preaggregate
from .dlq import dlq_headers
from .items import (
    DELETE,
    REJECTED,
    UPSERT,
    CellChange,
    CellUpdate,
    DeltaRecord,
    DlqBatch,
    EnrichedChunk,
    OutMessage,
    ParsedChunk,
    RawChunk,
    Record,
    RowBatch,
    StateOutput,
)
from .open_offers import SHARDS, ShardState, shard_of
from .open_offers import offer_key as key_of
from .professions import category_of

# -- parse -------------------------------------------------------------------------------


def is_dlq_batch(item: Any) -> bool:
    return isinstance(item, DlqBatch)


def dlq_messages(batch: DlqBatch) -> list[OutMessage]:
    return batch.messages


#: A ``published_at`` further than this after the record's own timestamp is not trusted as
#: event time (the record timestamp is used): one far-future date would otherwise make its
#: cell's newest window jump ahead and every later delta of that cell late.
MAX_EVENT_AHEAD_MS = 3600 * 1000


class Parser:
    """Raw chunks → parsed chunks (rejected records kept as markers) + one DLQ batch.

    Event time: ``published_at``, else (or if it is more than :data:`MAX_EVENT_AHEAD_MS` after
    the record's order time) the record's order time (its timestamp, never below an earlier
    record's of the same partition).
    """

    def __init__(self, topic: str) -> None:
        self.topic = topic

    def __call__(self, chunks: list[RawChunk]) -> list[ParsedChunk | DlqBatch]:
        out: list[ParsedChunk | DlqBatch] = []
        rejected: list[OutMessage] = []
        for partition, raw_records in chunks:
            records: list[tuple[int, int, int, Any, bytes | None]] = []
            for offset, order_ms, key, value, headers in raw_records:
                try:
                    offer = parse_offer(key, value)
                except InvalidOffer as error:
                    rejected.append(
                        (key, value, dlq_headers(self.topic, partition, offset, error, headers))
                    )
                    records.append((offset, order_ms, order_ms, None, key))
                    continue
                event_ms = offer.published_at_ms
                if event_ms is None or event_ms > order_ms + MAX_EVENT_AHEAD_MS:
                    event_ms = order_ms
                records.append((offset, order_ms, event_ms, offer, key))
            out.append(ParsedChunk(partition, records))
        if rejected:
            out.append(DlqBatch(rejected))
        return out


# -- enrich ------------------------------------------------------------------------------


class Enricher:
    """Parsed chunks → ``("<shard>", EnrichedChunk)``, geocoding in one query per batch.

    Records are regrouped by the shard of their offer id (from the value; a rejected record
    goes to the shard of its key), keeping each partition's records in offset order. With
    ``rows``, also one :class:`RowBatch` per batch: every valid record as an offer row (the
    PostgreSQL sink's input, with the category and continent counted here).
    """

    #: Interned cells, so the records of a batch share one tuple per cell.
    MAX_INTERNED = 100_000

    def __init__(self, professions: dict[int, str], *, rows: bool = False) -> None:
        self.professions = professions
        self.rows = rows
        self.cells: dict[Cell, Cell] = {}

    def __call__(self, chunks: list[ParsedChunk]) -> list[tuple[str, EnrichedChunk] | RowBatch]:
        coordinates = [
            (offer.latitude, offer.longitude)
            for chunk in chunks
            for _, _, _, offer, _ in chunk.records
            if offer is not None and offer.op is Op.UPSERT and offer.latitude is not None
        ]
        continents = iter(geocoding.continents(coordinates))
        professions = self.professions
        rows: list[OutMessage] | None = [] if self.rows else None
        shards: dict[int, list[Record]] = {}
        for partition, parsed in chunks:
            for offset, order_ms, event_ms, offer, key in parsed:
                if offer is None:
                    shard = shard_of(key)
                    record: Record = (
                        partition,
                        offset,
                        order_ms,
                        event_ms,
                        None,
                        REJECTED,
                        None,
                        0,
                    )
                else:
                    offer_key = key_of(offer.id.encode())
                    shard = offer_key % SHARDS
                    if offer.op is Op.DELETE:
                        kind, cell = DELETE, None
                    else:
                        continent = next(continents) if offer.latitude is not None else UNKNOWN
                        category = category_of(offer.category, offer.profession_id, professions)
                        kind, cell = UPSERT, self._intern(category, continent)
                    record = (
                        partition,
                        offset,
                        order_ms,
                        event_ms,
                        offer.id,
                        kind,
                        cell,
                        offer_key,
                    )
                    if rows is not None:
                        rows.append(offer_row(offer, cell, partition, offset, order_ms, event_ms))
                records = shards.get(shard)
                if records is None:
                    records = shards[shard] = []
                records.append(record)
        out: list[tuple[str, EnrichedChunk] | RowBatch] = [
            (str(shard), EnrichedChunk(shard, records)) for shard, records in shards.items()
        ]
        if rows:
            out.append(RowBatch(rows))
        return out

    def _intern(self, category: str, continent: str) -> Cell:
        # A plain tuple finds the equal Cell key without building a Cell first.
        shared = self.cells.get((category, continent))  # type: ignore[call-overload]
        if shared is not None:
            return shared
        cell = Cell(category, continent)
        if len(self.cells) < self.MAX_INTERNED:
            self.cells[cell] = cell
        return cell


def offer_row(
    offer: Offer, cell: Cell | None, partition: int, offset: int, order_ms: int, event_ms: int
) -> OutMessage:
    """The rows-topic message of one valid record (a delete: only the id and its source)."""
    version = version_of(order_ms, partition)
    if cell is None:
        row = OfferRow(offer.id, "delete", event_ms, partition, offset, order_ms, version)
    else:
        row = OfferRow(
            offer.id,
            "upsert",
            event_ms,
            partition,
            offset,
            order_ms,
            version,
            category=cell[0],
            continent=cell[1],
            latitude=offer.latitude,
            longitude=offer.longitude,
            profession_id=offer.profession_id,
            name=offer.name,
            contract_type=offer.contract_type,
            published_at_ms=offer.published_at_ms,
        )
    return (row.key(), row.to_json(), None)


def is_row_batch(item: Any) -> bool:
    return isinstance(item, RowBatch)


def row_messages(batch: RowBatch) -> list[OutMessage]:
    return batch.messages


# -- per-offer state ---------------------------------------------------------------------


#: One batch of one shard (the state's share of ``jobpulse_dataflow_batch_seconds``).
_OPEN_OFFERS_SECONDS = metrics.BATCH_SECONDS.labels("open_offers")


def timed(step: str, function: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``function`` (a batch step), its time per batch observed in
    ``jobpulse_dataflow_batch_seconds{step=...}``: two clock reads per batch, not per item."""
    seconds = metrics.BATCH_SECONDS.labels(step)

    def run(batch: Any) -> Any:
        started = perf_counter()
        try:
            return function(batch)
        finally:
            seconds.observe(perf_counter() - started)

    return run


class OpenOffersLogic(StatefulBatchLogic[EnrichedChunk, StateOutput, Any]):
    """Keyed by the offer-id shard: that shard's offers (see :mod:`.open_offers`)."""

    def __init__(self, state: ShardState, tombstone_ms: int, partitions: int) -> None:
        self.state = state
        self.tombstone_ms = tombstone_ms
        self.partitions = partitions

    @classmethod
    def builder(cls, tombstone_ms: int, partitions: int, recovery_dir: Path | None = None) -> Any:
        """``recovery_dir``: where the shards write their run files (the recovery store;
        None: they stay in memory and travel inside the snapshots, e.g. in tests)."""

        def build(resume: Any | None) -> OpenOffersLogic:
            return cls(ShardState.restore(resume, recovery_dir), tombstone_ms, partitions)

        return build

    def on_batch(self, values: list[EnrichedChunk]) -> tuple[Iterable[StateOutput], bool]:
        started = perf_counter()
        self.state.bind(values[0].shard)
        rule = (self.tombstone_ms, self.partitions)
        deltas: list[DeltaRecord] = []
        counts: dict[int, PartitionProgress] = {}
        for chunk in values:
            chunk_deltas, chunk_counts = self.state.apply(chunk.records, *rule)
            deltas.extend(chunk_deltas)
            _add_counts(counts, chunk_counts)
        _OPEN_OFFERS_SECONDS.observe(perf_counter() - started)
        return [StateOutput(deltas, counts)], StatefulBatchLogic.RETAIN

    def snapshot(self) -> Any:
        started = perf_counter()
        snapshot = self.state.snapshot()
        metrics.SNAPSHOT_SECONDS.observe(perf_counter() - started)
        return snapshot


def _add_counts(total: dict[int, PartitionProgress], more: dict[int, PartitionProgress]) -> None:
    for partition, counts in more.items():
        seen = total.get(partition)
        total[partition] = counts if seen is None else seen.plus(counts)


class DeltaSerializer:
    """State outputs → one list of deltas-topic messages (key offer id, JSON Delta).

    The values come from :class:`jobpulse.delta.DeltaEncoder`, the delta contract's own
    encoder (no Delta object per message).
    """

    def __init__(self, settings: Settings) -> None:
        self.encoder = DeltaEncoder(settings.offers_topic)

    def __call__(self, items: list[tuple[str, StateOutput]]) -> list[list[OutMessage]]:
        messages: list[OutMessage] = []
        for _, output in items:
            messages += self.encoder.messages(output.deltas)
        return [messages] if messages else []


# -- counting ----------------------------------------------------------------------------


def cell_key(cell: Cell) -> str:
    """The stateful key of a cell (unit separator: cannot clash for any names)."""
    return f"{cell.category}\x1f{cell.continent}"


class Preaggregator:
    """State outputs of a batch → one ``(cell key, (cell, CellChange))`` per touched cell."""

    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms

    def __call__(self, items: list[tuple[str, StateOutput]]) -> list[tuple[str, Any]]:
        changes = preaggregate([output for _, output in items], self.window_ms)
        return [(cell_key(cell), (cell, change)) for cell, change in changes.items()]


class Refresh:
    """When a logic re-emits its whole absolute state: every ``interval`` of wall time.

    The dataflow owns the Redis view, so keys deleted or changed there by anyone come back
    within one interval (and a restarted run rewrites everything it holds).
    """

    def __init__(self, interval: timedelta) -> None:
        self.interval = interval
        self.due = datetime.now(UTC) + interval

    def fired(self) -> None:
        self.due = datetime.now(UTC) + self.interval


class CellCountLogic(StatefulBatchLogic[tuple[Cell, CellChange], CellUpdate, Any]):
    """Keyed by cell: absolute open-offer count and retained windows."""

    def __init__(
        self, cell: Cell | None, counter: CellCounter, window_ms: int, refresh: timedelta
    ) -> None:
        self.cell = cell
        self.counter = counter
        self.window_ms = window_ms
        self.refresh = Refresh(refresh)

    @classmethod
    def builder(cls, window_ms: int, refresh: timedelta) -> Any:
        def build(resume: Any | None) -> CellCountLogic:
            if resume is None:
                return cls(None, CellCounter(), window_ms, refresh)
            cell, counter = resume
            restored = CellCounter.restore(counter)
            return cls(Cell(*cell) if cell else None, restored, window_ms, refresh)

        return build

    def on_batch(self, values: list[tuple[Cell, CellChange]]) -> tuple[Iterable[CellUpdate], bool]:
        self.cell = values[0][0]
        update = self.counter.apply(self.cell, [change for _, change in values], self.window_ms)
        return [update], StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[CellUpdate], bool]:
        self.refresh.fired()
        if self.cell is None:
            return [], StatefulBatchLogic.RETAIN
        return [self.counter.current(self.cell)], StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return self.refresh.due

    def snapshot(self) -> Any:
        return (tuple(self.cell) if self.cell else None, self.counter.snapshot())


# -- progress ----------------------------------------------------------------------------


def partition_counts(
    items: list[tuple[str, StateOutput]],
) -> list[tuple[str, PartitionProgress]]:
    """The shards' counter increments of a batch, summed per offers partition on this worker
    (a handful of items per batch however many shards it touched)."""
    total: dict[int, PartitionProgress] = {}
    for _, output in items:
        _add_counts(total, output.counts)
    return [(str(partition), counts) for partition, counts in total.items()]


def late_counts(items: list[tuple[str, CellUpdate]]) -> list[tuple[str, PartitionProgress]]:
    return [
        (str(partition), PartitionProgress(late=n))
        for _, update in items
        for partition, n in update.late.items()
        if n
    ]


class ProgressLogic(StatefulBatchLogic[PartitionProgress, PartitionProgress, Any]):
    """Keyed by offers partition: its counters, summed from the increments of every shard."""

    def __init__(self, total: PartitionProgress, refresh: timedelta) -> None:
        self.total = total
        self.refresh = Refresh(refresh)

    @classmethod
    def builder(cls, refresh: timedelta) -> Any:
        def build(resume: Any | None) -> ProgressLogic:
            return cls(resume or PartitionProgress(), refresh)

        return build

    def on_batch(self, values: list[PartitionProgress]) -> tuple[Iterable[PartitionProgress], bool]:
        for counts in values:
            self.total = self.total.plus(counts)
        return [self.total], StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[PartitionProgress], bool]:
        self.refresh.fired()
        return [self.total], StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return self.refresh.due

    def snapshot(self) -> Any:
        return self.total
