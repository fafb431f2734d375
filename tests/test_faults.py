"""Faults and hostile input against the live system: poison records never stop the flow, Redis
outages are waited out, a lost view heals itself. Every scenario ends compared with the truth
the test computes itself, ``jobpulse verify`` and a from-scratch recount."""

from __future__ import annotations

import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer
from conftest import CliRunner, PrivateRedis, one_error_line
from test_scaling import Feed, assert_exact, start_live, stop, wait_for_records

from jobpulse.dataflows.dlq import REASON, TRUNCATED, header_map
from jobpulse.offer import MAX_ID_BYTES, Reason
from jobpulse.settings import Settings
from jobpulse.store import Store, totals
from jobpulse.topic_reader import read_to_end

pytestmark = pytest.mark.integration


# -- poison records ---------------------------------------------------------------------------


@pytest.mark.partitions(2)
def test_records_too_large_to_copy_go_to_the_dlq_and_counting_goes_on(
    settings: Settings, cli: CliRunner
) -> None:
    """At the real producer limit: a ~1 MB record (its DLQ copy would be too large), a 500 KB
    record whose reason would echo its value, a valid offer with a 500 KB id."""
    producer = Producer(settings.kafka_client_config())  # librdkafka's defaults: 1 MB at most
    huge = _largest_accepted(producer, settings.offers_topic)
    echoed = orjson.dumps({"id": "echo", "op": "y" * 500_000})
    long_id = "i" * 500_000
    for key, value in [(b"echo", echoed), (None, orjson.dumps({"id": long_id}))]:
        producer.produce(settings.offers_topic, value, key, partition=0)
    assert producer.flush(30) == 0
    feed = Feed(settings, seed=11)
    feed.open_offers("after", 50)

    for attempt in range(2):  # and again: a restart never meets the poison again
        result = cli(settings, "run", "--once")
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr, attempt

    dlq = {(m.partition(), m.offset()): m for m in read_to_end(settings, settings.dlq_topic)}
    assert len(dlq) == 3
    by_reason = {header_map(m.headers())[REASON].decode(): m for m in dlq.values()}
    assert set(by_reason) == {Reason.NOT_JSON, Reason.UNKNOWN_OP, Reason.TOO_LONG}
    # The 1 MB record is a bounded stand-in that says what was cut and where the original is.
    stand_in = by_reason[Reason.NOT_JSON]
    headers = header_map(stand_in.headers())
    assert f"value {len(huge)} bytes".encode() in headers[TRUNCATED]
    assert len(stand_in.value()) < 100_000 and stand_in.value() == huge[: len(stand_in.value())]
    # The echoing reason is cut; the record itself is copied whole.
    echo = by_reason[Reason.UNKNOWN_OP]
    assert echo.value() == echoed and TRUNCATED not in header_map(echo.headers())
    assert len(header_map(echo.headers())["__connect.errors.exception.message"]) <= 1000
    assert (
        f"at most {MAX_ID_BYTES}".encode()
        in header_map(by_reason[Reason.TOO_LONG].headers())["__connect.errors.exception.message"]
    )
    progress = totals(Store.connect(settings).partitions().values())
    assert (progress.records, progress.dlq) == (53, 3)
    assert_exact(settings, cli, feed)


def _largest_accepted(producer: Producer, topic: str) -> bytes:
    """Produce the largest value (not JSON) the producer accepts, to partition 0."""
    from confluent_kafka import KafkaException

    for size in range(1_000_000, 990_000, -50):
        value = b"x" * size
        try:
            producer.produce(topic, value, b"huge", partition=0)
        except KafkaException:
            continue
        assert producer.flush(30) == 0
        return value
    raise AssertionError("no record near 1 MB was accepted")


