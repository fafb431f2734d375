"""The PostgreSQL sink's loop: offer rows from Kafka, in batches, into ``offers``.

- **Its own consumer group** (:func:`jobpulse.offer_row.sink_group`), whose committed offsets
  are the sink's progress. The sink *assigns* itself every partition of the rows topic at the
  group's committed offsets (instead of subscribing): no rebalances, no poll-interval limit
  while it waits for PostgreSQL, and partitions added to the topic are picked up by a
  periodic check.
- **A batch**: up to ``batch_size`` records, decoded (:meth:`OfferRow.from_json`), written in
  one database transaction (:class:`OffersWriter`), then the offsets committed to Kafka
  synchronously — only after the database commit. A crash between the two replays the batch,
  which changes nothing (the writer applies only newer rows): exactly once in effect.
- **Records that are not offer rows** are skipped, counted and logged once per batch. Only
  the dataflow writes the rows topic, so this cannot happen unless something else writes it.
- **PostgreSQL down or failing** (connection lost, server restarting): the sink stops reading
  and retries the same batch with backoff (:class:`jobpulse.outage.Outage`: one line when it
  starts, one when it ends, the run ends past ``JOBPULSE_OUTAGE_LIMIT_SECONDS``). The rows wait
  in Kafka; the dataflow and Redis never notice. Kafka refusing the offsets commit is waited
  out the same way. Any other database error (a row PostgreSQL refuses) stops the sink with
  one line, nothing of the batch committed.
- **Stop**: Ctrl-C/SIGTERM finishes the batch in hand (write and commit), then returns;
  ``once`` stops at the end offsets taken at the start.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

import msgspec

from jobpulse import kafka, metrics, topics
from jobpulse.errors import AuthenticationFailed, JobpulseError, ServiceUnavailable, UsageError
from jobpulse.offer_row import OfferRow, sink_group
from jobpulse.outage import Outage
from jobpulse.processes import StopSignals
from jobpulse.progress import ProgressDisplay, Sample
from jobpulse.settings import Settings

from . import schema
from .writer import Applied, OffersWriter, Unstorable, check_storable

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message

log = logging.getLogger("jobpulse.sink")

#: Records per batch (one database transaction, one offsets commit).
DEFAULT_BATCH_SIZE = 5000
#: How long one poll waits for a batch to fill (the sink's added latency on a quiet topic).
POLL_TIMEOUT_S = 0.5
#: Seconds between plain progress lines (when stderr is not a terminal), unless the
#: settings say otherwise (``JOBPULSE_PROGRESS_SECONDS``).
PLAIN_PROGRESS_S = 10.0
#: Slices of a backoff wait, so that a stop request is seen at once.
_SLEEP_SLICE_S = 0.1


def _one_line(text: str) -> str:
    text = text.strip()
    return text.splitlines()[0] if text else ""


class _Scrubbed(Exception):
    """An error whose text is safe to log (the settings' secrets masked)."""


def _outage_error(exc: BaseException) -> bool:
    """Whether a failure to write is PostgreSQL being away (wait) rather than refusing (stop)."""
    import psycopg

    if isinstance(exc, AuthenticationFailed):
        return False
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError | ServiceUnavailable)


def connect_writer(settings: Settings) -> OffersWriter:
    """A connection to PostgreSQL with the schema migrated and the staging table ready.

    Raises whatever connecting raises: ``psycopg.Error`` or a :class:`JobpulseError`.
    """
    from jobpulse import pg

    conn = pg.connect(settings)
    try:
        schema.migrate(conn)
        return OffersWriter(conn)
    except BaseException:
        conn.close()
        raise


def open_writer(settings: Settings) -> OffersWriter:
    """:func:`connect_writer` at start: any failure is one line (:class:`JobpulseError`)."""
    import psycopg

    from jobpulse import pg

    try:
        return connect_writer(settings)
    except psycopg.Error as exc:  # (connecting raises jobpulse's own errors)
        raise ServiceUnavailable(
            f"PostgreSQL at {pg.display(settings)} refused to set up the sink's table "
            f"({settings.scrub(_one_line(str(exc)))}): the URL's user must be allowed to "
            "create tables in its schema"
        ) from None


def rows_partitions(settings: Settings) -> list[int]:
    """The partitions of the rows topic; one-line errors if it is unset or missing."""
    topic = settings.rows_topic
    if not topic:
        raise UsageError(
            "set JOBPULSE_ROWS_TOPIC (or --rows-topic) to the offer-rows topic the dataflow "
            "writes: the PostgreSQL sink reads it"
        )
    count = topics.topic_partitions(settings, [topic]).get(topic)
    if count is None:
        raise UsageError(
            f"the rows topic {topic} does not exist at {settings.kafka_display}: create it "
            "(`jobpulse topics create` with JOBPULSE_ROWS_TOPIC set) and run the dataflow with "
            "the same JOBPULSE_ROWS_TOPIC"
        )
    return list(range(count))


