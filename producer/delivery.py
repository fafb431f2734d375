"""Sending offers to Kafka: the producer, its pacing, progress output and the summary.

- :class:`OfferSender` — a confluent-kafka ``Producer`` with ``acks=all`` and idempotence on,
  keyed by offer id (one offer's records stay in order on one partition), batching for
  throughput, and delivery reports counted (delivered / failed, with the error texts).
- :class:`Pacer` — an absolute schedule: record *i* is due at ``start + i / rate``. Sending
  whatever is due in one go keeps the average rate exact even when the process stalls or the
  sleep granularity is coarse (no drift, unlike sleeping ``1/rate`` after each record).
- :func:`pump` — the send loop: pacing, optional duration limit, periodic progress, Ctrl-C
  (or SIGTERM) stops sending and flushes what was already handed to the producer.
- Progress: a rich bar on a terminal (:class:`RichProgress`), plain periodic lines otherwise
  (:class:`PlainProgress`), both on stderr.
"""

from __future__ import annotations

import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from jobpulse import kafka, processes
from jobpulse.errors import JobpulseError, ServiceUnavailable
from jobpulse.offer import Offer
from jobpulse.settings import Settings

if TYPE_CHECKING:
    from confluent_kafka import KafkaError, Message
    from rich.console import Console

#: Tuning defaults; JOBPULSE_KAFKA__* pass-through settings override them (the rule of
#: :mod:`jobpulse.kafka`).
PRODUCER_DEFAULTS: dict[str, Any] = {
    "linger.ms": 20,  # fill batches: per-request overhead dominates small records
    "batch.num.messages": 10_000,
    "batch.size": 1_000_000,
    "compression.type": "lz4",  # JSON offers shrink ~3x; lz4 costs little CPU
    "queue.buffering.max.messages": 500_000,
    "message.timeout.ms": 120_000,  # give up on a record after 2 minutes
    "allow.auto.create.topics": False,  # a missing topic is an error, not a 1-partition topic
}
#: Delivery guarantees that pass-through settings cannot weaken.
PRODUCER_GUARANTEES: Mapping[str, Any] = kafka.IDEMPOTENT
#: Records handed to the producer between two polls / progress updates.
CHUNK = 2_000
#: How long the final flush waits for outstanding deliveries, beyond message.timeout.ms.
FLUSH_MARGIN_S = 5.0


class OfferSender:
    """A Kafka producer for the offers topic that counts delivery reports."""

    def __init__(self, settings: Settings, **extra: Any) -> None:
        """``extra``: librdkafka settings that win over the pass-through ones (but not over
        :data:`PRODUCER_GUARANTEES`)."""
        self.topic = settings.offers_topic
        self.bootstrap = settings.kafka_bootstrap
        required = {**extra, **PRODUCER_GUARANTEES}
        config = kafka.client_config(settings, required=required, tunables=PRODUCER_DEFAULTS)
        self.message_timeout_s = float(config.get("message.timeout.ms", 300_000)) / 1000
        self._producer = kafka.producer(
            settings,
            required=required,
            tunables=PRODUCER_DEFAULTS,
            on_delivery=self._on_delivery,
            error_cb=self._on_error,
        )
        self.produced = 0
        self.delivered = 0
        self.failed = 0
        self.errors: Counter[str] = Counter()
        self.fatal: str | None = None

    # -- callbacks (run inside poll/flush) --------------------------------------------
    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.failed += 1
            self.errors[err.str()] += 1

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self.fatal = err.str()

    # -- sending ----------------------------------------------------------------------
    def check_topic(self, timeout: float = 10.0) -> None:
        """Fail clearly, before sending anything, if Kafka or the topic is not there."""
        from confluent_kafka import KafkaError, KafkaException

        try:
            metadata = self._producer.list_topics(topic=self.topic, timeout=timeout)
        except KafkaException as exc:
            raise ServiceUnavailable(
                f"Kafka at {self.bootstrap} is not reachable ({kafka.error_text(exc)}): "
                "start it with `jobpulse stack up` or set JOBPULSE_KAFKA_BOOTSTRAP"
            ) from None
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            if topic is not None and topic.error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise JobpulseError(f"topic {self.topic!r} is not usable: {topic.error.str()}")
            raise JobpulseError(
                f"topic {self.topic!r} does not exist on {self.bootstrap}: "
                "create it with `jobpulse topics create`"
            )

    def send(self, offers: Iterable[Offer]) -> int:
        """Hand ``offers`` to the producer (waiting while its queue is full); return count."""
        producer, topic = self._producer, self.topic
        count = 0
        for offer in offers:
            kafka.produce(producer, topic, offer.to_json(), offer.key())
            count += 1
            self.produced += 1
        return count

    def poll(self, timeout: float = 0.0) -> None:
        """Serve delivery reports (and wait up to ``timeout`` seconds for one)."""
        self._producer.poll(timeout)

    def flush(
        self, timeout: float | None = None, give_up: Callable[[], bool] = lambda: False
    ) -> int:
        """Wait for outstanding deliveries; return how many are still unconfirmed.

        Flushes in short slices so that ``give_up`` (a second Ctrl-C) is noticed quickly.
        """
        limit = time.monotonic() + (
            timeout if timeout is not None else self.message_timeout_s + FLUSH_MARGIN_S
        )
        remaining = len(self._producer)
        while remaining and time.monotonic() < limit and self.fatal is None and not give_up():
            remaining = self._producer.flush(min(0.5, max(0.0, limit - time.monotonic())))
        return remaining


