"""Kafka at the edges of the dataflow: the offers source and the batch producer sink.

Why not ``bytewax.connectors.kafka`` as is: the source here (same model — the next offset
per partition as recovery state) emits one :class:`RawChunk` per poll instead of one object
per record, reads all of a worker's partitions with one consumer instead of one each, can
stop at offsets captured at start (``run --once``), and logs and counts consumer errors
instead of either crashing or passing them on silently. The sink checks delivery reports
(bytewax's ``KafkaSink`` does not), so a failed write fails the batch and the dataflow
resumes from its last snapshot instead of losing the message.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from jobpulse import kafka, metrics
from jobpulse.outage import Outage
from jobpulse.settings import Settings

from .items import OutMessage, RawChunk, RawRecord

#: librdkafka's own log is silenced (:data:`jobpulse.kafka.QUIET`); the dataflow reports what
#: matters, once per state change (:class:`jobpulse.kafka.ReadHealth`).
log = logging.getLogger("jobpulse.dataflow.kafka")


_READ_HEALTH = kafka.ReadHealth("the offers topic", "the readers wait", log)


#: ``time.monotonic()`` when this process read its first offers record (start-up latency).
FIRST_RECORD_AT: list[float] = []

#: Set on Ctrl-C/SIGTERM: every partition ends its input, so the dataflow drains what is in
#: flight, takes its last snapshot and returns (a clean stop instead of an abort).
STOP = threading.Event()

#: How long an idle partition waits before polling again.
IDLE_POLL = timedelta(milliseconds=20)

#: Records a worker's reader fetches and holds at most, shared by all its partitions: the
#: size of a batch through the dataflow, whatever the partitions per worker (so a worker of
#: a larger cluster does not pay the per-batch costs on smaller batches).
DEFAULT_FETCH_RECORDS = 24_000


#: Tuning of the offers readers (pass-through settings override it).
CONSUMER_TUNABLES: dict[str, Any] = {"fetch.wait.max.ms": 100, "queued.min.messages": 20000}


def offers_consumer(settings: Settings, *, stop_at_end: bool) -> Consumer:
    """A consumer of the offers topic as the source reads it (``stop_at_end``: it reports
    the end of each partition, for ``run --once``)."""
    return kafka.consumer(
        settings,
        required={
            # Offsets are tracked by the recovery store, not by a consumer group.
            "group.id": "jobpulse-dataflow",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": stop_at_end,
            "auto.offset.reset": "earliest",
        },
        tunables=CONSUMER_TUNABLES,
    )


#: A partition's recovery state: (next offset, newest order time so far).
PartitionPosition = tuple[int, int]


class _WorkerReader:
    """One Kafka consumer for every offers partition of one Bytewax worker.

    Why one and not one per partition (bytewax's connector's way): a librdkafka consumer is
    a client of its own — threads, broker connections, a fetch loop — so twelve partitions
    cost twelve start-ups (≈ 0.15 s before the first record) and twelve fetch loops'
    CPU. Here one fetch serves every partition the worker owns; the messages are handed out
    per partition (each partition's in offset order, as librdkafka returns them), so each
    partition still emits only its own records and snapshots only its own position.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        stop_at_end: bool,
        fetch_records: int,
        consumer: Consumer | None = None,
    ) -> None:
        self._topic = settings.offers_topic
        self._consumer = consumer or offers_consumer(settings, stop_at_end=stop_at_end)
        self._fetch_records = fetch_records
        #: partition → messages fetched and not handed out yet.
        self._pending: dict[int, list[Message]] = {}
        #: Messages in ``_pending``.
        self._held = 0
        #: The partitions asked in this round, and whether it fetched yet.
        self._asked: set[int] = set()
        self._fetched = False
        #: The last fetch found nothing at all: the partitions with nothing left may sleep.
        self.idle = False
        self.closed = False

    def add(self, partition: int, next_offset: int) -> None:
        """Read ``partition`` from ``next_offset`` on."""
        self._pending[partition] = []
        # A concrete offset, even 0: OFFSET_BEGINNING would make librdkafka look it up on a
        # 500 ms retry timer before the first fetch. Below the log start (retention), the
        # broker answers out-of-range and auto.offset.reset=earliest restarts at the start.
        # Assigned now, not at the first fetch: librdkafka starts fetching while Bytewax
        # builds the rest of the dataflow.
        self._consumer.incremental_assign([TopicPartition(self._topic, partition, next_offset)])

    def take(self, partition: int) -> list[Message]:
        """The messages of ``partition`` fetched so far, in offset order: its records and its
        errors (end of partition, …).

        At most one fetch (without waiting, of up to ``fetch_records`` messages) per round of
        the worker over its partitions, made by the first partition that finds none left: a
        round's batch is one fetch's worth, as in a plain consume loop. A round ends when a
        partition is asked again. librdkafka queues each partition's records in blocks of
        up to ``max.partition.fetch.bytes`` (1 MB), so a fetch brings a few partitions'
        blocks, not a little of each: their event times interleave by blocks, well within
        the windows' retention (see :mod:`.counting`).
        """
        if partition in self._asked:  # the worker came round again: a new batch
            self._asked.clear()
            self._fetched = False
        self._asked.add(partition)
        pending = self._pending[partition]
        if not pending and not self._fetched:
            self._fetched = True
            self._fetch(partition)
            pending = self._pending[partition]
        self._pending[partition] = []
        self._held -= len(pending)
        return pending

    def _fetch(self, asking: int) -> None:
        pending = self._pending
        room = self._fetch_records - self._held
        # Non-blocking: librdkafka prefetches in the background; an idle partition sleeps via
        # next_awake instead of blocking the worker thread that runs every other step too.
        messages = self._consumer.consume(room, 0)
        self.idle = not messages
        if messages and not FIRST_RECORD_AT:
            FIRST_RECORD_AT.append(time.monotonic())
        for message in messages:
            queue = pending.get(message.partition())  # type: ignore[arg-type]
            if queue is not None:
                queue.append(message)
            elif message.error() is not None:
                pending[asking].append(message)  # not a partition's (e.g. all brokers down)
            else:  # a partition removed meanwhile (it ended): nothing more is read of it
                continue
            self._held += 1

    def watermarks(self, partition: int) -> tuple[int, int]:
        """librdkafka's cached (low, high) watermarks of the last fetch: no request."""
        return self._consumer.get_watermark_offsets(  # type: ignore[no-any-return]
            TopicPartition(self._topic, partition), cached=True
        )

    def remove(self, partition: int) -> None:
        """Stop reading ``partition``; the consumer closes with the last one."""
        dropped = self._pending.pop(partition, None)
        if dropped is None:
            return
        self._held -= len(dropped)
        self._consumer.incremental_unassign([TopicPartition(self._topic, partition)])
        if not self._pending:
            self.closed = True
            self._consumer.close()


