"""A hand-written baseline: the dataflow's semantics as one plain confluent-kafka loop.

    python -m benchmarks._plain_loop --offers-topic T --deltas-topic D --dlq-topic Q \\
        --redis-prefix P [--group G] [--batch 10000] [--kafka-bootstrap ...] [--redis-url ...]

No framework: one process, one thread, one ``Consumer`` assigned every offers partition, one
``Producer``, one Redis client. Each ``Consumer.consume(--batch)`` is one batch:

1. every record is validated by :func:`jobpulse.offer.parse_offer` — the project's one
   validator, called rather than re-written so that both sides reject exactly the same
   records with the same reason (it is plain orjson + checks, no framework); a rejected
   record goes to the DLQ topic byte for byte with the dataflow's dead-letter headers;
2. one k-d tree query for the whole batch on ``reverse_geocoder.RGeocoder(mode=1)``'s tree,
   country → continent through the contract's table (``jobpulse.delta``), category as the
   dataflow picks it (``category``, else ``profession_id`` through ``--professions``);
3. the per-offer state, a dict, with the rules of ``dataflows/open_offers.py`` (version =
   (order time, partition), stale records ignored, tombstones, replays skipped); every delta
   goes to the deltas topic as the dataflow's JSON (``event_id`` included);
4. the deltas are folded into absolute counts per cell and per event-time window, and after
   every delivery is acknowledged they are written to Redis in one ``Store.write`` (one
   MULTI/EXEC, the key layout of ``jobpulse/store.py``, so ``jobpulse breakdown`` reads it);
5. then the batch's offsets are committed to the consumer group ``--group``.

It stops at the end offsets captured at start (like ``jobpulse run --once``) and prints one
JSON line: records, ``seconds`` from the first poll to the end, the rate and counters.

The state lives in memory only, so the loop cannot resume: it refuses a Redis prefix that
already holds counts and a consumer group that already committed offsets. What else it does
not do, on purpose (a baseline, not a product): wait out Redis/Kafka outages, take the run
lease, re-emit its view every few seconds, scale past one process; its tombstones expire by
one topic-wide horizon instead of one per state shard (an expired tombstone matters only
for a record more than ``JOBPULSE_TOMBSTONE_SECONDS`` older than every partition).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from jobpulse import kafka
from jobpulse import settings as settings_module
from jobpulse.dataflows.counting import RETENTION_MS
from jobpulse.dataflows.dlq import dlq_headers, stand_in
from jobpulse.dataflows.professions import category_of, load_professions
from jobpulse.delta import CONTINENT_OF_COUNTRY, Action, Cell, delta_json, event_id
from jobpulse.errors import JobpulseError
from jobpulse.offer import UNKNOWN, InvalidOffer, Offer, Op, format_rfc3339, parse_offer
from jobpulse.settings import Settings
from jobpulse.store import PartitionProgress, Store, WindowCounts

#: The dataflow's reader tuning (``dataflows/kafka_io.py`` CONSUMER_TUNABLES), copied: that
#: module imports Bytewax, which this loop does without.
CONSUMER_TUNABLES = {"fetch.wait.max.ms": 100, "queued.min.messages": 20000}
#: The dataflow's sink tuning (``dataflows/kafka_io.py`` PRODUCER_TUNABLES), copied.
PRODUCER_TUNABLES = {
    "linger.ms": 20,
    "compression.type": "lz4",
    "queue.buffering.max.messages": 500_000,
}
#: ``dataflows/steps.py`` MAX_EVENT_AHEAD_MS: a ``published_at`` further ahead of the record's
#: timestamp is not trusted as event time.
MAX_EVENT_AHEAD_MS = 3600 * 1000
#: Seconds without any record before the loop gives up (Kafka gone, or an end never reached).
STALL_S = 60.0

#: A version is ``order time << 16 | partition``; an open offer packs ``version << 32 | cell
#: code`` into one int, as ``dataflows/open_offers.py`` does.
_PARTITION_BITS = 16
_CODE_BITS = 32
_CODE_MASK = (1 << _CODE_BITS) - 1

#: What a record did to its offer (first item of :class:`OfferState`'s answers).
OPENED, MOVED, UNCHANGED, CLOSED, UNKNOWN_DELETE, STALE = range(6)
#: The answers without a cell, built once.
_OPENED = (OPENED, None)
_UNCHANGED = (UNCHANGED, None)
_UNKNOWN_DELETE = (UNKNOWN_DELETE, None)
_STALE = (STALE, None)

#: One record read in a batch: (partition, offset, order time ms, event time ms, the offer
#: or None when it was dead-lettered).
Parsed = tuple[int, int, int, int, Offer | None]
#: One delta for counting: (sign, cell, source partition, event time ms).
CountedDelta = tuple[int, Cell, int, int]


@dataclass(slots=True)
class PartitionStats:
    """One offers partition: where the loop is and what it counted (cf. PartitionProgress)."""

    next_offset: int = 0
    #: The newest record timestamp read so far (from 0, as the dataflow's source): a record's
    #: order time is its timestamp raised to it, so it never decreases within a partition.
    newest_ms: int = 0
    records: int = 0
    dlq: int = 0
    unknown_deletes: int = 0
    late: int = 0
    stale: int = 0

    def progress(self) -> PartitionProgress:
        return PartitionProgress(
            offset=self.next_offset,
            records=self.records,
            dlq=self.dlq,
            unknown_deletes=self.unknown_deletes,
            late=self.late,
            stale=self.stale,
        )


class OfferState:
    """Open offers and tombstones; the transitions of ``dataflows/open_offers.py``."""

    def __init__(self, tombstone_ms: int, partition_count: int) -> None:
        #: offer id → ``version << 32 | cell code``
        self.open: dict[str, int] = {}
        #: offer id → version of the delete that closed it (a tombstone)
        self.closed: dict[str, int] = {}
        self.cells: list[Cell] = []
        self.codes: dict[Cell, int] = {}
        self.tombstone_ms = tombstone_ms
        self.partition_count = partition_count
        self.swept_ms = -1

    def upsert(self, offer_id: str, version: int, cell: Cell) -> tuple[int, Cell | None]:
        """(OPENED | MOVED | UNCHANGED | STALE, the cell it left when MOVED)."""
        code = self.codes.get(cell)
        if code is None:
            code = self.codes[cell] = len(self.cells)
            self.cells.append(cell)
        old = self.open.get(offer_id)
        if old is None:
            tombstone = self.closed.get(offer_id)
            if tombstone is not None:
                if version < tombstone:
                    return _STALE
                del self.closed[offer_id]
            self.open[offer_id] = (version << _CODE_BITS) | code
            return _OPENED
        if version < old >> _CODE_BITS:
            return _STALE
        self.open[offer_id] = (version << _CODE_BITS) | code
        old_code = old & _CODE_MASK
        return _UNCHANGED if old_code == code else (MOVED, self.cells[old_code])

    def delete(self, offer_id: str, version: int) -> tuple[int, Cell | None]:
        """(CLOSED, its cell) | UNKNOWN_DELETE | STALE; leaves a tombstone unless stale."""
        old = self.open.get(offer_id)
        if old is not None:
            if version < old >> _CODE_BITS:
                return _STALE
            del self.open[offer_id]
            self.closed[offer_id] = version
            return CLOSED, self.cells[old & _CODE_MASK]
        tombstone = self.closed.get(offer_id)
        if tombstone is not None and version < tombstone:
            return _STALE
        self.closed[offer_id] = version
        return _UNKNOWN_DELETE

    def expire_tombstones(self, stats: dict[int, PartitionStats]) -> None:
        """Drop the tombstones older than every partition's newest record by the tombstone
        time (swept at most once per quarter of it), as the dataflow does per shard."""
        delivered = [s.newest_ms for s in stats.values() if s.records]
        if not self.closed or len(delivered) < self.partition_count:
            return
        horizon = min(delivered) - self.tombstone_ms
        if horizon < 0 or horizon < self.swept_ms + self.tombstone_ms // 4:
            return
        limit = (horizon + 1) << _PARTITION_BITS
        self.closed = {k: v for k, v in self.closed.items() if v >= limit}
        self.swept_ms = horizon


class CellCounts:
    """Absolute open offers per cell and opened/closed per retained event-time window
    (the rules of ``dataflows/counting.py``: a cell keeps the windows within
    ``RETENTION_MS`` of its newest one; a delta for an older, dropped window is *late*)."""

    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms
        self.count: dict[Cell, int] = {}
        self.windows: dict[Cell, dict[int, list[int]]] = {}
        self.newest: dict[Cell, int] = {}

    def apply(
        self, deltas: list[CountedDelta]
    ) -> tuple[dict[Cell, int], dict[int, WindowCounts], dict[int, int]]:
        """Fold one batch; return the absolute values it touched and the late deltas per
        source partition."""
        window_ms = self.window_ms
        changes: dict[Cell, dict[tuple[int, int], list[int]]] = {}
        for sign, cell, partition, event_ms in deltas:
            self.count[cell] = self.count.get(cell, 0) + sign
            slots = changes.setdefault(cell, {})
            key = (event_ms - event_ms % window_ms, partition)
            slot = slots.get(key)
            if slot is None:
                slot = slots[key] = [0, 0]
            slot[0 if sign > 0 else 1] += 1
        windows: dict[int, WindowCounts] = {}
        late: dict[int, int] = {}
        for cell, slots in changes.items():
            newest = max(self.newest.get(cell, -1), *(start for start, _ in slots))
            self.newest[cell] = newest
            horizon = newest - RETENTION_MS + window_ms
            kept = self.windows.setdefault(cell, {})
            for (start, partition), (opened, closed) in slots.items():
                totals = kept.get(start)
                if totals is None:
                    if start < horizon:
                        late[partition] = late.get(partition, 0) + opened + closed
                        continue
                    totals = kept[start] = [0, 0]
                totals[0] += opened
                totals[1] += closed
                window = windows.get(start)
                if window is None:
                    window = windows[start] = WindowCounts(start)
                if totals[0]:
                    window.opened[cell] = totals[0]
                if totals[1]:
                    window.closed[cell] = totals[1]
            for start in [s for s in kept if s < horizon]:
                del kept[start]
        return {cell: self.count[cell] for cell in changes}, windows, late


class Geocoder:
    """reverse_geocoder's k-d tree, queried once per batch (mode 1: in this process)."""

    def __init__(self) -> None:
        import reverse_geocoder

        geocoder = reverse_geocoder.RGeocoder(mode=1, verbose=False)
        self.tree = geocoder.tree
        table = CONTINENT_OF_COUNTRY
        self.continent_of_place = [table.get(row["cc"], UNKNOWN) for row in geocoder.locations]
        #: Time spent in :meth:`continents` (the tree query and the table lookups).
        self.seconds = 0.0

    def continents(self, coordinates: list[tuple[Any, Any]]) -> list[str]:
        """The continent of each (latitude, longitude), in one vectorised query."""
        if not coordinates:
            return []
        began = time.perf_counter()
        _, indices = self.tree.query(coordinates, k=1)
        places = self.continent_of_place
        answers = [places[i] for i in indices.tolist()]
        self.seconds += time.perf_counter() - began
        return answers