@dataclass
class Pacer:
    """Absolute schedule for ``rate`` records/s from ``start`` (monotonic seconds)."""

    rate: float
    start: float

    def due(self, now: float) -> int:
        """How many records (in total) are due at ``now``: record i is due at start + i/rate."""
        return max(0, math.floor((now - self.start) * self.rate) + 1)

    def time_of(self, index: int) -> float:
        """When record ``index`` (0-based) is due."""
        return self.start + index / self.rate


class Progress(Protocol):
    """Where the send loop reports how far it got."""

    def start(self, total: int | None) -> None: ...
    def update(self, sent: int, delivered: int, failed: int) -> None: ...
    def finish(self) -> None: ...


class PlainProgress:
    """One line every ``interval`` seconds (for logs and pipes, not terminals)."""

    def __init__(
        self,
        stream: TextIO | None = None,
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream or sys.stderr
        self.interval = interval
        self.clock = clock
        self.total: int | None = None
        self._last_time = 0.0
        self._last_sent = 0
        self._began = 0.0

    def start(self, total: int | None) -> None:
        self.total = total
        self._began = self._last_time = self.clock()

    def update(self, sent: int, delivered: int, failed: int) -> None:
        now = self.clock()
        if now - self._last_time < self.interval:
            return
        rate = (sent - self._last_sent) / (now - self._last_time)
        self._last_time, self._last_sent = now, sent
        print(progress_line(sent, delivered, failed, rate, self.total), file=self.stream)
        self.stream.flush()

    def finish(self) -> None:
        pass


def format_rate(rate: float) -> str:
    """``123,456`` for big rates, 3 significant digits for small ones (``0.05``)."""
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:.3g}"


def progress_line(sent: int, delivered: int, failed: int, rate: float, total: int | None) -> str:
    """``sent 1200/5069 (24%), 1000 records/s, ETA 4s, delivered 1150, failed 0``."""
    parts = [f"sent {sent}"]
    if total:
        parts[0] += f"/{total} ({100 * sent / total:.0f}%)"
    parts.append(f"{format_rate(rate)} records/s")
    if total and rate > 0:
        parts.append(f"ETA {max(0, total - sent) / rate:.0f}s")
    parts.append(f"delivered {delivered}, failed {failed}")
    return "produce: " + ", ".join(parts)