@dataclass
class SinkResult:
    """What a run did."""

    applied: Applied = field(default_factory=Applied)
    #: Records skipped because they are not offer rows (or not storable).
    skipped: int = 0
    seconds: float = 0.0
    #: Rows the group has not committed at the end (None: Kafka did not say).
    lag: int | None = None
    #: Stopped by Ctrl-C/SIGTERM.
    stopped: bool = False
    #: Rows of the batch abandoned because the stop came while PostgreSQL was away.
    abandoned: int = 0

    @property
    def records(self) -> int:
        return self.applied.rows + self.skipped


class Sink:
    """One run of the sink (see the module doc). :meth:`run` does the work."""

    def __init__(
        self,
        settings: Settings,
        writer: OffersWriter,
        partitions: list[int],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        once: bool = False,
        progress: Progress | None = None,
    ) -> None:
        assert settings.rows_topic
        self.settings = settings
        self.topic = settings.rows_topic
        self.group = sink_group(self.topic)
        self.writer: OffersWriter | None = writer
        self.batch_size = batch_size
        self.once = once
        self.progress = progress or Progress(interval_s=settings.progress_seconds)
        self.result = SinkResult()
        self._health = kafka.ReadHealth("the rows topic", "the sink waits", log)
        self._postgres = Outage(
            "PostgreSQL", settings.outage_limit_seconds, who="the PostgreSQL sink", logger=log
        )
        self._kafka = Outage(
            "Kafka", settings.outage_limit_seconds, who="the PostgreSQL sink", logger=log
        )
        self.consumer = self._consumer()
        #: partition → next offset to commit (the group's committed offset, then ours).
        self.committed: dict[int, int] = {}
        #: ``once``: partition → end offset, for the partitions not read to it yet.
        self.remaining: dict[int, int] = {}
        #: partition → high watermark when it was assigned (before librdkafka fetched any).
        self._highs: dict[int, int] = {}
        self._next_check = time.monotonic() + settings.partition_check_seconds
        self._assign(partitions)

    # -- Kafka --------------------------------------------------------------------------
    def _consumer(self) -> Consumer:
        return kafka.consumer(
            self.settings,
            required={
                "group.id": self.group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": self.once,
            },
            # No tunables: librdkafka's prefetch defaults. (The dataflow's smaller prefetch,
            # queued.min.messages 20000, made reading 200 000 rows three times slower here.)
            error_cb=self._health.error,
        )

    def _assign(self, partitions: list[int]) -> None:
        """Read ``partitions`` from the group's committed offsets (from the start where it
        committed nothing); with ``once``, up to their high watermarks now."""
        from confluent_kafka import KafkaException, TopicPartition

        if not partitions:
            return
        try:
            committed = self.consumer.committed(
                [TopicPartition(self.topic, p) for p in partitions], timeout=10
            )
            assignment = []
            for tp in committed:
                low, high = self.consumer.get_watermark_offsets(tp, timeout=10)
                start = max(tp.offset, low) if tp.offset >= 0 else low
                self.committed[tp.partition] = start
                self._highs[tp.partition] = high
                if self.once:
                    if start >= high:
                        continue
                    self.remaining[tp.partition] = high
                # A concrete offset: no offset lookup before the first fetch.
                assignment.append(TopicPartition(self.topic, tp.partition, start))
        except KafkaException as exc:
            raise ServiceUnavailable(
                f"Kafka at {self.settings.kafka_display} did not answer for the rows topic "
                f"{self.topic} ({kafka.error_text(exc)})"
            ) from None
        if assignment:
            self.consumer.incremental_assign(assignment)

    def _check_partitions(self) -> None:
        """Live runs: start reading partitions added to the rows topic since the start."""
        from confluent_kafka import KafkaException

        if self.once or time.monotonic() < self._next_check:
            return
        self._next_check = time.monotonic() + self.settings.partition_check_seconds
        try:
            info = self.consumer.list_topics(self.topic, timeout=5).topics.get(self.topic)
            new = sorted(set(info.partitions) - set(self.committed)) if info else []
            if new:
                log.info("the rows topic grew: reading partitions %s too", new)
                self._assign(new)
        except (KafkaException, ServiceUnavailable) as exc:
            log.debug("partition check failed: %s", exc)

    def _poll(self) -> tuple[list[OfferRow], dict[int, int]]:
        """One batch: the decoded rows and, per partition, the next offset to commit."""
        from confluent_kafka import KafkaError

        messages: list[Message] = self.consumer.consume(self.batch_size, POLL_TIMEOUT_S)
        rows: list[OfferRow] = []
        positions: dict[int, int] = {}
        skipped: list[tuple[int, int, str]] = []
        remaining = self.remaining
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._done(message.partition())
                    continue
                if error.fatal() or error.code() in (
                    KafkaError.UNKNOWN_TOPIC_OR_PART,
                    KafkaError.TOPIC_AUTHORIZATION_FAILED,
                    KafkaError.GROUP_AUTHORIZATION_FAILED,
                ):
                    raise JobpulseError(f"reading the rows topic {self.topic}: {error.str()}")
                self._health.error(error)
                continue
            partition, offset = message.partition(), message.offset()
            end = remaining.get(partition) if self.once else None
            if self.once and (end is None or offset >= end):
                self._done(partition)  # (fetched past the end before the pause)
                continue
            positions[partition] = offset + 1
            try:
                rows.append(check_storable(OfferRow.from_json(message.value())))
            except (msgspec.DecodeError, Unstorable, TypeError) as exc:
                skipped.append((partition, offset, str(exc)))
            if end is not None and offset + 1 >= end:
                self._done(partition)
        if messages:
            self._health.ok()
        if skipped:
            partition, offset, reason = skipped[0]
            log.warning(
                "skipped %d record(s) of %s that are not offer rows (first: partition %d, "
                "offset %d: %s); only the dataflow should write this topic",
                len(skipped),
                self.topic,
                partition,
                offset,
                reason,
            )
            self.result.skipped += len(skipped)
            metrics.SINK_SKIPPED.inc(len(skipped))
        return rows, positions

    def _done(self, partition: int) -> None:
        """``once``: ``partition`` is read to its end offset; stop fetching it."""
        from confluent_kafka import TopicPartition

        if self.remaining.pop(partition, None) is not None:
            self.consumer.pause([TopicPartition(self.topic, partition)])

    def _commit(self, positions: dict[int, int], stop: StopSignals) -> bool:
        """Commit ``positions`` synchronously, waiting out a Kafka outage; False if a stop
        came while waiting (the rows are in PostgreSQL, the next start re-reads them)."""
        from confluent_kafka import KafkaException, TopicPartition

        offsets = [TopicPartition(self.topic, p, o) for p, o in sorted(positions.items())]
        while True:
            try:
                done = self.consumer.commit(offsets=offsets, asynchronous=False) or []
                failed = next((tp.error for tp in done if tp.error is not None), None)
                if failed is not None:
                    raise KafkaException(failed)
                self._kafka.succeeded()
                self.committed.update(positions)
                return True
            except KafkaException as exc:
                delay = self._kafka.failed(_Scrubbed(f"commit: {kafka.error_text(exc)}"))
                if not _sleep(delay, stop):
                    return False

    # -- PostgreSQL ---------------------------------------------------------------------
    def _write(self, rows: list[OfferRow], stop: StopSignals) -> Applied | None:
        """Write one batch, waiting out a PostgreSQL outage; ``None`` if a stop came while
        waiting (nothing of the batch committed)."""
        import psycopg

        while True:
            try:
                if self.writer is None:
                    self.writer = connect_writer(self.settings)
                started = time.perf_counter()
                applied = self.writer.write(rows)
                metrics.SINK_WRITE_SECONDS.observe(time.perf_counter() - started)
                self._postgres.succeeded()
                _count(applied)
                return applied
            except (psycopg.Error, JobpulseError) as exc:
                self._drop_writer()
                text = self.settings.scrub(_one_line(str(exc))) or type(exc).__name__
                if not _outage_error(exc):
                    if isinstance(exc, JobpulseError):
                        raise  # e.g. the credentials refused: waiting will not help
                    raise JobpulseError(
                        f"PostgreSQL refused a batch of {len(rows)} rows ({text}); nothing "
                        "of it was committed, the next start retries it"
                    ) from None
                delay = self._postgres.failed(_Scrubbed(text))
                if not _sleep(delay, stop):
                    return None

    def _drop_writer(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:  # a broken connection may fail to close: it is gone anyway
                log.debug("closing a failed connection", exc_info=True)
            self.writer = None

    # -- the loop -----------------------------------------------------------------------
    def lag(self) -> int:
        """Rows not committed yet, from the watermarks librdkafka last fetched (cheap)."""
        from confluent_kafka import TopicPartition

        lag = 0
        for partition, committed in self.committed.items():
            tp = TopicPartition(self.topic, partition)
            _, high = self.consumer.get_watermark_offsets(tp, cached=True)
            high = max(high, self._highs.get(partition, 0))
            lag += max(0, high - committed)
        return lag

    def _last_lag(self) -> int | None:
        """:meth:`lag` for the last progress line, ``None`` if the consumer cannot say."""
        try:
            return self.lag()
        except Exception:  # (the run is failing already: its own error is the one to show)
            return None

    def run(self, stop: StopSignals) -> SinkResult:
        """Batches until stopped (or, with ``once``, until the end offsets); then the
        consumer is closed and the result has the group's lag.

        One batch at a time: poll, write, commit. (Polling the next batch on a thread while
        one is written was slower on the 2-core development machine: the two threads fight
        for the GIL and psycopg waits for it after every round trip.)
        """
        result = self.result
        started = time.monotonic()
        self.progress.start()
        try:
            while not stop.count and not (self.once and not self.remaining):
                rows, positions = self._poll()
                if rows:
                    applied = self._write(rows, stop)
                    if applied is None:  # stopped while PostgreSQL was away
                        result.abandoned = len(rows)
                        break
                    result.applied += applied
                if positions and not self._commit(positions, stop):
                    break
                lag = self.lag()
                metrics.SINK_LAG.set(lag)
                self.progress.update(result, lag)
                self._check_partitions()
        finally:
            result.seconds = time.monotonic() - started
            result.stopped = stop.count > 0
            self.progress.finish(result, self._last_lag())
            self.consumer.close()
            self._drop_writer()
        result.lag = topics.group_lag(self.settings, self.group, self.topic)
        if result.lag is not None:
            metrics.SINK_LAG.set(result.lag)
        return result


def _count(applied: Applied) -> None:
    """One batch in the metrics (``jobpulse_sink_rows_written_total`` by outcome)."""
    for outcome, rows in (
        ("upsert", applied.upserts),
        ("delete", applied.deletes),
        ("ignored", applied.ignored),
    ):
        if rows:
            metrics.SINK_ROWS.labels(outcome).inc(rows)


def _sleep(seconds: float, stop: StopSignals) -> bool:
    """Sleep ``seconds`` unless a stop is requested; whether no stop came."""
    deadline = time.monotonic() + seconds
    while not stop.count:
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(_SLEEP_SLICE_S, left))
    return False


