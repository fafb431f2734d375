"""The project's Kafka topics (offers, deltas, DLQ), created through the admin API.

Other components and tests call :func:`ensure_topics`; ``jobpulse topics create`` is a thin
wrapper around it. The admin clients come from :mod:`jobpulse.kafka`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from jobpulse import kafka
from jobpulse.errors import JobpulseError, ServiceUnavailable
from jobpulse.kafka import error_code, error_text
from jobpulse.settings import Settings

if TYPE_CHECKING:
    from confluent_kafka import Consumer
    from confluent_kafka.admin import AdminClient, ClusterMetadata

CREATED = "created"
EXISTS = "exists"


class TopicMismatch(JobpulseError):
    """An existing topic has a different partition count than the settings ask for."""


def project_topics(settings: Settings) -> list[str]:
    """The topics jobpulse uses: offers (topic1), deltas (topic2), the dead-letter topic and,
    when set, the offer-rows topic of the PostgreSQL sink."""
    topics = [settings.offers_topic, settings.deltas_topic, settings.dlq_topic]
    return [*topics, settings.rows_topic] if settings.rows_topic else topics


#: Kept forever, whatever the broker's default retention (often 7 days): a recount — and a
#: lost recovery volume is one — rereads the offers topic from offset 0, so every open offer's
#: record must still be there; the deltas (topic2) and offer-rows topics are what a new
#: consumer (``jobpulse verify``, a new PostgreSQL sink) folds from their first offset. Not
#: compacted: the offers topic accepts keyless records (a compacted topic refuses them), and
#: the ordering rule and the stale/DLQ counters are defined over every record.
KEEP_FOREVER = {"retention.ms": "-1", "retention.bytes": "-1"}


def topic_config(settings: Settings, name: str) -> dict[str, str]:
    """Topic-level configuration ``ensure_topics`` creates topic ``name`` with: infinite
    retention (:data:`KEEP_FOREVER`) for the offers, deltas and rows topics, the broker's
    defaults for the dead-letter topic (kept for inspection, never reread)."""
    kept = {settings.offers_topic, settings.deltas_topic, settings.rows_topic}
    return dict(KEEP_FOREVER) if name in kept else {}


def admin_client(settings: Settings, **extra: Any) -> AdminClient:
    """An AdminClient with the settings' client config (SASL/TLS pass-through included)."""
    return kafka.admin(settings, required=extra)


def cluster_metadata(
    settings: Settings, timeout: float = 5.0, *, client: Consumer | None = None
) -> ClusterMetadata:
    """Cluster metadata, or :class:`ServiceUnavailable` naming the bootstrap address.

    ``client``: ask through this consumer (which then knows the cluster) instead of the
    admin client."""
    from confluent_kafka import KafkaException

    try:
        metadata = (client or admin_client(settings)).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise ServiceUnavailable(
            f"Kafka at {settings.kafka_display} is not reachable ({error_text(exc)}): "
            "start it with `jobpulse stack up`"
        ) from None
    if not metadata.brokers:
        raise ServiceUnavailable(f"Kafka at {settings.kafka_display} reports no brokers yet")
    return metadata


def kafka_ready(settings: Settings, timeout: float = 2.0) -> bool:
    """Whether Kafka answers a metadata request with at least one broker."""
    try:
        cluster_metadata(settings, timeout=timeout)
    except JobpulseError:
        return False
    return True


def topic_partitions(
    settings: Settings, topics: Iterable[str], metadata: ClusterMetadata | None = None
) -> dict[str, int]:
    """Partition count of each of ``topics`` that exists (missing topics are left out), from
    ``metadata`` when given, else asked now."""
    metadata = metadata or cluster_metadata(settings)
    return {
        name: len(metadata.topics[name].partitions)
        for name in topics
        if name in metadata.topics and metadata.topics[name].error is None
    }