class RichProgress:
    """A live progress bar (records sent, rate, ETA) on a terminal."""

    def __init__(self, console: Console | None = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichBar

        self._bar = RichBar(
            TextColumn("[bold]produce"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} records/s"),
            TextColumn("failed {task.fields[failed]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            transient=False,
        )
        self._task: Any = None
        self._began = 0.0

    def start(self, total: int | None) -> None:
        self._bar.start()
        self._began = time.monotonic()
        self._task = self._bar.add_task("produce", total=total, rate="0", failed=0)

    def update(self, sent: int, delivered: int, failed: int) -> None:
        elapsed = max(1e-9, time.monotonic() - self._began)
        self._bar.update(self._task, completed=sent, rate=f"{sent / elapsed:,.0f}", failed=failed)

    def finish(self) -> None:
        self._bar.stop()


def default_progress() -> Progress:
    """A bar when stderr is a terminal, plain periodic lines otherwise."""
    return RichProgress() if sys.stderr.isatty() else PlainProgress()


@dataclass
class Outcome:
    """What a send run did."""

    produced: int
    delivered: int
    failed: int
    unconfirmed: int
    #: Time spent handing records to the producer (paced), and then waiting for the acks.
    seconds: float
    flush_seconds: float
    interrupted: bool
    fatal: str | None = None
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        """Records handed over per second of sending: the pace a consumer sees."""
        return self.produced / self.seconds if self.seconds > 0 else 0.0

    @property
    def throughput(self) -> float:
        """Records acknowledged per second, the final flush included."""
        elapsed = self.seconds + self.flush_seconds
        return self.delivered / elapsed if elapsed > 0 else 0.0

    @property
    def not_delivered(self) -> int:
        return self.failed + self.unconfirmed


def pump(
    offers: Iterable[Offer],
    sender: OfferSender,
    *,
    rate: float | None = None,
    duration: float | None = None,
    total: int | None = None,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Outcome:
    """Send ``offers`` (paced to ``rate``/s, for at most ``duration`` s), then flush.

    Ctrl-C or SIGTERM stops sending; what was already handed to the producer is flushed and
    counted. ``seconds`` is the sending time (the final flush excluded).
    """
    progress = progress or PlainProgress()
    stream = iter(offers)
    start = clock()
    with processes.stop_signals() as stop:
        progress.start(total)
        _send_loop(stream, sender, rate, duration, start, progress, clock, stop)
        seconds = clock() - start
        unconfirmed = sender.flush(give_up=lambda: stop.count >= 2)
        flush_seconds = clock() - start - seconds
        progress.update(sender.produced, sender.delivered, sender.failed)
        progress.finish()
    interrupted = stop.count > 0
    return Outcome(
        produced=sender.produced,
        delivered=sender.delivered,
        failed=sender.failed,
        unconfirmed=unconfirmed,
        seconds=seconds,
        flush_seconds=flush_seconds,
        interrupted=interrupted,
        fatal=sender.fatal,
        errors=sender.errors,
    )


def _send_loop(
    stream: Iterator[Offer],
    sender: OfferSender,
    rate: float | None,
    duration: float | None,
    start: float,
    progress: Progress,
    clock: Callable[[], float],
    stop: processes.StopSignals,
) -> None:
    pacer = Pacer(rate, start) if rate else None
    deadline = start + duration if duration is not None else None
    sent = 0
    while sender.fatal is None and not stop.count:
        now = clock()
        if deadline is not None and now >= deadline:
            return
        batch = CHUNK
        if pacer is not None:
            batch = min(CHUNK, pacer.due(now) - sent)
            if batch <= 0:
                wake = pacer.time_of(sent)
                if deadline is not None:
                    wake = min(wake, deadline)
                _wait(sender, wake - now)
                continue
        count = sender.send(islice(stream, batch))
        sent += count
        sender.poll(0)
        progress.update(sender.produced, sender.delivered, sender.failed)
        if count < batch:
            return  # the source is exhausted


def _wait(sender: OfferSender, seconds: float) -> None:
    """Sleep ``seconds``, serving delivery reports when the wait is long enough to bother."""
    if seconds >= 0.002:
        # poll's timeout has millisecond granularity; short slices keep Ctrl-C responsive
        # (the signal is handled only when the C call returns).
        sender.poll(min(seconds - 0.001, 0.2))
    elif seconds > 0:
        time.sleep(seconds)
