"""One reader per server process: Redis (through :class:`~jobpulse.store.Store`) and Kafka
end offsets, fanned out to every browser session.

A Redis thread waits on the store's pub/sub notification (``<prefix>:updates``) and reads
the breakdown, windows and partition stats as soon as one arrives (at most every
``min_interval_s``: a dataflow writing 40 times a second costs 4 reads and 4 browser updates
a second), or every ``fallback_s`` seconds when none arrives (a missed notification, a writer
that does not publish). It hands an immutable
:class:`~jobpulse.dashboard.view_model.Snapshot` to every listener, at least once per
``tick_s`` so "time since last update" keeps moving. A Kafka thread reads the offers topic's
end offsets every ``kafka_every_s`` seconds for the lag figures, so a slow or absent Kafka
never delays a Redis update. When Redis goes away the snapshot says so and the thread
reconnects by itself.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from itertools import count

import redis
from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from jobpulse import kafka
from jobpulse.dashboard.view_model import Snapshot, records_rate
from jobpulse.offer_row import sink_group
from jobpulse.settings import Settings
from jobpulse.store import Store, totals
from jobpulse.topics import group_lag

log = logging.getLogger(__name__)

Listener = Callable[[Snapshot], None]

#: How many recent windows the trend charts show.
TREND_WINDOWS = 30
#: Seconds of history the records/s figure is measured over.
RATE_HORIZON_S = 10.0


class Feed:
    """Reads Redis and Kafka on background threads and pushes snapshots to listeners."""

    def __init__(
        self,
        settings: Settings,
        *,
        fallback_s: float = 5.0,
        min_interval_s: float = 0.25,
        tick_s: float = 1.0,
        kafka_every_s: float = 3.0,
        trend_windows: int = TREND_WINDOWS,
    ) -> None:
        self.settings = settings
        self.fallback_s = fallback_s
        self.min_interval_s = min_interval_s
        self.tick_s = tick_s
        self.kafka_every_s = kafka_every_s
        self.trend_windows = trend_windows
        self._lock = threading.Lock()
        self._listeners: dict[int, Listener] = {}
        self._ids = count()
        self._snapshot = Snapshot(taken_at=time.time())
        self._samples: deque[tuple[float, int]] = deque()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> Feed:
        """Start the Redis and Kafka threads (daemon threads; idempotent)."""
        if not self._threads:
            self._threads = [
                threading.Thread(target=self._redis_loop, name="jobpulse-feed-redis", daemon=True),
                threading.Thread(target=self._kafka_loop, name="jobpulse-feed-kafka", daemon=True),
            ]
            for thread in self._threads:
                thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)

    # -- listeners ---------------------------------------------------------------------
    @property
    def latest(self) -> Snapshot:
        with self._lock:
            return self._snapshot

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(snapshot)`` on every update; returns the unsubscribe function."""
        with self._lock:
            listener_id = next(self._ids)
            self._listeners[listener_id] = listener

        def unsubscribe() -> None:
            with self._lock:
                self._listeners.pop(listener_id, None)

        return unsubscribe

    def _update(self, **changes: object) -> None:
        """Replace fields of the current snapshot and push it to every listener."""
        with self._lock:
            self._snapshot = replace(self._snapshot, taken_at=time.time(), **changes)  # type: ignore[arg-type]
            snapshot = self._snapshot
            listeners = list(self._listeners.items())
        for listener_id, listener in listeners:
            try:
                listener(snapshot)
            except Exception:  # a closed session must not stop the others' updates
                log.exception("dashboard listener failed; dropping it")
                with self._lock:
                    self._listeners.pop(listener_id, None)

    # -- Redis -------------------------------------------------------------------------
    def _connect(self) -> Store:
        store = Store.connect(self.settings, check=False)
        store.client.ping()  # redis errors, not JobpulseError: the feed reports them as state
        return store

    def _read(self, store: Store) -> None:
        breakdown = store.breakdown()
        windows = store.windows(last=self.trend_windows)
        partitions = store.partitions()
        now = time.monotonic()
        self._samples.append((now, totals(partitions.values()).records))
        while len(self._samples) > 2 and now - self._samples[0][0] > RATE_HORIZON_S:
            self._samples.popleft()
        self._update(
            breakdown=breakdown,
            windows=tuple(windows),
            partitions=partitions,
            redis_ok=True,
            redis_error=None,
            records_per_s=records_rate(list(self._samples)),
        )

    def _redis_loop(self) -> None:
        store: Store | None = None
        pubsub: redis.client.PubSub | None = None
        last_read = 0.0
        while not self._stop.is_set():
            try:
                if store is None or pubsub is None:
                    store = self._connect()
                    pubsub = store.pubsub()
                    self._read(store)
                    last_read = time.monotonic()
                    continue
                message = pubsub.get_message(timeout=self.tick_s)
                if message is not None:
                    # The dataflow may write dozens of times a second: read at most every
                    # ``min_interval_s``, folding the notifications that arrive meanwhile.
                    self._stop.wait(max(self.min_interval_s - (time.monotonic() - last_read), 0))
                    while pubsub.get_message(timeout=0) is not None:
                        pass
                if message is not None or time.monotonic() - last_read >= self.fallback_s:
                    self._read(store)
                    last_read = time.monotonic()
                else:
                    self._update()  # keep "time since last update" ticking
            except (redis.RedisError, OSError) as exc:
                _close(pubsub, store)
                store, pubsub = None, None
                self._samples.clear()
                self._update(
                    redis_ok=False, redis_error=error_text(self.settings, exc), records_per_s=None
                )
                self._stop.wait(self.tick_s)
        _close(pubsub, store)

    # -- Kafka -------------------------------------------------------------------------
    def _kafka_loop(self) -> None:
        # Reachability is reported on the page instead of by error callbacks.
        admin = kafka.admin(self.settings, error_cb=lambda _err: None)
        checks = 0
        while not self._stop.is_set():
            checks += 1
            try:
                watermarks = high_watermarks(admin, self.settings.offers_topic, timeout=2.0)
                self._update(
                    high_watermarks=watermarks,
                    kafka_ok=True,
                    kafka_error=None,
                    offers_topic_missing=watermarks is None,
                    sink_lag=self._sink_lag(),
                    kafka_checks=checks,
                )
            except KafkaException as exc:
                self._update(
                    high_watermarks=None,
                    kafka_ok=False,
                    kafka_error=error_text(self.settings, exc),
                    offers_topic_missing=False,
                    kafka_checks=checks,
                )
            self._stop.wait(self.kafka_every_s)

    def _sink_lag(self) -> int | None:
        """The PostgreSQL sink's lag on the rows topic (None: no rows topic, or unknown)."""
        rows_topic = self.settings.rows_topic
        if not rows_topic:
            return None
        return group_lag(self.settings, sink_group(rows_topic), rows_topic, timeout=2.0)