class Writer:
    """One idempotent producer for the deltas and the DLQ; a batch fails unless all arrived."""

    def __init__(self, settings: Settings) -> None:
        self.deltas_topic = settings.deltas_topic
        self.dlq_topic = settings.dlq_topic
        self.flush_limit_s = float(settings.outage_limit_seconds)
        self.failures: list[str] = []
        self.refused: list[tuple[bytes | None, bytes | None, Any]] = []
        self.producer: Producer = kafka.producer(
            settings,
            required={
                **kafka.IDEMPOTENT,
                "message.timeout.ms": settings.outage_limit_seconds * 1000,
            },
            tunables=PRODUCER_TUNABLES,
            on_delivery=self._delivered,
        )

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            return
        if error.code() == KafkaError.MSG_SIZE_TOO_LARGE and message.topic() == self.dlq_topic:
            self.refused.append((message.key(), message.value(), message.headers()))
        else:
            self.failures.append(f"{message.topic()}: {error.str()}")

    def delta(self, key: bytes, value: bytes) -> None:
        kafka.produce(self.producer, self.deltas_topic, value, key)

    def dead_letter(self, key: bytes | None, value: bytes | None, headers: Any) -> None:
        try:
            kafka.produce(self.producer, self.dlq_topic, value, key, headers)
        except KafkaException as exc:
            if kafka.error_code(exc) != KafkaError.MSG_SIZE_TOO_LARGE:
                raise
            self._stand_in(key, value, headers)

    def _stand_in(self, key: bytes | None, value: bytes | None, headers: Any) -> None:
        """The dataflow's bounded replacement of a DLQ record too large for Kafka."""
        key, value, headers = stand_in(key, value, headers)
        kafka.produce(self.producer, self.dlq_topic, value, key, headers)

    def flush(self) -> None:
        """Wait for every delivery report; re-send refused DLQ records as bounded stand-ins."""
        self._wait()
        while self.refused:
            refused, self.refused = self.refused, []
            for key, value, headers in refused:
                self._stand_in(key, value, headers)
            self._wait()
        if self.failures:
            failures, self.failures = self.failures, []
            raise RuntimeError(f"{len(failures)} writes failed: {'; '.join(failures[:3])}")

    def _wait(self) -> None:
        if self.producer.flush(self.flush_limit_s):
            raise RuntimeError(f"deliveries not acknowledged within {self.flush_limit_s:.0f} s")