def ensure_topics(
    settings: Settings,
    topics: Iterable[str] | None = None,
    partitions: int | None = None,
    timeout: float = 30.0,
) -> dict[str, str]:
    """Create the missing ``topics`` (default: the project's three) and wait until usable.

    Returns ``{topic: "created" | "exists"}``. Raises :class:`TopicMismatch` if an existing
    topic has another partition count than ``partitions`` (default ``settings.partitions``);
    the missing topics are still created first. An offers topic with *more* partitions is
    fine: it was grown (:func:`grow_partitions`), the way to scale the dataflow out.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    names = list(dict.fromkeys(topics if topics is not None else project_topics(settings)))
    wanted = partitions or settings.partitions
    existing = topic_partitions(settings, names)
    missing = [name for name in names if name not in existing]
    result = dict.fromkeys(existing, EXISTS)
    if missing:
        # replication_factor=-1: the broker default (1 on the local stack).
        # Keep the client referenced until the futures resolve: a collected client fails them.
        admin = admin_client(settings)
        futures = admin.create_topics(
            [
                NewTopic(
                    name,
                    num_partitions=wanted,
                    replication_factor=-1,
                    config=topic_config(settings, name),
                )
                for name in missing
            ],
            request_timeout=timeout,
        )
        for name, future in futures.items():
            try:
                future.result()
                result[name] = CREATED
            except KafkaException as exc:
                if error_code(exc) != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise JobpulseError(
                        f"creating topic {name} failed: {error_text(exc)}"
                    ) from None
                result[name] = EXISTS
        existing = _wait_for_leaders(settings, names, timeout)
    mismatched = {
        name: count
        for name, count in existing.items()
        if count != wanted and not (name == settings.offers_topic and count > wanted)
    }
    if mismatched:
        details = ", ".join(f"{name} has {count}" for name, count in sorted(mismatched.items()))
        raise TopicMismatch(
            f"partition count mismatch: {details}, but JOBPULSE_PARTITIONS is {wanted}: "
            "delete those topics or set JOBPULSE_PARTITIONS to match"
        )
    return {name: result[name] for name in names}


def _wait_for_leaders(
    settings: Settings, names: list[str], timeout: float, minimum: int = 1
) -> dict[str, int]:
    """Partition counts once every partition of ``names`` has a leader (producers need one)
    and each has at least ``minimum`` partitions."""
    deadline = time.monotonic() + timeout
    while True:
        metadata = cluster_metadata(settings)
        counts: dict[str, int] = {}
        for name in names:
            topic = metadata.topics.get(name)
            if topic is None or topic.error is not None or len(topic.partitions) < minimum:
                break
            if any(p.leader < 0 for p in topic.partitions.values()):
                break
            counts[name] = len(topic.partitions)
        else:
            return counts
        if time.monotonic() > deadline:
            raise ServiceUnavailable(f"topics {', '.join(names)} have no leaders after {timeout}s")
        time.sleep(0.1)


def grow_partitions(settings: Settings, count: int, timeout: float = 30.0) -> int:
    """Grow the offers topic to ``count`` partitions (Kafka admin ``create_partitions``).

    Returns the count it had. Kafka cannot remove partitions: a smaller ``count`` is refused
    (:class:`TopicMismatch`); the same count changes nothing. Records already written stay
    where they are; the dataflow's state is keyed by offer id, so an offer whose key now
    hashes to another partition still meets its state (see ``dataflows/open_offers.py``).
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import NewPartitions

    topic = settings.offers_topic
    before = topic_partitions(settings, [topic]).get(topic)
    if before is None:
        raise JobpulseError(
            f"topic {topic} does not exist at {settings.kafka_display}: "
            "create it with `jobpulse topics create`"
        )
    if count < before:
        raise TopicMismatch(
            f"cannot shrink {topic} from {before} to {count} partitions: Kafka can only add "
            "partitions"
        )
    if count == before:
        return before
    admin = admin_client(settings)
    futures = admin.create_partitions([NewPartitions(topic, count)], request_timeout=timeout)
    try:
        futures[topic].result()
    except KafkaException as exc:
        raise JobpulseError(
            f"growing {topic} to {count} partitions failed: {error_text(exc)}"
        ) from None
    _wait_for_leaders(settings, [topic], timeout, minimum=count)
    return before


def delete_topics(settings: Settings, topics: Iterable[str], timeout: float = 30.0) -> list[str]:
    """Delete ``topics`` that exist; returns the deleted names (missing ones are skipped)."""
    from confluent_kafka import KafkaError, KafkaException

    names = list(topics)
    existing = [name for name in names if name in topic_partitions(settings, names)]
    if not existing:
        return []
    deleted: list[str] = []
    admin = admin_client(settings)
    futures = admin.delete_topics(existing, request_timeout=timeout)
    for name, future in futures.items():
        try:
            future.result()
            deleted.append(name)
        except KafkaException as exc:
            if error_code(exc) != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise JobpulseError(f"deleting topic {name} failed: {error_text(exc)}") from None
    return deleted


def group_lag(settings: Settings, group: str, topic: str, timeout: float = 5.0) -> int | None:
    """How many records of ``topic`` consumer group ``group`` has not committed yet: the sum
    over its partitions of high watermark − committed offset (the low watermark where the
    group committed nothing). ``None`` if the topic does not exist or Kafka does not answer
    within ``timeout``. E.g. the PostgreSQL sink's lag:
    ``group_lag(settings, offer_row.sink_group(topic), topic)``."""
    from confluent_kafka import KafkaException, TopicPartition

    # A consumer that never subscribes does not join the group: it only reads its offsets.
    consumer = kafka.consumer(settings, required={"group.id": group, "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
        info = metadata.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            return None
        wanted = [TopicPartition(topic, p) for p in sorted(info.partitions)]
        lag = 0
        for committed in consumer.committed(wanted, timeout=timeout):
            low, high = consumer.get_watermark_offsets(committed, timeout=timeout)
            start = committed.offset if committed.offset >= 0 else low
            lag += max(0, high - max(start, low))
        return lag
    except KafkaException:
        return None
    finally:
        consumer.close()


class EndOffsets:
    """Reads the high watermarks of a topic's partitions, in one request per call, over one
    admin client kept open (progress displays and ``jobpulse status`` ask repeatedly)."""

    def __init__(self, settings: Settings, topic: str, timeout: float = 5.0) -> None:
        self.settings = settings
        self.topic = topic
        self.timeout = timeout
        self._admin = admin_client(settings)

    def read(self) -> dict[int, int] | None:
        """Partition → high watermark; ``None`` if the topic does not exist or Kafka does
        not answer within the timeout (a progress line then shows the lag as unknown)."""
        from confluent_kafka import KafkaException, TopicPartition
        from confluent_kafka.admin import OffsetSpec

        try:
            metadata = self._admin.list_topics(self.topic, timeout=self.timeout)
            info = metadata.topics.get(self.topic)
            if info is None or info.error is not None or not info.partitions:
                return None
            futures = self._admin.list_offsets(
                {TopicPartition(self.topic, p): OffsetSpec.latest() for p in info.partitions},
                request_timeout=self.timeout,
            )
            return {tp.partition: future.result().offset for tp, future in futures.items()}
        except KafkaException:
            return None


def end_offsets(settings: Settings, topic: str, timeout: float = 5.0) -> dict[int, int] | None:
    """The high watermark of every partition of ``topic`` now (see :class:`EndOffsets`)."""
    return EndOffsets(settings, topic, timeout).read()