# -- progress and summary ----------------------------------------------------------------


def counts_text(result: SinkResult) -> str:
    """``1200 rows (1000 upserts, 150 deletes, 50 stale/replayed ignored)``."""
    applied = result.applied
    text = (
        f"{applied.rows} rows ({applied.upserts} upserts, {applied.deletes} deletes, "
        f"{applied.ignored} stale/replayed ignored)"
    )
    if result.skipped:
        text += f", {result.skipped} records skipped (not offer rows)"
    return text


def summary(result: SinkResult, *, once: bool) -> str:
    """The one line a run ends with."""
    seconds = result.seconds
    if once:
        rate = result.applied.rows / seconds if seconds > 0 else 0.0
        timing = f"in {seconds:.1f} s ({rate:,.0f}/s)"
    else:
        timing = f"over {seconds:.1f} s including idle time"
    lag = "unknown" if result.lag is None else str(result.lag)
    line = f"sink: wrote {counts_text(result)} {timing}; lag {lag}"
    if result.abandoned:
        line += (
            f"; stopped while PostgreSQL was unreachable: the last {result.abandoned} rows "
            "were not written (the next start reads them again)"
        )
    elif result.stopped:
        line += " — stopped (Ctrl-C or SIGTERM)"
    return line


class Progress:
    """The sink's progress on stderr (:mod:`jobpulse.progress`): rows, rows/s, lag and ETA,
    one line redrawn on a terminal, otherwise a plain line every ``interval_s`` while rows
    come in. Called once per batch; the line is built only when it is due."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        interval_s: float = PLAIN_PROGRESS_S,
        terminal: bool | None = None,
    ) -> None:
        self.display = ProgressDisplay(
            "sink", interval_s=interval_s, unit="rows", stream=stream, terminal=terminal
        )

    def start(self) -> None:
        self.display.start()

    def update(self, result: SinkResult, lag: int) -> None:
        if self.display.due():
            self.display.show(_sample(result, lag))

    def finish(self, result: SinkResult | None = None, lag: int | None = None) -> None:
        self.display.finish(_sample(result, lag) if result is not None else None)


def _sample(result: SinkResult, lag: int | None) -> Sample:
    applied = result.applied
    detail = f"{applied.upserts} upserts, {applied.deletes} deletes, {applied.ignored} ignored"
    if result.skipped:
        detail += f", {result.skipped} skipped"
    return Sample(result.records, lag, detail)