class _OffersPartition(StatefulSourcePartition[RawChunk, PartitionPosition]):
    """One offers partition; its recovery state is the next offset to read and its newest
    order time.

    The *order time* of a record is its Kafka timestamp raised to the newest one read before
    it from the same partition: within a partition it never decreases, so the per-offer state
    can compare records of different partitions by time and still keep offset order within
    one (see :mod:`.open_offers`).
    """

    def __init__(
        self,
        reader: _WorkerReader,
        partition: int,
        position: PartitionPosition,
        end_offset: int | None,
    ) -> None:
        next_offset, newest = position
        self._reader = reader
        self._partition = partition
        self._next = next_offset
        self._newest = newest
        self._end = end_offset
        self._awake: datetime | None = None
        # Metrics, updated once per batch: the labelled children are looked up once here.
        self._records_read = metrics.RECORDS_READ.labels(str(partition))
        self._lag = metrics.LAG.labels(str(partition))
        reader.add(partition, next_offset)

    def next_batch(self) -> list[RawChunk]:
        if STOP.is_set() or (self._end is not None and self._next >= self._end):
            raise StopIteration
        messages = self._reader.take(self._partition)
        records: list[RawRecord] = []
        append = records.append
        newest = self._newest
        for message in messages:
            error = message.error()
            if error is not None:
                self._on_error(error)
                continue
            offset = message.offset()
            if self._end is not None and offset >= self._end:
                self._next = self._end
                break
            timestamp_ms = message.timestamp()[1]
            if timestamp_ms > newest:
                newest = timestamp_ms
            append((offset, newest, message.key(), message.value(), message.headers()))
            self._next = offset + 1
        self._newest = newest
        if not messages:
            # Sleep only when the whole topic is idle: a partition whose records are still
            # on their way while others' arrive is asked again at once.
            self._awake = datetime.now(UTC) + IDLE_POLL if self._reader.idle else None
            return []
        if records:
            _READ_HEALTH.ok()
            self._count(len(records))
        self._awake = None
        return [RawChunk(self._partition, records)] if records else []

    def _count(self, records: int) -> None:
        """Metrics of one batch: records read, and the lag behind the high watermark of the
        last fetch."""
        self._records_read.inc(records)
        _, high = self._reader.watermarks(self._partition)
        if high >= 0:
            self._lag.set(max(0, high - self._next))

    def next_awake(self) -> datetime | None:
        return self._awake

    def _on_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            # Only enabled with an end offset: reaching the end means we are done even when
            # the last offsets were transaction markers or compacted away.
            if self._end is not None:
                self._end = min(self._end, self._next)
            return
        if error.fatal() or error.code() in (
            KafkaError.UNKNOWN_TOPIC_OR_PART,
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
        ):
            raise RuntimeError(f"offers partition {self._partition}: fatal Kafka error: {error}")
        _READ_HEALTH.error(error, f" (partition {self._partition})")

    def snapshot(self) -> PartitionPosition:
        return (self._next, self._newest)

    def close(self) -> None:
        self._reader.remove(self._partition)