class PlainLoop:
    """The loop itself: consume a batch, process it, write, commit, until the end offsets."""

    def __init__(self, settings: Settings, group: str, batch_size: int, poll_s: float) -> None:
        self.settings = settings
        self.topic = settings.offers_topic
        self.batch_size = batch_size
        self.poll_s = poll_s
        self.window_ms = settings.window_seconds * 1000
        self.professions = load_professions(settings.professions)
        self.store = Store.connect(settings)
        self.consumer: Consumer = kafka.consumer(
            settings,
            required={
                "group.id": group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
            },
            tunables=CONSUMER_TUNABLES,
        )
        self.end = self._end_offsets()
        self._refuse_used(group)
        self.geocoder = Geocoder()
        self.writer = Writer(settings)
        self.state = OfferState(settings.tombstone_seconds * 1000, len(self.end))
        self.counts = CellCounts(self.window_ms)
        self.stats = {p: PartitionStats() for p in self.end}
        self.interned: dict[tuple[str, str], Cell] = {}
        self.seconds_text: dict[int, str] = {}
        self.polls = self.redis_writes = self.deltas = 0

    def _end_offsets(self) -> dict[int, int]:
        """Every offers partition's high watermark now: where this run stops."""
        metadata = self.consumer.list_topics(self.topic, timeout=10)
        found = metadata.topics.get(self.topic)
        if found is None or found.error is not None:
            raise SystemExit(f"_plain_loop: offers topic {self.topic} does not exist")
        return {
            p: self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)[1]
            for p in sorted(found.partitions)
        }

    def _refuse_used(self, group: str) -> None:
        """The state is in memory only: count from offset 0 into a fresh prefix and group."""
        if self.store.breakdown().version:
            raise SystemExit(
                f"_plain_loop: Redis prefix {self.settings.redis_prefix!r} already holds counts"
            )
        partitions = [TopicPartition(self.topic, p) for p in self.end]
        if any(tp.offset >= 0 for tp in self.consumer.committed(partitions, timeout=10)):
            raise SystemExit(f"_plain_loop: consumer group {group!r} already committed offsets")

    def run(self) -> dict[str, Any]:
        # Offset 0, not OFFSET_BEGINNING (a 500 ms lookup before the first fetch), like the
        # dataflow: the baseline gets every trick that is not a different algorithm.
        self.consumer.assign([TopicPartition(self.topic, p, 0) for p in self.end])
        began = last_record = time.monotonic()
        while self._pending():
            messages = self.consumer.consume(self.batch_size, self.poll_s)
            self.polls += 1
            if self._process(messages):
                last_record = time.monotonic()
            elif time.monotonic() - last_record > STALL_S:
                raise SystemExit(
                    f"_plain_loop: no record for {STALL_S:.0f} s; partitions left: "
                    f"{[p for p in self.end if self._left(p)]}"
                )
        seconds = time.monotonic() - began
        self.consumer.close()
        return self._summary(seconds)

    def _left(self, partition: int) -> bool:
        return self.stats[partition].next_offset < self.end[partition]

    def _pending(self) -> bool:
        return any(self._left(p) for p in self.end)

    # -- one batch ---------------------------------------------------------------------
    def _process(self, messages: list[Message]) -> bool:
        """One poll's records: parse, geocode, apply, write, commit. Whether any was read."""
        parsed = self._read(messages)
        if not parsed:
            return False
        deltas = self._apply(parsed)
        self.writer.flush()
        cells, windows, late = self.counts.apply(deltas)
        touched = {partition for partition, *_ in parsed}
        for partition, n in late.items():
            self.stats[partition].late += n
        self.store.write(
            cells=cells,
            windows=windows,
            partitions={p: self.stats[p].progress() for p in touched},
        )
        self.redis_writes += 1
        self.consumer.commit(
            offsets=[TopicPartition(self.topic, p, self.stats[p].next_offset) for p in touched],
            asynchronous=False,
        )
        self.state.expire_tombstones(self.stats)
        return True

    def _read(self, messages: list[Message]) -> list[Parsed]:
        """Validate each record below its partition's end; dead-letter the rejected ones."""
        parsed: list[Parsed] = []
        stats, end = self.stats, self.end
        for message in messages:
            error = message.error()
            partition = message.partition()
            if error is not None:
                self._on_error(partition, error)
                continue
            seen = stats[partition]
            offset = message.offset()
            if offset >= end[partition] or offset < seen.next_offset:
                continue  # past this run's end, or read before (never applied twice)
            seen.next_offset = offset + 1
            seen.records += 1
            order_ms = message.timestamp()[1]
            if order_ms > seen.newest_ms:
                seen.newest_ms = order_ms
            order_ms = seen.newest_ms
            key, value = message.key(), message.value()
            try:
                offer = parse_offer(key, value)
            except InvalidOffer as rejected:
                headers = dlq_headers(self.topic, partition, offset, rejected, message.headers())
                self.writer.dead_letter(key, value, headers)
                seen.dlq += 1
                parsed.append((partition, offset, order_ms, order_ms, None))
                continue
            event_ms = offer.published_at_ms
            if event_ms is None or event_ms > order_ms + MAX_EVENT_AHEAD_MS:
                event_ms = order_ms
            parsed.append((partition, offset, order_ms, event_ms, offer))
        return parsed

    def _on_error(self, partition: int, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            # The end of what the partition holds: done even if the end offset was a marker.
            self.end[partition] = min(self.end[partition], self.stats[partition].next_offset)
            return
        if error.fatal() or error.code() in (
            KafkaError.UNKNOWN_TOPIC_OR_PART,
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
        ):
            raise SystemExit(f"_plain_loop: partition {partition}: fatal Kafka error: {error}")
        print(f"_plain_loop: partition {partition}: {error.str()} (retried)", file=sys.stderr)

    def _apply(self, parsed: list[Parsed]) -> list[CountedDelta]:
        """Geocode the batch in one query, then apply every record to the state in the
        order read (each partition's in offset order); produce its deltas."""
        coordinates = [
            (offer.latitude, offer.longitude)
            for *_, offer in parsed
            if offer is not None and offer.op is Op.UPSERT and offer.latitude is not None
        ]
        continents = iter(self.geocoder.continents(coordinates))
        state, stats = self.state, self.stats
        deltas: list[CountedDelta] = []
        for partition, offset, order_ms, event_ms, offer in parsed:
            if offer is None:
                continue
            version = (order_ms << _PARTITION_BITS) | partition
            if offer.op is Op.DELETE:
                outcome, left = state.delete(offer.id, version)
                if outcome == CLOSED:
                    assert left is not None
                    self._emit(deltas, -1, left, offer.id, partition, offset, 0, event_ms)
                elif outcome == UNKNOWN_DELETE:
                    stats[partition].unknown_deletes += 1
                elif outcome == STALE:
                    stats[partition].stale += 1
                continue
            continent = next(continents) if offer.latitude is not None else UNKNOWN
            category = category_of(offer.category, offer.profession_id, self.professions)
            cell = self._cell(category, continent)
            outcome, left = state.upsert(offer.id, version, cell)
            if outcome == OPENED:
                self._emit(deltas, 1, cell, offer.id, partition, offset, 0, event_ms)
            elif outcome == MOVED:
                assert left is not None
                self._emit(deltas, -1, left, offer.id, partition, offset, 0, event_ms)
                self._emit(deltas, 1, cell, offer.id, partition, offset, 1, event_ms)
            elif outcome == STALE:
                stats[partition].stale += 1
        return deltas

    def _cell(self, category: str, continent: str) -> Cell:
        """One shared Cell per (category, continent)."""
        cell = self.interned.get((category, continent))
        if cell is None:
            cell = self.interned[(category, continent)] = Cell(category, continent)
        return cell

    def _emit(
        self,
        deltas: list[CountedDelta],
        sign: int,
        cell: Cell,
        offer_id: str,
        partition: int,
        offset: int,
        index: int,
        event_ms: int,
    ) -> None:
        """Produce one delta (the contract's own encoder) and keep it to count."""
        value = delta_json(
            _INCREMENT if sign > 0 else _DECREMENT,
            cell.category,
            cell.continent,
            offer_id,
            event_id(self.topic, partition, offset, index),
            self._timestamp(event_ms),
        )
        self.writer.delta(offer_id.encode(), value)
        self.deltas += 1
        deltas.append((sign, cell, partition, event_ms))

    def _timestamp(self, event_ms: int) -> str:
        """:func:`jobpulse.offer.format_rfc3339`, formatted once per second (as the dataflow)."""
        seconds, millis = divmod(event_ms, 1000)
        text = self.seconds_text.get(seconds)
        if text is None:
            text = self.seconds_text[seconds] = format_rfc3339(seconds * 1000)[:-5]
        return f"{text}.{millis:03d}Z"

    def _summary(self, seconds: float) -> dict[str, Any]:
        records = sum(s.records for s in self.stats.values())
        return {
            "records": records,
            "seconds": round(seconds, 3),
            "records_per_s": round(records / seconds) if seconds > 0 else 0,
            "polls": self.polls,
            "redis_writes": self.redis_writes,
            "deltas": self.deltas,
            "dlq": sum(s.dlq for s in self.stats.values()),
            "unknown_deletes": sum(s.unknown_deletes for s in self.stats.values()),
            "stale": sum(s.stale for s in self.stats.values()),
            "late": sum(s.late for s in self.stats.values()),
            "open_offers": len(self.state.open),
            "geocode_seconds": round(self.geocoder.seconds, 3),
            "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }


_INCREMENT = Action.INCREMENT.value
_DECREMENT = Action.DECREMENT.value


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks._plain_loop", description=__doc__.splitlines()[0]
    )
    for flag in ("kafka-bootstrap", "redis-url", "offers-topic", "deltas-topic", "dlq-topic"):
        parser.add_argument(f"--{flag}", help="as the jobpulse flag (default: JOBPULSE_*)")
    parser.add_argument("--redis-prefix", help="as the jobpulse flag; must hold no counts")
    parser.add_argument("--professions", type=Path, help="as the jobpulse flag")
    parser.add_argument("--group", help="consumer group (default jobpulse-plain-loop.<prefix>)")
    parser.add_argument("--batch", type=int, default=10_000, help="records per consume()")
    parser.add_argument("--poll", type=float, default=0.1, help="consume() timeout, s")
    args = parser.parse_args()
    started = time.monotonic()
    settings = settings_module.load(
        kafka_bootstrap=args.kafka_bootstrap,
        redis_url=args.redis_url,
        offers_topic=args.offers_topic,
        deltas_topic=args.deltas_topic,
        dlq_topic=args.dlq_topic,
        redis_prefix=args.redis_prefix,
        professions=args.professions,
    )
    group = args.group or f"jobpulse-plain-loop.{settings.redis_prefix}"
    try:
        loop = PlainLoop(settings, group, args.batch, args.poll)
        setup_s = time.monotonic() - started
        summary = loop.run()
    except JobpulseError as exc:  # Redis or Kafka unreachable, a bad setting: one line
        raise SystemExit(f"_plain_loop: {exc}") from None
    print(orjson.dumps({**summary, "setup_seconds": round(setup_s, 3)}).decode(), flush=True)


if __name__ == "__main__":
    main()
