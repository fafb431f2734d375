"""``jobpulse produce`` against the real Kafka: what lands on the topic, failures, Ctrl-C."""

from __future__ import annotations

import os
import signal
import time
from collections import defaultdict
from itertools import islice
from pathlib import Path

import pytest
from confluent_kafka.admin import NewTopic
from conftest import CliRunner, spawn_cli

from jobpulse import topics
from jobpulse.offer import parse_offer
from jobpulse.producer.csv_import import CsvRow, read_rows
from jobpulse.producer.places import load_places
from jobpulse.producer.synthetic import Lifecycle, SyntheticStream
from jobpulse.settings import Settings
from jobpulse.topic_reader import read_to_end

pytestmark = pytest.mark.integration

AWKWARD_CSV = (
    "profession_id,contract_type,name,office_latitude,office_longitude\n"
    '7,FULL_TIME,"Sales, Retail & ""Luxury"" (H/F)",48.85,2.35\n'
    "3,INTERNSHIP,Stage\tData,45.76,4.83\n"
    '12,APPRENTICESHIP,"Two\nlines",-33.87,151.21\n'
    ",INTERNSHIP,,,\n"
    "x9,FULL_TIME,bad profession,1,1\n"  # line 7 (the quoted row above spans lines 4-5)
    '7,FULL_TIME,"Sales, Retail & ""Luxury"" (H/F)",48.85,2.35\n'
    ",,,,\n"  # line 9: nothing at all, not an offer
)


def consume_all(settings: Settings, topic: str | None = None) -> list[tuple[int, bytes, bytes]]:
    """Every record of ``topic`` (default: the offers topic) as (partition, key, value)."""
    messages = read_to_end(settings, topic or settings.offers_topic)
    return [(m.partition(), m.key(), m.value()) for m in messages]