class OffersSource(FixedPartitionedSource[RawChunk, PartitionPosition]):
    """Every partition of the offers topic; each stops at ``end_offsets`` when given.

    The partitions a worker owns share one consumer (:class:`_WorkerReader`). Bytewax
    builds and drives a worker's partitions on that worker's thread, so the reader is found
    by thread. ``consumer``: one made by :func:`offers_consumer` ahead of time (connected
    while the dataflow starts), for the first worker. ``on_worker_thread``: called on each
    worker's thread as it starts, before it builds anything (the runner's thread set-up).
    """

    def __init__(
        self,
        settings: Settings,
        partitions: list[int],
        *,
        end_offsets: Mapping[int, int] | None = None,
        fetch_records: int = DEFAULT_FETCH_RECORDS,
        consumer: Consumer | None = None,
        on_worker_thread: Callable[[], None] | None = None,
    ) -> None:
        self._settings = settings
        self._on_worker_thread = on_worker_thread
        self._partitions = partitions
        self._end_offsets = dict(end_offsets) if end_offsets is not None else None
        self._fetch_records = fetch_records
        self._readers: dict[int, _WorkerReader] = {}
        #: A consumer made (and connected) ahead, for the first worker's reader.
        self._ready = [consumer] if consumer is not None else []

    def list_parts(self) -> list[str]:
        # Bytewax asks every worker, on its thread, before it builds the other steps.
        if self._on_worker_thread is not None:
            self._on_worker_thread()
        return [f"{self._settings.offers_topic}#{p}" for p in self._partitions]

    def build_part(
        self, step_id: str, for_part: str, resume_state: PartitionPosition | None
    ) -> _OffersPartition:
        topic, _, partition = for_part.rpartition("#")
        if topic != self._settings.offers_topic:
            raise RuntimeError(
                f"the recovery store belongs to topic {topic!r}, not "
                f"{self._settings.offers_topic!r}: use another --recovery-dir"
            )
        index = int(partition)
        end = None if self._end_offsets is None else self._end_offsets.get(index, 0)
        position = resume_state or (0, 0)
        return _OffersPartition(self._reader(), index, position, end)

    def _reader(self) -> _WorkerReader:
        worker = threading.get_ident()
        reader = self._readers.get(worker)
        if reader is None or reader.closed:
            reader = self._readers[worker] = _WorkerReader(
                self._settings,
                stop_at_end=self._end_offsets is not None,
                fetch_records=self._fetch_records,
                consumer=self._ready.pop() if self._ready else None,
            )
        return reader


#: The end offsets this process's ``--once`` run reads up to, once :func:`end_offsets`
#: captured them (the run's progress display measures its ETA against them).
CAPTURED_END: list[dict[int, int]] = []


def end_offsets(
    consumer: Consumer, topic: str, partitions: Iterable[int], timeout: float = 10.0
) -> dict[int, int]:
    """The high watermark of each of ``partitions`` of the offers ``topic`` now (what
    ``--once`` reads up to), asked through ``consumer``."""
    captured = {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1]
        for p in sorted(partitions)
    }
    CAPTURED_END[:] = [captured]
    return captured


class PartitionWatch:
    """Checks every ``partition_check_seconds`` whether the offers topic grew.

    The source's partitions are fixed for a run (Bytewax lists them once), so when the topic
    grows the watch records the new count and sets :data:`STOP`: the dataflow drains, takes
    its last snapshot and returns, and the runner restarts it to read every partition.
    """

    def __init__(self, settings: Settings, partitions: int) -> None:
        self._settings = settings
        self._partitions = partitions
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="partition-watch", daemon=True)
        #: The partition count found when the topic grew (None while it has not).
        self.grew_to: int | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)

    def _watch(self) -> None:
        consumer = offers_consumer(self._settings, stop_at_end=False)
        topic = self._settings.offers_topic
        try:
            while not self._stopped.wait(self._settings.partition_check_seconds):
                try:
                    metadata = consumer.list_topics(topic, timeout=10)
                except KafkaException:
                    continue  # Kafka unreachable: the source reports it; check again later
                found = metadata.topics.get(topic)
                if found is None or found.error is not None:
                    continue
                if len(found.partitions) > self._partitions:
                    self.grew_to = len(found.partitions)
                    log.warning(
                        "the offers topic %s grew from %d to %d partitions: finishing the "
                        "batches in flight to restart and read them",
                        topic,
                        self._partitions,
                        self.grew_to,
                    )
                    STOP.set()
                    return
        finally:
            consumer.close()