# -- Redis outages ----------------------------------------------------------------------------


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.mark.partitions(3)
def test_a_redis_outage_is_waited_out_and_the_view_heals(
    settings: Settings, cli: CliRunner, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    """Redis stopped for 3 s under a live run (and back empty: no persistence): the run goes
    on, says so once each way, rewrites its whole view, and ends exact."""
    settings = settings.with_overrides(redis_url=private_redis.url, view_refresh_seconds=1)
    feed = Feed(settings, seed=12)
    log_path = tmp_path / "run.log"
    with open(log_path, "w") as log:
        live = start_live(settings, log, "--snapshot-interval", "1")
        try:
            feed.open_offers("r", 200)
            wait_for_records(settings, feed.sent, live)
            private_redis.stop()
            for _ in range(300):  # offers keep coming during the outage
                feed.send(feed.random_op(ids=250))
            feed.flush()
            time.sleep(3)
            assert live.poll() is None, log_path.read_text()
            private_redis.start()
            healed = time.monotonic()
            wait_for_records(settings, feed.sent, live)
            deadline = time.monotonic() + 15
            while Store.connect(settings).cells() != feed.counts():
                assert time.monotonic() < deadline, "the view did not heal"
                time.sleep(0.2)
            print(f"\nview healed {time.monotonic() - healed:.1f} s after Redis came back")
            assert stop(live) == 0, log_path.read_text()
        finally:
            if live.poll() is None:
                live.kill()
    output = log_path.read_text()
    assert output.count("unreachable (") == 1, output
    assert output.count("reachable again after") == 1, output
    assert "Traceback" not in output and "panicked" not in output
    assert_exact(settings, cli, feed)


@pytest.mark.partitions(2)
def test_an_outage_longer_than_the_limit_stops_with_one_line(
    settings: Settings, cli: CliRunner, private_redis: PrivateRedis
) -> None:
    settings = settings.with_overrides(redis_url=private_redis.url, outage_limit_seconds=2)
    feed = Feed(settings, seed=13)
    live = start_live(settings, subprocess.PIPE)  # type: ignore[arg-type]
    try:
        feed.open_offers("l", 20)
        wait_for_records(settings, feed.sent, live)
        private_redis.stop()
        feed.send(feed.upsert("during-the-outage"))
        feed.flush()
        _, stderr = live.communicate(timeout=60)
    finally:
        if live.poll() is None:
            live.kill()
    assert live.returncode == 1
    line = one_error_line(subprocess.CompletedProcess([], 1, "", stderr))
    assert "unreachable for more than 2 s" in line and "JOBPULSE_OUTAGE_LIMIT_SECONDS" in line
    assert "panicked" not in stderr and "Traceback" not in stderr, stderr


@pytest.mark.partitions(2)
def test_redis_keys_deleted_under_a_live_run_come_back(
    settings: Settings, cli: CliRunner, tmp_path: Path
) -> None:
    settings = settings.with_overrides(view_refresh_seconds=1)
    feed = Feed(settings, seed=14)
    store = Store.connect(settings)
    with open(tmp_path / "run.log", "w") as log:
        live = start_live(settings, log)
        try:
            for _ in range(400):
                feed.send(feed.random_op(ids=200))
            feed.flush()
            wait_for_records(settings, feed.sent, live)
            assert store.cells() == feed.counts()
            lost = [k for k in store.client.scan_iter(match=store.keys.pattern)]
            store.client.delete(*lost)
            deleted = time.monotonic()
            while store.cells() != feed.counts() or not store.partitions():
                assert time.monotonic() - deleted < 15, "the view did not come back"
                time.sleep(0.1)
            print(f"\nview back {time.monotonic() - deleted:.1f} s after its keys were deleted")
            assert stop(live) == 0
        finally:
            if live.poll() is None:
                live.kill()
    assert_exact(settings, cli, feed)


# -- drills that hold: kept as regression tests -------------------------------------------------


def _bad_records(rng: random.Random, count: int) -> list[tuple[bytes | None, bytes | None]]:
    """``count`` records that break the offer contract in every way a fuzzer found."""
    makers = [
        lambda: (None, bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64))) + b"\xff"),
        lambda: (None, orjson.dumps(rng.choice([[1, 2], 3, "offer", None, True]))),
        lambda: (None, orjson.dumps({"id": rng.choice([7, 1.5, [], {}, True])})),
        lambda: (None, orjson.dumps({"id": ""})),
        lambda: (None, orjson.dumps({"id": "f", "op": rng.choice(["close", 1, None, "DELETE"])})),
        lambda: (None, b'{"id": "f", "latitude": NaN, "longitude": 1}'),
        lambda: (None, b'{"id": "f", "latitude": Infinity, "longitude": 1}'),
        lambda: (None, orjson.dumps({"id": "f", "latitude": "48.8", "longitude": 2.3})),
        lambda: (None, orjson.dumps({"id": "f", "latitude": 91.0, "longitude": 2.3})),
        lambda: (None, orjson.dumps({"id": "f", "latitude": 48.8})),
        lambda: (None, b"[" * 2000 + b"]" * 2000),  # deeper than any parser allows
        lambda: (None, orjson.dumps({"id": "f", "category": {"nested": [1, {"x": None}]}})),
        lambda: (None, orjson.dumps({"id": "f", "published_at": "yesterday"})),
        lambda: (b"not-the-id", orjson.dumps({"id": "f", "category": "Tech"})),
        lambda: (b"tombstone", None),
    ]
    return [rng.choice(makers)() for _ in range(count)]


