"""``jobpulse run`` against the real Kafka and Redis: exact counts, DLQ, verify, workers, crash."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import orjson
import psutil
import pytest
from confluent_kafka import Producer
from conftest import CliRunner, recounted, spawn_cli
from scenario import (
    CAIRO,
    HONOLULU,
    NEW_YORK,
    PARIS,
    SAO_PAULO,
    SYDNEY,
    TOKYO,
    Step,
    expected,
    scenario,
    write_professions,
)

from jobpulse.cli.verify import read_deltas
from jobpulse.dataflows.dlq import OFFSET, PARTITION, REASON, TOPIC, header_map
from jobpulse.dataflows.runner import POLLER_TIMER_SLACK_NS
from jobpulse.delta import Cell, fold
from jobpulse.settings import Settings
from jobpulse.store import Store, totals
from jobpulse.topic_reader import read_to_end

pytestmark = pytest.mark.integration


def produce(settings: Settings, steps: list[Step], flush_s: float = 30) -> None:
    """Every step to the offers topic, waiting for room when the client's queue is full;
    every delivery checked."""
    failures: list[str] = []

    def delivered(error: object, _message: object) -> None:
        if error is not None:
            failures.append(str(error))

    producer = Producer(
        settings.kafka_client_config(**{"enable.idempotence": True, "linger.ms": 5})
    )
    for i, step in enumerate(steps):
        while True:
            try:
                producer.produce(settings.offers_topic, step.value, step.key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(flush_s) == 0
    assert failures == []


def read_topic(settings: Settings, topic: str) -> list[tuple[bytes | None, bytes | None, dict]]:
    """Every record of ``topic`` as (key, value, headers), up to the current end."""
    return [(m.key(), m.value(), header_map(m.headers())) for m in read_to_end(settings, topic)]


def with_professions(settings: Settings, tmp_path: Path) -> Settings:
    return settings.with_overrides(professions=write_professions(tmp_path))


def check_scenario_outcome(settings: Settings, steps: list[Step], cli: CliRunner) -> None:
    want = expected(steps)
    store = Store.connect(settings)
    assert store.cells() == want.counts

    deltas = read_deltas(settings)
    distinct = {d.event_id: d for d in deltas}
    assert fold(deltas) == want.counts
    assert sum(d.action == "increment" for d in distinct.values()) == want.increments
    assert sum(d.action == "decrement" for d in distinct.values()) == want.decrements

    dlq = read_topic(settings, settings.dlq_topic)
    got = sorted((k or b"", v or b"", h[REASON].decode()) for k, v, h in dlq)
    assert got == sorted((s.key or b"", s.value or b"", str(s.expect)) for s in want.rejected)
    assert all(h[TOPIC] == settings.offers_topic.encode() for _, _, h in dlq)
    assert len({(h[PARTITION], h[OFFSET]) for _, _, h in dlq}) == len(want.rejected)

    progress = totals(store.partitions().values())
    assert progress.records == len(steps)
    assert progress.offset == len(steps)
    assert progress.dlq == len(want.rejected)
    assert progress.unknown_deletes == want.unknown_deletes

    verified = cli(settings, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    shown = cli(settings, "breakdown", "--json")
    assert shown.returncode == 0, shown.stderr
    body = orjson.loads(shown.stdout)
    assert body["total"] == sum(want.counts.values())
    assert body["counts"]["Tech"]["Europe"] == want.counts[Cell("Tech", "Europe")]


def test_scenario_once_gives_exact_counts_topic2_dlq_and_verify(
    settings: Settings, cli: CliRunner, tmp_path: Path
) -> None:
    settings = with_professions(settings, tmp_path)
    steps = scenario()
    produce(settings, steps)
    # Left over from an earlier run with another recovery store: a new store only replaces
    # them when asked to (--recount), and then they must not survive.
    Store.connect(settings).write(cells={Cell("Stale", "Atlantis"): 5})
    refused = cli(settings, "run", "--once")
    assert refused.returncode == 2, refused.stderr
    assert "--recount" in refused.stderr
    assert Store.connect(settings).cells() == {Cell("Stale", "Atlantis"): 5}
    result = cli(settings, "run", "--once", "--recount")
    assert result.returncode == 0, result.stderr
    assert "--recount: removed" in result.stderr
    assert "JOBPULSE_PROFESSIONS is not set" not in result.stderr
    assert f"processed {len(steps)} records in " in result.stderr and "/s)" in result.stderr
    check_scenario_outcome(settings, steps, cli)

    # Running again resumes at the end: nothing is read or counted twice.
    again = cli(settings, "run", "--once")
    assert again.returncode == 0, again.stderr
    assert "processed 0 records" in again.stderr
    assert Store.connect(settings).cells() == expected(steps).counts

    table = cli(settings, "breakdown")
    assert table.returncode == 0
    assert "Total" in table.stdout and "Oceania" in table.stdout


@pytest.mark.partitions(4)
def test_two_processes_of_two_workers_give_identical_counts(
    settings: Settings, cli: CliRunner, tmp_path: Path
) -> None:
    settings = with_professions(settings, tmp_path)
    steps = scenario("a") + scenario("b") + scenario("c")
    produce(settings, steps)
    result = cli(settings, "run", "--once", "--processes", "2", "--workers", "2")
    assert result.returncode == 0, result.stderr
    check_scenario_outcome(settings, steps, cli)


def synthetic_steps(count: int, seed: int) -> list[Step]:
    """A seeded stream of upserts, re-sends, moves and deletes over places of known continent."""
    rng = random.Random(seed)
    places = [PARIS, TOKYO, SYDNEY, CAIRO, SAO_PAULO, NEW_YORK, HONOLULU]
    categories = ["Tech", "Retail", "Business", "Créa"]
    open_offers: list[str] = []
    steps: list[Step] = []
    for n in range(count):
        roll = rng.random()
        if open_offers and roll < 0.15:
            offer_id = open_offers.pop(rng.randrange(len(open_offers)))
            steps.append(
                Step(offer_id.encode(), orjson.dumps({"id": offer_id, "op": "delete"}), "delete")
            )
            continue
        if open_offers and roll < 0.35:
            offer_id = rng.choice(open_offers)  # a re-send or a move
        else:
            offer_id = f"x-{n}"
            open_offers.append(offer_id)
        lat, lon, continent = rng.choice(places)
        category = rng.choice(categories)
        body = {"id": offer_id, "category": category, "latitude": lat, "longitude": lon}
        steps.append(Step(offer_id.encode(), orjson.dumps(body), Cell(category, continent)))
    return steps


def start_run(settings: Settings, *args: str) -> subprocess.Popen[str]:
    return spawn_cli(settings, "run", *args, stdout=subprocess.DEVNULL)


def kill_9_once_counted(settings: Settings, records: int, *run_args: str) -> int:
    """Start ``run --once *run_args``; ``kill -9`` it once Redis counts ``records``; return
    the records counted at the kill."""
    store = Store.connect(settings)
    process = start_run(settings, "--once", *run_args)
    deadline = time.monotonic() + 120
    while totals(store.partitions().values()).records < records:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, "the dataflow made no progress"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return totals(store.partitions().values()).records


@pytest.mark.partitions(6)
@pytest.mark.parametrize(
    ("first", "resume"),
    [
        pytest.param((), (), id="1x1"),
        # kill -9 the launcher of a 2×2 cluster (its children die with it), resume as 1×3
        pytest.param(("--processes", "2", "--workers", "2"), ("--workers", "3"), id="2x2-to-1x3"),
    ],
)
def test_kill_9_and_resume_equals_a_from_scratch_recount(
    settings: Settings, cli: CliRunner, first: tuple[str, ...], resume: tuple[str, ...]
) -> None:
    count = 80_000
    steps = synthetic_steps(count, seed=7)
    want = expected(steps)
    produce(settings, steps)
    store = Store.connect(settings)

    rng = random.Random()
    kill_after = int(count * rng.uniform(0.15, 0.6))
    at_kill = kill_9_once_counted(settings, kill_after, "--snapshot-interval", "0.5", *first)
    assert at_kill < count, "the dataflow finished before the kill: nothing was tested"

    resumed = cli(settings, "run", "--once", *resume, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert store.cells() == want.counts
    progress = totals(store.partitions().values())
    assert progress.records == count
    assert progress.unknown_deletes == want.unknown_deletes
    verified = cli(settings, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # A from-scratch recount of the same offers (fresh Redis prefix, recovery store and
    # deltas topic) gives the same Redis content.
    with recounted(settings, cli) as recount:
        assert recount.cells() == store.cells()
        assert recount.windows(last=1000) == store.windows(last=1000)


@pytest.mark.partitions(4)
def test_a_cluster_process_killed_stops_the_run_in_one_line_and_a_resume_is_exact(
    settings: Settings, cli: CliRunner
) -> None:
    """``--processes 2``: kill -9 one forked cluster process mid-run. The launcher stops the
    other and exits 1 with one line naming it (no traceback, no panic, nobody left running);
    the next run resumes from the last snapshot, exact."""
    count = 60_000
    steps = synthetic_steps(count, seed=11)
    want = expected(steps)
    produce(settings, steps)
    store = Store.connect(settings)
    process = spawn_cli(
        settings,
        "run",
        "--once",
        "--processes",
        "2",
        "--snapshot-interval",
        "0.5",
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while totals(store.partitions().values()).records < count // 5:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the dataflow made no progress"
            time.sleep(0.02)
        members = psutil.Process(process.pid).children()
        assert len(members) == 2, members
        members[1].kill()
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1, stderr
    assert "Traceback" not in stderr and "panicked" not in stderr, stderr
    assert "exited with status -9; stopped the others" in stderr, stderr
    assert not members[0].is_running() or members[0].status() == psutil.STATUS_ZOMBIE
    assert totals(store.partitions().values()).records < count, "finished before the kill"

    resumed = cli(settings, "run", "--once", "--processes", "2", timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert store.cells() == want.counts
    assert totals(store.partitions().values()).records == count
    with recounted(settings, cli) as recount:
        assert recount.cells() == store.cells()


@pytest.mark.partitions(4)
@pytest.mark.parametrize("processes", ["1", "2"])
def test_ctrl_c_stops_cleanly_and_the_next_run_resumes_at_the_end(
    settings: Settings, cli: CliRunner, tmp_path: Path, processes: str
) -> None:
    settings = with_professions(settings, tmp_path)
    steps = scenario()
    process = start_run(settings, "--processes", processes)
    try:
        produce(settings, steps)
        store = Store.connect(settings)
        deadline = time.monotonic() + 60
        while totals(store.partitions().values()).records < len(steps):
            assert process.poll() is None
            assert time.monotonic() < deadline, "the running dataflow did not catch up"
            time.sleep(0.05)
        # Each cluster process's calling thread polls Bytewax lazily once the workers run
        # (it is the process's main thread, whose timer slack /proc shows).
        members = psutil.Process(process.pid).children()
        assert len(members) == (2 if processes == "2" else 0)
        for member in members:
            slack = int(Path(f"/proc/{member.pid}/timerslack_ns").read_text())
            assert slack == POLLER_TIMER_SLACK_NS
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr and "panicked" not in stderr
    # One announcement for the whole run, however many processes got the signal.
    assert stderr.count("stopping: finishing the batches") == 1, stderr
    # A live run waits for input: its duration is not a processing rate.
    assert f"processed {len(steps)} records over" in stderr
    assert "including idle time" in stderr and "/s)" not in stderr
    assert store.cells() == expected(steps).counts
    again = cli(settings, "run", "--once")
    assert again.returncode == 0, again.stderr
    assert "processed 0 records" in again.stderr
