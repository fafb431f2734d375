"""``jobpulse verify``: the deltas topic, folded from the beginning, must equal Redis.

Reads every partition of the deltas topic from its start up to the high watermark taken when
the check starts, de-duplicates by ``event_id`` (the sink is at-least-once) and folds the
deltas with :func:`jobpulse.delta.fold`; compares that with the breakdown in Redis.
Meaningful once the dataflow has caught up (e.g. after ``jobpulse run --once``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from jobpulse.delta import Cell, Delta, fold
from jobpulse.errors import JobpulseError, ServiceUnavailable
from jobpulse.settings import Settings
from jobpulse.store import Store


@dataclass(frozen=True)
class Verification:
    expected: dict[Cell, int]
    actual: dict[Cell, int]
    messages: int
    distinct: int

    @property
    def mismatches(self) -> list[tuple[Cell, int, int]]:
        """(cell, from the deltas topic, in Redis) for every cell that differs."""
        cells = sorted(set(self.expected) | set(self.actual))
        return [
            (c, self.expected.get(c, 0), self.actual.get(c, 0))
            for c in cells
            if self.expected.get(c, 0) != self.actual.get(c, 0)
        ]


def read_deltas(settings: Settings, topic: str | None = None, stall_s: float = 30.0) -> list[Delta]:
    """Every delta on ``topic`` (default: the deltas topic) up to its current end."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    topic = topic or settings.deltas_topic
    consumer = Consumer(
        settings.kafka_client_config(
            **{
                "group.id": "jobpulse-verify",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
            }
        )
    )
    try:
        try:
            metadata = consumer.list_topics(topic, timeout=5)
        except KafkaException as exc:
            raise ServiceUnavailable(
                f"Kafka at {settings.kafka_bootstrap} is not reachable ({exc})"
            ) from None
        info = metadata.topics.get(topic)
        if info is None or info.error is not None:
            raise JobpulseError(f"topic {topic} does not exist (nothing to verify)")
        remaining: dict[int, int] = {}
        assignment = []
        for p in sorted(info.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                remaining[p] = high
                assignment.append(TopicPartition(topic, p, low))
        consumer.assign(assignment)
        deltas: list[Delta] = []
        last_progress = time.monotonic()
        while remaining:
            messages = consumer.consume(10_000, 0.5)
            if not messages and time.monotonic() - last_progress > stall_s:
                raise ServiceUnavailable(
                    f"reading {topic} stalled for {stall_s:.0f}s with "
                    f"{len(remaining)} partition(s) not read to the end"
                )
            for message in messages:
                if message.error() is not None:
                    continue
                partition = message.partition()
                end = remaining.get(partition)
                if end is None or message.offset() >= end:
                    continue
                last_progress = time.monotonic()
                try:
                    deltas.append(Delta.from_json(message.value()))
                except (ValueError, KeyError, TypeError) as exc:
                    raise JobpulseError(
                        f"{topic} partition {partition} offset {message.offset()} is not a "
                        f"delta: {exc}"
                    ) from None
                if message.offset() + 1 >= end:
                    del remaining[partition]
        return deltas
    finally:
        consumer.close()


def verify(settings: Settings) -> Verification:
    """Fold the deltas topic and read Redis."""
    store = Store.connect(settings)
    deltas = read_deltas(settings)
    return Verification(
        expected=fold(deltas),
        actual={c: n for c, n in store.cells().items() if n != 0},
        messages=len(deltas),
        distinct=len({d.event_id for d in deltas}),
    )