#: Tuning of the sinks' producers (pass-through settings override it).
PRODUCER_TUNABLES: dict[str, Any] = {
    "linger.ms": 20,
    "compression.type": "lz4",
    "queue.buffering.max.messages": 500_000,
}


def _producer_guarantees(settings: Settings) -> dict[str, Any]:
    """What the sinks depend on: no write lost or duplicated, retried through an outage."""
    return {
        **kafka.IDEMPOTENT,
        # librdkafka retries a write until this; the sink waits as long (an outage).
        "message.timeout.ms": settings.outage_limit_seconds * 1000,
        # A delivery report only for a failed write: the sink acts on failures alone, and a
        # Python callback per delivered message costs as much as producing it.
        "delivery.report.only.error": True,
    }


#: Builds a bounded replacement for a message too large for Kafka (see :func:`.dlq.stand_in`).
Replacement = Callable[[bytes | None, bytes | None, Any], OutMessage]

#: How often a waiting sink re-checks its deliveries.
_FLUSH_STEP_S = 5.0


class _ProducerPartition(StatelessSinkPartition[list[OutMessage]]):
    def __init__(
        self, settings: Settings, topic: str, too_large: Replacement | None, output: str
    ) -> None:
        self._topic = topic
        self._written = metrics.MESSAGES_WRITTEN.labels(output)
        self._write_seconds = metrics.KAFKA_WRITE_SECONDS.labels(output)
        self._too_large = too_large
        self._outage = Outage(f"Kafka (writing to {topic})", settings.outage_limit_seconds)
        self._failures: list[str] = []
        self._refused: list[OutMessage] = []
        self._producer = kafka.producer(
            settings,
            required=_producer_guarantees(settings),
            tunables=PRODUCER_TUNABLES,
            on_delivery=self._delivered,
        )

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            return
        if error.code() == KafkaError.MSG_SIZE_TOO_LARGE and self._too_large is not None:
            self._refused.append((message.key(), message.value(), message.headers()))
        else:
            self._failures.append(str(error))

    def write_batch(self, items: list[list[OutMessage]]) -> None:
        started = time.perf_counter()
        produce, topic = self._producer.produce, self._topic
        count = 0
        for messages in items:
            count += len(messages)
            for message in messages:
                key, value, headers = message
                try:  # the common case in one call; a full queue or a refusal: _produce
                    if headers is None:  # positional: a keyword costs a dict per call
                        produce(topic, value, key)
                    else:
                        produce(topic, value, key, headers=headers)
                except (BufferError, KafkaException):
                    self._produce(message)
            self._producer.poll(0)
        self._flush()
        if self._refused:  # too large for the broker: write bounded stand-ins instead
            refused, self._refused = self._refused, []
            assert self._too_large is not None
            for key, value, headers in refused:
                self._produce(self._too_large(key, value, headers))
            self._flush()
        if self._failures:
            failures, self._failures = self._failures, []
            raise RuntimeError(
                f"writing to {self._topic} failed: {len(failures)} rejected "
                f"({'; '.join(failures[:3])})"
            )
        self._written.inc(count)
        self._write_seconds.observe(time.perf_counter() - started)

    def _produce(self, message: OutMessage) -> None:
        key, value, headers = message
        while True:
            try:
                kafka.produce(self._producer, self._topic, value, key, headers)
                return
            except KafkaException as exc:
                too_large = kafka.error_code(exc) == KafkaError.MSG_SIZE_TOO_LARGE
                if not too_large or self._too_large is None:
                    raise
                key, value, headers = self._too_large(key, value, headers)

    def _flush(self) -> None:
        """Wait until every message is delivered or failed; an outage (Kafka unreachable) is
        waited out up to ``outage_limit_seconds`` (see :mod:`.outage`)."""
        while remaining := self._producer.flush(_FLUSH_STEP_S):
            self._outage.failed(RuntimeError(f"{remaining} message(s) not delivered yet"))
        self._outage.succeeded()

    def close(self) -> None:
        self._producer.flush(60)


class ProducerSink(DynamicSink[list[OutMessage]]):
    """Writes lists of (key, value, headers) to one topic; a batch fails unless all arrived.

    ``too_large``: how to replace a message too large for Kafka (else it fails the batch).
    ``output``: the metrics' label (``deltas``, ``dlq``, ``rows``; default: the step id).
    """

    def __init__(
        self,
        settings: Settings,
        topic: str,
        too_large: Replacement | None = None,
        *,
        output: str | None = None,
    ) -> None:
        self._settings = settings
        self._topic = topic
        self._too_large = too_large
        self._output = output

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ProducerPartition:
        output = self._output or step_id.rsplit(".", 1)[-1]
        return _ProducerPartition(self._settings, self._topic, self._too_large, output)
