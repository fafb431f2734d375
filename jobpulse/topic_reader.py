"""Read a whole Kafka topic, from each partition's start to its end as it was when asked.

Used by ``jobpulse verify`` (the deltas topic) and by the tests that check what landed on
a topic. Not for live consumption: the dataflow has its own source.
"""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from jobpulse import kafka
from jobpulse.errors import JobpulseError, ServiceUnavailable
from jobpulse.settings import Settings


def read_to_end(settings: Settings, topic: str, *, stall_s: float = 30.0) -> list[Message]:
    """Every record of ``topic`` up to the high watermarks taken at the start, in partition
    order per partition. Raises :class:`ServiceUnavailable` if Kafka is unreachable or the
    reading stalls for ``stall_s``, :class:`JobpulseError` if the topic does not exist."""
    errors: list[KafkaError] = []
    consumer = kafka.consumer(
        settings,
        required={"group.id": "jobpulse-reader", "enable.auto.commit": False},
        error_cb=errors.append,
    )
    try:
        remaining = _assign_to_start(consumer, settings, topic, errors)
        records: list[Message] = []
        last_progress = time.monotonic()
        while remaining:
            messages = consumer.consume(10_000, 0.5)
            if not messages and time.monotonic() - last_progress > stall_s:
                last_error = f" (last error: {errors[-1].str()})" if errors else ""
                raise ServiceUnavailable(
                    f"reading {topic} stalled for {stall_s:.0f}s with "
                    f"{len(remaining)} partition(s) not read to the end{last_error}"
                )
            for message in messages:
                end = remaining.get(message.partition())
                if message.error() is not None or end is None or message.offset() >= end:
                    continue
                last_progress = time.monotonic()
                records.append(message)
                if message.offset() + 1 >= end:
                    del remaining[message.partition()]
        return records
    finally:
        consumer.close()


def _assign_to_start(
    consumer: Consumer, settings: Settings, topic: str, errors: list[KafkaError]
) -> dict[int, int]:
    """Assign every non-empty partition from its low watermark; return partition → end."""
    try:
        metadata = consumer.list_topics(topic, timeout=5)
    except KafkaException as exc:
        raise ServiceUnavailable(
            f"Kafka at {settings.kafka_display} is not reachable ({kafka.error_text(exc)})"
        ) from None
    info = metadata.topics.get(topic)
    if info is None or info.error is not None:
        raise JobpulseError(f"topic {topic} does not exist")
    ends: dict[int, int] = {}
    assignment = []
    for partition in sorted(info.partitions):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        if high > low:
            ends[partition] = high
            assignment.append(TopicPartition(topic, partition, low))
    consumer.assign(assignment)
    return ends
