"""Scaling out stays exact: keyless records, mixed partitioners, a grown offers topic, stale
records across partitions, and a live 1 → 4 → 2 process rescale.

Each scenario's truth is computed here, independently of the dataflow: the test sends every
record with a timestamp it chooses (strictly increasing, unless it sends a deliberately stale
one) and keeps, per offer, the operation with the newest timestamp — the ordering rule
``dataflows/open_offers.py`` documents. Every scenario is also compared with a from-scratch
recount and ``jobpulse verify``.
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import IO, NamedTuple

import orjson
import pytest
from confluent_kafka import KafkaError, Message, Producer
from conftest import CliRunner, recounted, spawn_cli
from scenario import CAIRO, NEW_YORK, PARIS, SAO_PAULO, SYDNEY, TOKYO

from jobpulse.delta import Cell
from jobpulse.settings import Settings
from jobpulse.store import Store, totals

pytestmark = pytest.mark.integration

PLACES = [PARIS, TOKYO, SYDNEY, CAIRO, SAO_PAULO, NEW_YORK]
CATEGORIES = ["Tech", "Retail", "Business"]


class Op(NamedTuple):
    """One record to send and what it means: the offer's cell, or None for a delete."""

    offer_id: str
    value: bytes
    cell: Cell | None


class Feed:
    """Sends offer operations and keeps the truth they imply (see the module doc)."""

    def __init__(self, settings: Settings, seed: int, **producer_config: object) -> None:
        self.topic = settings.offers_topic
        self.rng = random.Random(seed)
        # Metadata refreshed every second: the producer sees a grown topic's new partitions.
        self.config = settings.kafka_client_config(
            **{
                "enable.idempotence": True,
                "linger.ms": 2,
                "topic.metadata.refresh.interval.ms": 1000,
                **producer_config,
            }
        )
        self.producer = Producer(self.config)
        self.last_ms = 0
        self.sent = 0
        self.failures: list[str] = []
        #: offer id → (timestamp, cell or None) of its newest operation.
        self.latest: dict[str, tuple[int, Cell | None]] = {}
        #: offer id → the partitions its records landed on.
        self.partitions: dict[str, set[int]] = defaultdict(set)
        self.lock = threading.Lock()

    def upsert(self, offer_id: str) -> Op:
        lat, lon, continent = self.rng.choice(PLACES)
        category = self.rng.choice(CATEGORIES)
        body = {"id": offer_id, "category": category, "latitude": lat, "longitude": lon}
        return Op(offer_id, orjson.dumps(body), Cell(category, continent))

    @staticmethod
    def delete(offer_id: str) -> Op:
        return Op(offer_id, orjson.dumps({"id": offer_id, "op": "delete"}), None)

    def random_op(self, ids: int) -> Op:
        """A new offer, a re-send, a move or a delete (also of unknown offers) over ``ids``."""
        offer_id = f"o-{self.rng.randrange(ids)}"
        if self.rng.random() < 0.25:
            return self.delete(offer_id)
        known = self.latest.get(offer_id)
        if known is not None and known[1] is not None and self.rng.random() < 0.5:
            # An identical re-send (same cell, same body shape).
            cell = known[1]
            place = next(p for p in PLACES if p[2] == cell.continent)
            body = {"id": offer_id, "category": cell.category, "latitude": place[0]}
            body["longitude"] = place[1]
            return Op(offer_id, orjson.dumps(body), cell)
        return self.upsert(offer_id)

    def send(
        self,
        op: Op,
        *,
        keyed: bool = True,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> int:
        """Send ``op``; by default at a timestamp newer than every earlier one (by ≥ 2 ms, so
        ``timestamp - 1`` is free for a deliberately stale record). Returns the timestamp."""
        with self.lock:
            if timestamp is None:
                timestamp = max(int(time.time() * 1000), self.last_ms + 2)
                self.last_ms = timestamp
            newest = self.latest.get(op.offer_id)
            if newest is None or timestamp > newest[0]:
                self.latest[op.offer_id] = (timestamp, op.cell)
            extra = {} if partition is None else {"partition": partition}
            self.producer.produce(
                self.topic,
                op.value,
                op.offer_id.encode() if keyed else None,
                timestamp=timestamp,
                on_delivery=self._delivered,
                **extra,
            )
            self.sent += 1
            self.producer.poll(0)
        return timestamp

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.failures.append(str(error))
        else:
            self.partitions[message.key().decode() if message.key() else ""].add(
                message.partition()
            )

    def flush(self) -> None:
        assert self.producer.flush(30) == 0
        assert self.failures == []

    def open_offers(self, prefix: str, count: int) -> None:
        """Send ``count`` new offers ``<prefix>-0`` … and wait until they are delivered."""
        for n in range(count):
            self.send(self.upsert(f"{prefix}-{n}"))
        self.flush()

    def renew(self) -> None:
        """A new producer (after the topic grew: it knows every partition at once)."""
        with self.lock:
            self.flush()
            self.producer = Producer(self.config)

    def counts(self) -> dict[Cell, int]:
        """Open offers per cell, from the truth."""
        counts: dict[Cell, int] = defaultdict(int)
        for _, cell in self.latest.values():
            if cell is not None:
                counts[cell] += 1
        return dict(counts)


def records_done(settings: Settings) -> int:
    return totals(Store.connect(settings).partitions().values()).records


def wait_for_records(
    settings: Settings, count: int, process: subprocess.Popen[str] | None, timeout: float = 90
) -> None:
    deadline = time.monotonic() + timeout
    while records_done(settings) < count:
        if process is not None:
            assert process.poll() is None, f"the run exited with {process.returncode}"
        assert time.monotonic() < deadline, f"processed {records_done(settings)} of {count}"
        time.sleep(0.1)


def assert_exact(settings: Settings, cli: CliRunner, feed: Feed) -> None:
    """Redis equals the test's truth, ``verify`` passes, and a from-scratch recount agrees."""
    store = Store.connect(settings)
    assert store.cells() == feed.counts()
    verified = cli(settings, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    with recounted(settings, cli, "--workers", "2") as recount:
        assert recount.cells() == feed.counts()


def start_live(settings: Settings, log: IO[str], *args: str) -> subprocess.Popen[str]:
    return spawn_cli(settings, "run", *args, stdout=subprocess.DEVNULL, stderr=log)


def stop(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()


# -- keyless records and mixed partitioners ---------------------------------------------------


@pytest.mark.partitions(4)
def test_the_same_offers_sent_keyless_in_two_passes_are_counted_once(
    settings: Settings, cli: CliRunner
) -> None:
    feed = Feed(settings, seed=1)
    ids = [f"k-{n}" for n in range(200)]
    first = [feed.upsert(offer_id) for offer_id in ids]
    for i, op in enumerate(first):
        feed.send(op, keyed=False, partition=i % 4)
    # Second pass, each on another partition: identical re-sends, every 4th one moved.
    for i, op in enumerate(first):
        again = feed.upsert(op.offer_id) if i % 4 == 0 else op
        feed.send(again, keyed=False, partition=(i + 1) % 4)
    # The first pass's records, keyless and re-sent later, are stale for nobody: nothing
    # else happened. Now close a quarter of them from yet another partition.
    for i, op in enumerate(first[::4]):
        feed.send(feed.delete(op.offer_id), keyed=False, partition=(i + 2) % 4)
    feed.flush()
    result = cli(settings, "run", "--once", "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert sum(feed.counts().values()) == 150
    assert_exact(settings, cli, feed)


@pytest.mark.partitions(12)
def test_two_producers_with_different_partitioners_stay_exact(
    settings: Settings, cli: CliRunner
) -> None:
    crc32 = Feed(settings, seed=2, partitioner="consistent_random")
    murmur2 = Feed(settings, seed=3, partitioner="murmur2_random")
    truth = Feed(settings, seed=4)  # only its bookkeeping is used: the merged truth
    rng = random.Random(5)
    for _ in range(60):
        feed = rng.choice([crc32, murmur2])
        for _ in range(rng.randint(1, 30)):
            op = truth.random_op(ids=150)
            truth.latest[op.offer_id] = (feed.send(op), op.cell)
        feed.flush()  # the next run comes from the other producer: keep send order
        # (each feed's timestamps are its own; keep them increasing across both)
        crc32.last_ms = murmur2.last_ms = max(crc32.last_ms, murmur2.last_ms)
    moved = [
        offer_id
        for offer_id in crc32.partitions
        if murmur2.partitions.get(offer_id, set()) - crc32.partitions[offer_id]
    ]
    assert len(moved) > 50, "the two partitioners should place most ids differently"
    result = cli(settings, "run", "--once", "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert_exact(settings, cli, truth)


@pytest.mark.partitions(3)
def test_a_stale_upsert_from_another_partition_does_not_reopen_a_closed_offer(
    settings: Settings, cli: CliRunner
) -> None:
    feed = Feed(settings, seed=6)
    opened = feed.upsert("late-1")
    feed.send(opened, partition=0)
    closed_at = feed.send(feed.delete("late-1"), partition=1)
    feed.send(feed.upsert("other"), partition=0)
    feed.flush()
    result = cli(settings, "run", "--once")
    assert result.returncode == 0, result.stderr
    # An older version of the offer, read after the delete from a partition that is behind
    # (a second run, so the delete was certainly applied first: within one run the order in
    # which partitions are read is Kafka's, and an older record read first is not stale).
    feed.send(feed.upsert("late-1"), partition=2, timestamp=closed_at - 1)
    feed.flush()
    assert feed.latest["late-1"][1] is None
    result = cli(settings, "run", "--once")
    assert result.returncode == 0, result.stderr
    assert "1 stale records" in result.stderr
    progress = Store.connect(settings).partitions()
    assert progress[2].stale == 1 and progress[0].stale == progress[1].stale == 0
    assert_exact(settings, cli, feed)


# -- grow the topic, then the cluster ----------------------------------------------------------


@pytest.mark.partitions(12)
def test_growing_the_offers_topic_mid_stream_then_the_cluster_stays_exact(
    settings: Settings, cli: CliRunner, tmp_path: Path
) -> None:
    settings = settings.with_overrides(partition_check_seconds=1)
    feed = Feed(settings, seed=8)
    for n in range(300):
        feed.send(feed.upsert(f"o-{n}"))
    for _ in range(300):
        feed.send(feed.random_op(ids=300))
    feed.flush()
    log_path = tmp_path / "run.log"
    with open(log_path, "w") as log:
        live = start_live(settings, log, "--workers", "2")
        try:
            wait_for_records(settings, feed.sent, live)
            grown = cli(settings, "topics", "grow", "--partitions", "24")
            assert grown.returncode == 0, grown.stderr
            feed.renew()
            # Stale records: a delete on new partition 12, read by the restarted run, then an
            # older version of the same offer on new partition 13.
            closed_at = {n: feed.send(feed.delete(f"o-{n}"), partition=12) for n in range(0, 20, 2)}
            feed.flush()
            wait_for_records(settings, feed.sent, live)
            for n, at in closed_at.items():
                feed.send(feed.upsert(f"o-{n}"), partition=13, timestamp=at - 1)
            feed.flush()
            wait_for_records(settings, feed.sent, live)
            # Then the same ids go on being re-sent, moved and closed, keyed: most land on
            # another partition than before.
            for _ in range(600):
                feed.send(feed.random_op(ids=300))
            feed.flush()
            wait_for_records(settings, feed.sent, live)
            assert Store.connect(settings).cells() == feed.counts()
            assert stop(live) == 0
        finally:
            if live.poll() is None:
                live.kill()
    output = log_path.read_text()
    assert "grew from 12 to 24 partitions" in output and "restarting now" in output, output
    assert "Traceback" not in output
    moved = [i for i, parts in feed.partitions.items() if min(parts) < 12 <= max(parts)]
    assert len(moved) > 100, "keys should re-hash onto the new partitions"
    progress = Store.connect(settings).partitions()
    assert sorted(progress) == list(range(24))
    assert {p: c.stale for p, c in progress.items() if c.stale} == {13: 10}

    # More offers, then the cluster grows to 24 workers on the same recovery store: it
    # resumes (no recount) and stays exact.
    for _ in range(200):
        feed.send(feed.random_op(ids=400))
    feed.flush()
    before = records_done(settings)
    wide = cli(settings, "run", "--once", "--processes", "4", "--workers", "6", timeout=300)
    assert wide.returncode == 0, wide.stderr
    assert "processed 200 records" in wide.stderr
    assert records_done(settings) == before + 200 == feed.sent
    assert_exact(settings, cli, feed)


# -- rescale while offers flow ------------------------------------------------------------


class Producing(threading.Thread):
    """Sends random operations at about ``rate`` per second until stopped."""

    def __init__(self, feed: Feed, rate: float, ids: int) -> None:
        super().__init__(daemon=True)
        self.feed, self.rate, self.ids = feed, rate, ids
        self.done = threading.Event()

    def run(self) -> None:
        started, sent = time.monotonic(), 0
        while not self.done.is_set():
            self.feed.send(self.feed.random_op(self.ids))
            sent += 1
            ahead = sent / self.rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)

    def stop(self) -> None:
        self.done.set()
        self.join(10)
        self.feed.flush()


@pytest.mark.partitions(12)
def test_rescale_1_4_2_processes_while_a_producer_sends(
    settings: Settings, cli: CliRunner, tmp_path: Path
) -> None:
    """Stop/start on one recovery store with 1, then 4 (during which the offers topic grows
    12 → 16 and the local cluster restarts itself), then 2 processes, a producer sending the
    whole time: exact at the end."""
    settings = settings.with_overrides(partition_check_seconds=1)
    feed = Feed(settings, seed=9)
    producer = Producing(feed, rate=400, ids=2000)
    producer.start()
    figures = []
    log_path = tmp_path / "run.log"
    try:
        with open(log_path, "w") as log:
            for processes, seconds in (("1", 6.0), ("4", 10.0), ("2", 6.0)):
                started = time.monotonic()
                live = start_live(
                    settings, log, "--processes", processes, "--snapshot-interval", "1"
                )
                try:
                    before = records_done(settings)
                    time.sleep(seconds / 2)
                    if processes == "4":
                        grown = cli(settings, "topics", "grow", "--partitions", "16")
                        assert grown.returncode == 0, grown.stderr
                    time.sleep(seconds / 2)
                    # Each cluster size really counts something (on a busy machine a cluster
                    # may still be starting, or restarting after the growth).
                    wait_for_records(settings, before + 1, live)
                    if processes == "2":
                        producer.stop()
                        wait_for_records(settings, feed.sent, live)
                    assert live.poll() is None, log_path.read_text()
                    assert stop(live) == 0, log_path.read_text()
                finally:
                    if live.poll() is None:
                        live.kill()
                figures.append((processes, records_done(settings), time.monotonic() - started))
    finally:
        producer.stop()
    output = log_path.read_text()
    assert "grew from 12 to 16 partitions" in output and "restarting now" in output, output
    print(f"\nrescale drill: {feed.sent} records sent; (processes, records done, s): {figures}")
    assert records_done(settings) == feed.sent
    assert_exact(settings, cli, feed)
