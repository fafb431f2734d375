"""The offers source against a real broker: one consumer per worker, each partition's own
records in offset order, a bounded hold, and the connected consumer made ahead of time."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer

from jobpulse.dataflows import kafka_io
from jobpulse.dataflows.items import RawChunk
from jobpulse.dataflows.kafka_io import OffersSource
from jobpulse.settings import Settings

pytestmark = pytest.mark.integration

PARTITIONS = 4
PER_PARTITION = 300


def produce_marked(settings: Settings) -> dict[int, int]:
    """``PER_PARTITION`` records into each partition, keyed ``p<partition>-<n>``; returns each
    partition's end offset."""
    producer = Producer(settings.kafka_client_config(**{"linger.ms": 5}))
    for partition in range(PARTITIONS):
        for n in range(PER_PARTITION):
            producer.produce(
                settings.offers_topic, b"{}", f"p{partition}-{n}".encode(), partition=partition
            )
    assert producer.flush(30) == 0
    return dict.fromkeys(range(PARTITIONS), PER_PARTITION)


@pytest.fixture
def consumers_made(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Consumer]]:
    """Every offers consumer the source makes, in order."""
    made: list[Consumer] = []
    original = kafka_io.offers_consumer

    def counting(settings: Settings, *, stop_at_end: bool) -> Consumer:
        consumer = original(settings, stop_at_end=stop_at_end)
        made.append(consumer)
        return consumer

    monkeypatch.setattr(kafka_io, "offers_consumer", counting)
    yield made


def read_all(parts: dict[int, kafka_io._OffersPartition]) -> dict[int, list[RawChunk]]:
    """Poll every partition, as a Bytewax worker does, until each has ended."""
    chunks: dict[int, list[RawChunk]] = {p: [] for p in parts}
    live = dict(parts)
    for _ in range(2000):
        for partition, part in list(live.items()):
            try:
                chunks[partition] += part.next_batch()
            except StopIteration:
                part.close()
                del live[partition]
        if not live:
            return chunks
        threading.Event().wait(0.005)
    raise AssertionError(f"partitions {sorted(live)} never ended")


@pytest.mark.partitions(PARTITIONS)
def test_one_consumer_reads_every_partition_of_a_worker_each_in_offset_order(
    settings: Settings, consumers_made: list[Consumer]
) -> None:
    ends = produce_marked(settings)
    fetch_records = 7
    source = OffersSource(
        settings, list(range(PARTITIONS)), end_offsets=ends, fetch_records=fetch_records
    )
    resume = {2: (123, 0)}  # partition 2 resumes from its snapshot at offset 123
    parts = {
        p: source.build_part("offers", f"{settings.offers_topic}#{p}", resume.get(p))
        for p in range(PARTITIONS)
    }
    chunks = read_all(parts)

    assert len(consumers_made) == 1  # one consumer for the worker's four partitions
    for partition, got in chunks.items():
        assert all(chunk.partition == partition for chunk in got)
        records = [record for chunk in got for record in chunk.records]
        first = resume.get(partition, (0, 0))[0]
        assert [offset for offset, *_ in records] == list(range(first, PER_PARTITION))
        assert [key for _, _, key, _, _ in records] == [
            f"p{partition}-{n}".encode() for n in range(first, PER_PARTITION)
        ]
        # At most one fetch's worth is held and handed out at a time.
        assert max(len(chunk.records) for chunk in got) <= fetch_records
        assert parts[partition].snapshot()[0] == PER_PARTITION


@pytest.mark.partitions(PARTITIONS)
def test_a_consumer_made_ahead_is_used_and_each_worker_thread_gets_its_own(
    settings: Settings, consumers_made: list[Consumer]
) -> None:
    ends = produce_marked(settings)
    ahead = kafka_io.offers_consumer(settings, stop_at_end=True)
    source = OffersSource(settings, list(range(PARTITIONS)), end_offsets=ends, consumer=ahead)
    results: dict[int, dict[int, list[RawChunk]]] = {}

    def worker(index: int, partitions: list[int]) -> None:
        parts = {
            p: source.build_part("offers", f"{settings.offers_topic}#{p}", None) for p in partitions
        }
        results[index] = read_all(parts)

    threads = [
        threading.Thread(target=worker, args=(0, [0, 1])),
        threading.Thread(target=worker, args=(1, [2, 3])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    # The consumer made ahead, then one more for the second worker thread.
    assert consumers_made[0] is ahead and len(consumers_made) == 2
    for index, partitions in ((0, [0, 1]), (1, [2, 3])):
        for partition in partitions:
            records = [r for chunk in results[index][partition] for r in chunk.records]
            assert [offset for offset, *_ in records] == list(range(PER_PARTITION))