@pytest.mark.partitions(4)
def test_fuzzed_input_every_bad_record_in_the_dlq_exactly_once(
    settings: Settings, cli: CliRunner
) -> None:
    """2 000 bad records among 600 valid ones (unicode and NUL ids included): each bad one
    in the DLQ exactly once, by source partition/offset, and the counts exact."""
    rng = random.Random(15)
    feed = Feed(settings, seed=16)
    bad = _bad_records(rng, 2000)
    bad_at: set[tuple[bytes, bytes]] = set()
    odd_ids = ["é-ünï-😀", "nul\x00id", "tab\tid", "x" * 64]

    def note(error: object, message: object) -> None:
        assert error is None
        bad_at.add((str(message.partition()).encode(), str(message.offset()).encode()))  # type: ignore[attr-defined]

    for i, (key, value) in enumerate(bad):
        feed.producer.produce(settings.offers_topic, value, key, on_delivery=note)
        if i % 4 == 0:
            offer_id = f"{rng.choice(odd_ids)}-{rng.randrange(150)}"
            feed.send(feed.upsert(offer_id) if rng.random() < 0.8 else feed.delete(offer_id))
    feed.flush()
    assert len(bad_at) == 2000
    result = cli(settings, "run", "--once", "--workers", "2")
    assert result.returncode == 0, result.stderr
    dlq = [header_map(m.headers()) for m in read_to_end(settings, settings.dlq_topic)]
    copies = [(h["__connect.errors.partition"], h["__connect.errors.offset"]) for h in dlq]
    assert len(copies) == len(set(copies)) == 2000
    assert set(copies) == bad_at
    assert totals(Store.connect(settings).partitions().values()).dlq == 2000
    assert_exact(settings, cli, feed)


@pytest.mark.partitions(6)
def test_kill_9_five_times_under_a_live_producer_stays_exact(
    settings: Settings, cli: CliRunner, tmp_path: Path
) -> None:
    from test_scaling import Producing

    feed = Feed(settings, seed=17)
    producer = Producing(feed, rate=1000, ids=3000)
    producer.start()
    rng = random.Random(18)
    try:
        with open(tmp_path / "run.log", "w") as log:
            for _ in range(5):
                live = start_live(settings, log, "--snapshot-interval", "0.5")
                time.sleep(rng.uniform(2.5, 4.0))
                assert live.poll() is None
                live.kill()
                live.wait()
            producer.stop()
            live = start_live(settings, log)
            try:
                wait_for_records(settings, feed.sent, live)
                assert stop(live) == 0
            finally:
                if live.poll() is None:
                    live.kill()
    finally:
        producer.stop()
    assert_exact(settings, cli, feed)


@pytest.mark.partitions(3)
def test_a_broker_restart_is_waited_out_quietly(
    stack: Settings, settings: Settings, cli: CliRunner, tmp_path: Path
) -> None:
    """The broker stopped for ~5 s mid-stream (by pid) and started again: the run survives
    and logs the outage in a few lines (not one per refused connection); exact after."""
    from jobpulse.stack import lifecycle

    feed = Feed(settings, seed=19)
    log_path = tmp_path / "run.log"
    with open(log_path, "w") as log:
        live = start_live(settings, log)
        try:
            feed.open_offers("b", 300)
            wait_for_records(settings, feed.sent, live)
            stopped = lifecycle.down(stack, only=["kafka"])
            if stopped[0].state != lifecycle.STOPPED:
                pytest.skip(f"Kafka at {stopped[0].address} is not run by this state dir")
            for _ in range(300):  # sent while the broker is down: librdkafka holds them
                feed.send(feed.random_op(ids=400))
            time.sleep(5)
            assert live.poll() is None, log_path.read_text()
            lifecycle.up(stack)
            feed.flush()
            wait_for_records(settings, feed.sent, live, timeout=120)
            assert stop(live) == 0, log_path.read_text()
        finally:
            if live.poll() is None:
                live.kill()
            lifecycle.up(stack)
    output = log_path.read_text()
    assert "Traceback" not in output and "panicked" not in output
    assert output.count("Connection refused") <= 2, output  # not one line per retry
    assert len(output.splitlines()) < 20, output
    assert_exact(settings, cli, feed)
