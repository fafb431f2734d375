"""The compact state's run files in a real run: ``kill -9`` while snapshots write them, twice,
across a rescale (2 processes → 2 workers → 1), still resumes exactly."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer
from conftest import CliRunner, recounted
from scenario import Step, expected
from test_run_integration import start_run, synthetic_steps

from jobpulse.dataflows.compact_state import STATE_DIR
from jobpulse.settings import Settings
from jobpulse.store import Store, totals

pytestmark = pytest.mark.integration


def produce(settings: Settings, steps: list[Step]) -> None:
    """Every step to the offers topic, waiting for room when the client's queue is full."""
    producer = Producer(settings.kafka_client_config(**{"linger.ms": 5}))
    for step in steps:
        while True:
            try:
                producer.produce(settings.offers_topic, step.value, step.key)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(60) == 0


def _kill_when(settings: Settings, process_args: tuple[str, ...], records: int) -> int:
    """Start ``run --once`` with frequent snapshots; ``kill -9`` it once ``records`` were
    counted (the 256 shards snapshot every 0.2 s, so the kill lands in or near a snapshot);
    return the records counted at the kill."""
    store = Store.connect(settings)
    process = start_run(settings, "--once", "--snapshot-interval", "0.2", *process_args)
    deadline = time.monotonic() + 120
    while totals(store.partitions().values()).records < records:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, "the dataflow made no progress"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return totals(store.partitions().values()).records


@pytest.mark.partitions(4)
def test_kill_9_during_snapshots_of_run_files_resumes_exactly(
    settings: Settings, cli: CliRunner, tmp_path: Path
) -> None:
    count = 150_000  # ~400 entries per shard: every shard writes run files
    steps = synthetic_steps(count, seed=23)
    want = expected(steps)
    produce(settings, steps)
    recovery = tmp_path / "recovery"
    where = ("--recovery-dir", str(recovery))
    rng = random.Random()
    first = _kill_when(settings, ("--processes", "2", *where), int(count * rng.uniform(0.2, 0.4)))
    assert first < count, "the dataflow finished before the kill: nothing was tested"
    second = _kill_when(settings, ("--workers", "2", *where), int(count * rng.uniform(0.6, 0.8)))
    assert second < count, "the dataflow finished before the second kill"
    assert len(list((recovery / STATE_DIR).glob("shard-*/run-*.bin"))) > 100

    resumed = cli(settings, "run", "--once", *where, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    store = Store.connect(settings)
    assert store.cells() == want.counts
    progress = totals(store.partitions().values())
    assert progress.records == count
    assert progress.unknown_deletes == want.unknown_deletes
    with recounted(settings, cli) as recount:
        assert recount.cells() == store.cells()