def write_csv(tmp_path: Path, text: str, name: str = "jobs.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


def expected_rows(path: Path) -> list[CsvRow]:
    with path.open(encoding="utf-8", newline="") as stream:
        return [i for i in read_rows(stream) if isinstance(i, CsvRow)]


def test_csv_import_lands_keyed_records_and_skips_malformed_rows(
    settings: Settings, cli: CliRunner, tmp_path: Path
) -> None:
    path = write_csv(tmp_path, AWKWARD_CSV)
    result = cli(settings, "produce", "--csv", str(path))
    assert result.returncode == 0, result.stderr
    assert "line 7: profession_id is not an integer: 'x9' (skipped)" in result.stderr
    assert "line 9: every field is empty (skipped)" in result.stderr
    assert "7 rows, 5 sent, 2 skipped (malformed), 0 failed" in result.stdout

    records = consume_all(settings)
    expected = {row.offer.key(): row.offer for row in expected_rows(path)}
    assert len(records) == len(expected) == 5
    for _partition, key, value in records:
        offer = parse_offer(key, value)  # the dataflow's validator accepts every record
        assert offer == expected[key]
    names = {parse_offer(k, v).name for _, k, v in records}
    assert {'Sales, Retail & "Luxury" (H/F)', "Stage\tData", "Two\nlines", None} == names


def test_reimport_sends_the_same_ids_again(
    settings: Settings, cli: CliRunner, tmp_path: Path
) -> None:
    path = write_csv(tmp_path, AWKWARD_CSV)
    for _ in range(2):
        assert cli(settings, "produce", "--csv", str(path)).returncode == 0
    by_key: dict[bytes, list[tuple[int, bytes]]] = defaultdict(list)
    for partition, key, value in consume_all(settings):
        by_key[key].append((partition, value))
    assert len(by_key) == 5
    # Each id twice, identical value, same partition: the dataflow sees an unchanged re-send.
    assert all(len(v) == 2 and v[0] == v[1] for v in by_key.values())


def test_strict_aborts_before_sending_anything(
    settings: Settings, cli: CliRunner, tmp_path: Path
) -> None:
    path = write_csv(tmp_path, AWKWARD_CSV)
    result = cli(settings, "produce", "--csv", str(path), "--strict")
    assert result.returncode != 0
    assert "line 7:" in result.stderr and "nothing sent (--strict)" in result.stderr
    assert "(skipped)" not in result.stderr  # with --strict nothing is skipped: all is refused
    assert "Traceback" not in result.stderr
    assert consume_all(settings) == []


def test_id_column(settings: Settings, cli: CliRunner, tmp_path: Path) -> None:
    path = write_csv(tmp_path, "job_id,profession_id,name\nJ1,3,Dev\nJ2,,Ops\n")
    result = cli(settings, "produce", "--csv", str(path), "--id-column", "job_id")
    assert result.returncode == 0, result.stderr
    assert sorted(k for _, k, _ in consume_all(settings)) == [b"J1", b"J2"]


def test_synthetic_stream_through_kafka_is_the_seeded_stream_in_key_order(
    settings: Settings, cli: CliRunner
) -> None:
    args = ["--resend-share", "0.1", "--move-share", "0.1", "--close-share", "0.3"]
    result = cli(settings, "produce", "--synthetic", "--count", "3000", "--seed", "99", *args)
    assert result.returncode == 0, result.stderr
    assert "3000 sent" in result.stdout and "0 failed" in result.stdout

    generated = SyntheticStream(load_places(), seed=99, lifecycle=Lifecycle(0.1, 0.1, 0.3))
    expected: dict[bytes, list[bytes]] = defaultdict(list)
    for record in islice(generated, 3000):
        expected[record.offer.key()].append(record.offer.to_json())
    received: dict[bytes, list[bytes]] = defaultdict(list)
    partitions_of: dict[bytes, set[int]] = defaultdict(set)
    for partition, key, value in consume_all(settings):
        received[key].append(value)
        partitions_of[key].add(partition)
    # Same records, and each offer's records in generation order on a single partition.
    assert received == expected
    assert all(len(p) == 1 for p in partitions_of.values())


def test_delivery_failures_are_counted_and_exit_non_zero(
    settings: Settings, cli: CliRunner, tmp_path: Path
) -> None:
    """Records larger than the topic's max.message.bytes are rejected by the broker."""
    small = settings.with_overrides(offers_topic=f"{settings.offers_topic}-small")
    admin = topics.admin_client(small)
    futures = admin.create_topics(
        [NewTopic(small.offers_topic, 3, 1, config={"max.message.bytes": "200"})]
    )
    futures[small.offers_topic].result(timeout=30)
    try:
        rows = "".join(f"{i},{os.urandom(600).hex()}\n" for i in range(4))
        path = write_csv(tmp_path, "profession_id,name\n" + rows)
        result = cli(small, "produce", "--csv", str(path))
        assert result.returncode == 1
        assert "4 of 4 records failed: Broker: Message size too large" in result.stderr
        assert "0 sent" in result.stdout and "4 failed" in result.stdout
        assert "Traceback" not in result.stderr
    finally:
        topics.delete_topics(small, [small.offers_topic])


def test_unreachable_kafka_and_missing_topic_fail_clearly(
    settings: Settings, cli: CliRunner, tmp_path: Path
) -> None:
    path = write_csv(tmp_path, AWKWARD_CSV)
    nowhere = settings.with_overrides(kafka_bootstrap="127.0.0.1:1")
    result = cli(nowhere, "produce", "--csv", str(path), timeout=60)
    assert result.returncode != 0
    assert "Kafka at 127.0.0.1:1 is not reachable" in result.stderr
    assert "Traceback" not in result.stderr

    missing = settings.with_overrides(offers_topic=f"{settings.offers_topic}-missing")
    result = cli(missing, "produce", "--synthetic", "--count", "5")
    assert result.returncode != 0
    assert f"topic '{missing.offers_topic}' does not exist" in result.stderr
    assert "jobpulse topics create" in result.stderr
    assert "Traceback" not in result.stderr
    # ... and it was not auto-created as a side effect.
    assert missing.offers_topic not in topics.topic_partitions(settings, [missing.offers_topic])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give exactly one source"),
        (["--synthetic", "--csv", "x.csv"], "give exactly one source"),
        (["--csv", "x.csv", "--count", "3"], "--count only apply to --synthetic"),
        (["--synthetic", "--strict"], "only apply to --csv"),
        (["--synthetic", "--count", "3", "--duration", "2"], "not both"),
        (["--synthetic", "--close-share", "0.9", "--move-share", "0.2"], "must not exceed 1"),
        (["--csv", "does-not-exist.csv"], "cannot read does-not-exist.csv"),
        (["--synthetic", "--rate", "0"], "--rate"),
    ],
)
def test_bad_arguments(settings: Settings, cli: CliRunner, args: list[str], message: str) -> None:
    result = cli(settings, "produce", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_ctrl_c_flushes_and_prints_the_summary(settings: Settings) -> None:
    """SIGINT mid-stream: everything handed to the producer is on the topic, summary printed."""
    process = spawn_cli(settings, "produce", "--synthetic", "--rate", "500", "--seed", "1")
    try:
        time.sleep(4.0)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert "stopped (Ctrl-C or SIGTERM)" in stdout and "0 failed" in stdout
    sent = int(stdout.split(" sent")[0].rsplit(" ", 1)[1])
    assert sent > 0
    assert len(consume_all(settings)) == sent


@pytest.mark.parametrize("delay_s", [1.2, 1.55, 1.9, 2.25, 2.6])
def test_ctrl_c_while_waiting_for_the_next_paced_record_stops_cleanly(
    settings: Settings, delay_s: float
) -> None:
    """At low rates the producer spends its time inside librdkafka's poll: a Ctrl-C landing
    there must still be a clean stop (it once surfaced as a SystemError and exit 1)."""
    process = spawn_cli(settings, "produce", "--synthetic", "--rate", "20")
    try:
        time.sleep(delay_s)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "stopped (Ctrl-C or SIGTERM)" in stdout and "0 failed" in stdout