def high_watermarks(admin: AdminClient, topic: str, *, timeout: float) -> dict[int, int] | None:
    """End offset of every partition of ``topic``; ``None`` when the topic does not exist.

    Asks for the metadata of *all* topics and looks ``topic`` up: a metadata request naming
    the topic would make a broker with ``auto.create.topics.enable`` create it, and a
    dashboard must never create the offers topic (with the broker's default partitions).
    """
    metadata = admin.list_topics(timeout=timeout)
    topic_meta = metadata.topics.get(topic)
    if topic_meta is None or topic_meta.error is not None or not topic_meta.partitions:
        return None
    request = {TopicPartition(topic, p): OffsetSpec.latest() for p in topic_meta.partitions}
    futures = admin.list_offsets(request, request_timeout=timeout)
    return {tp.partition: future.result().offset for tp, future in futures.items()}


def _close(pubsub: redis.client.PubSub | None, store: Store | None) -> None:
    for closeable in (pubsub, store.client if store else None):
        if closeable is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                closeable.close()


def error_text(settings: Settings, exc: BaseException) -> str:
    """``exc`` as the page shows it: one line, every secret of ``settings`` masked (the
    Redis and Kafka clients' messages may quote a URL or a configuration), then cut to 200
    characters (after masking, so the cut never leaves part of a secret)."""
    return settings.scrub(" ".join(str(exc).split()))[:200] or type(exc).__name__
